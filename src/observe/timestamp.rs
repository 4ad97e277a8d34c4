//! RFC 3339 UTC timestamps with milliseconds (`2024-06-23T23:44:16.123Z`),
//! written straight into a buffer: every event carries three of them, so
//! this avoids a calendar library's general formatting on the drainer.

use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (the era-based civil-from-days conversion).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn two(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// Appends `t` (times before 1970 are written as the epoch).
pub fn write(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let ms = d.subsec_millis();
    let (y, mo, day) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    let y = y.clamp(0, 9999) as u32;
    two(out, y / 100);
    two(out, y % 100);
    out.push(b'-');
    two(out, mo);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, sod / 3600);
    out.push(b':');
    two(out, sod / 60 % 60);
    out.push(b':');
    two(out, sod % 60);
    out.push(b'.');
    out.push(b'0' + (ms / 100) as u8);
    two(out, ms % 100);
    out.push(b'Z');
}

/// Remembers the text of the last two whole seconds written: an event's
/// times mostly fall in the current second or its connection's start.
#[derive(Default)]
pub struct Cache {
    /// (second, `YYYY-MM-DDTHH:MM:SS.`), most recent first.
    slots: [Option<(u64, [u8; 20])>; 2],
}

impl Cache {
    /// Appends `t`, as [`write`] does.
    pub fn write(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let prefix = match self.slots {
            [Some((s, p)), _] if s == secs => p,
            [first, Some((s, p))] if s == secs => {
                self.slots = [Some((s, p)), first];
                p
            }
            [first, _] => {
                let mut v = Vec::with_capacity(24);
                write(&mut v, UNIX_EPOCH + std::time::Duration::from_secs(secs));
                let mut p = [0u8; 20];
                p.copy_from_slice(&v[..20]);
                self.slots = [Some((secs, p)), first];
                p
            }
        };
        out.extend_from_slice(&prefix);
        let ms = d.subsec_millis();
        out.push(b'0' + (ms / 100) as u8);
        two(out, ms % 100);
        out.push(b'Z');
    }
}

/// `t` as a string.
pub fn rfc3339(t: SystemTime) -> String {
    let mut v = Vec::with_capacity(24);
    write(&mut v, t);
    String::from_utf8_lossy(&v).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn matches_chrono_over_many_dates() {
        let mut t = 0u64;
        // Every ~37 hours and a few ms, from 1970 to past 2100 (leap years,
        // century rules, month ends).
        while t < 4_200_000_000_000 {
            let st = UNIX_EPOCH + Duration::from_millis(t);
            let want: chrono::DateTime<chrono::Utc> = st.into();
            assert_eq!(
                rfc3339(st),
                want.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            t += 133_200_007;
        }
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let mut c = Cache::default();
        let mut out = Vec::new();
        for ms in [0u64, 5, 999, 1000, 1001, 5, 86_400_000, 2001, 86_399_999, 3] {
            out.clear();
            let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms);
            c.write(&mut out, t);
            assert_eq!(String::from_utf8_lossy(&out), rfc3339(t));
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_999)),
            "2000-02-29T00:00:00.999Z"
        );
    }
}
