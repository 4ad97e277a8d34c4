//! Just enough X.509 reading for the ACME manager: the serial number and the
//! validity window of a leaf certificate. Everything else (signatures, names,
//! key matching) is left to rustls/webpki. Never trusts input: every length is
//! checked, and anything unexpected is an error, not a panic.

use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// What the manager needs to know about a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeafInfo {
    /// Serial number as lowercase hex, without the sign-padding zero byte.
    pub(crate) serial: String,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

/// Reads the PEM chain and returns the DER certificates in order (leaf first).
pub(crate) fn parse_chain_pem(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(chain_pem.as_bytes()) {
        certs.push(cert.map_err(|e| format!("bad PEM in chain: {e}"))?);
    }
    if certs.is_empty() {
        return Err("no certificate in chain".into());
    }
    Ok(certs)
}

/// Serial and validity of a DER certificate.
pub(crate) fn leaf_info(der: &[u8]) -> Result<LeafInfo, String> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    let mut outer = Der::new(der);
    let cert = outer.expect(TAG_SEQUENCE, "Certificate")?;
    let mut cert = Der::new(cert);
    let tbs = cert.expect(TAG_SEQUENCE, "TBSCertificate")?;
    let mut tbs = Der::new(tbs);
    // version [0] EXPLICIT is optional (absent means v1).
    if tbs.peek_tag() == Some(TAG_VERSION) {
        tbs.read()?;
    }
    let serial = tbs.expect(TAG_INTEGER, "serialNumber")?;
    tbs.expect(TAG_SEQUENCE, "signature")?;
    tbs.expect(TAG_SEQUENCE, "issuer")?;
    let validity = tbs.expect(TAG_SEQUENCE, "validity")?;
    let mut validity = Der::new(validity);
    let not_before = read_time(&mut validity, "notBefore")?;
    let not_after = read_time(&mut validity, "notAfter")?;
    Ok(LeafInfo {
        serial: serial_hex(serial),
        not_before,
        not_after,
    })
}

const TAG_INTEGER: u8 = 0x02;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_VERSION: u8 = 0xa0;

fn serial_hex(bytes: &[u8]) -> String {
    let mut bytes = bytes;
    while bytes.len() > 1 && bytes[0] == 0 {
        bytes = &bytes[1..];
    }
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn read_time(der: &mut Der<'_>, what: &str) -> Result<SystemTime, String> {
    let (tag, value) = der.read()?;
    let text = std::str::from_utf8(value).map_err(|_| format!("{what}: not ASCII"))?;
    match tag {
        // YYMMDDHHMMSSZ; RFC 5280: YY >= 50 is 19YY, otherwise 20YY.
        TAG_UTC_TIME if text.len() == 13 => {
            let yy = digits(&text[0..2], what)?;
            let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
            civil_time(year, &text[2..], what)
        }
        // YYYYMMDDHHMMSSZ
        TAG_GENERALIZED_TIME if text.len() == 15 => {
            civil_time(digits(&text[0..4], what)?, &text[4..], what)
        }
        _ => Err(format!("{what}: unsupported time encoding")),
    }
}

/// `rest` is MMDDHHMMSSZ.
fn civil_time(year: u32, rest: &str, what: &str) -> Result<SystemTime, String> {
    if !rest.ends_with('Z') || rest.len() != 11 {
        return Err(format!("{what}: time is not in UTC"));
    }
    let month = digits(&rest[0..2], what)?;
    let day = digits(&rest[2..4], what)?;
    let hour = digits(&rest[4..6], what)?;
    let minute = digits(&rest[6..8], what)?;
    let second = digits(&rest[8..10], what)?;
    let bad = |_| format!("{what}: invalid date");
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(|| format!("{what}: invalid month"))?;
    let year = i32::try_from(year).map_err(|_| format!("{what}: invalid year"))?;
    let date = time::Date::from_calendar_date(year, month, day as u8).map_err(bad)?;
    let clock = time::Time::from_hms(hour as u8, minute as u8, second as u8).map_err(bad)?;
    Ok(SystemTime::from(
        time::PrimitiveDateTime::new(date, clock).assume_utc(),
    ))
}

fn digits(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what}: expected digits"));
    }
    s.parse().map_err(|_| format!("{what}: expected digits"))
}

/// A forward-only DER reader over one level of nesting.
struct Der<'a> {
    buf: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Der { buf }
    }

    fn peek_tag(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        let (got, value) = self.read()?;
        if got != tag {
            return Err(format!("{what}: expected tag {tag:#04x}, found {got:#04x}"));
        }
        Ok(value)
    }

    fn read(&mut self) -> Result<(u8, &'a [u8]), String> {
        let [tag, first, rest @ ..] = self.buf else {
            return Err("truncated DER".into());
        };
        let (len, rest) = if *first < 0x80 {
            (usize::from(*first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err("unsupported DER length".into());
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err("truncated DER".into());
        }
        let (value, remaining) = rest.split_at(len);
        self.buf = remaining;
        Ok((*tag, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn reads_serial_and_validity_from_rcgen_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).expect("params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_704_164_645).expect("ts");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(2_569_738_150).expect("ts");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x8f, 0x01]));
        let cert = params.self_signed(&key).expect("cert");
        let info = leaf_info(cert.der()).expect("parse");
        assert_eq!(info.serial, "8f01");
        assert_eq!(
            info.not_before,
            UNIX_EPOCH + Duration::from_secs(1_704_164_645)
        );
        // 2051 is beyond UTCTime's range: rcgen writes GeneralizedTime.
        assert_eq!(
            info.not_after,
            UNIX_EPOCH + Duration::from_secs(2_569_738_150)
        );
        let chain = parse_chain_pem(&cert.pem()).expect("chain");
        assert_eq!(chain.len(), 1);
    }

    #[test]
    fn refuses_garbage() {
        assert!(leaf_info(&[]).is_err());
        assert!(leaf_info(&[0x30, 0x82, 0xff]).is_err());
        assert!(leaf_info(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        assert!(parse_chain_pem("not pem").is_err());
    }
}
