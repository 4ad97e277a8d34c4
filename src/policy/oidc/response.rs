//! Responses the auth actions make: redirects and error pages carrying
//! `ngrok-error-code`, HTML or JSON by the request's `Accept`.

use super::AuthOutcome;
use crate::proxy::error_page::html_escape;

/// An auth error: status, ngrok code and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl AuthError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> AuthError {
        AuthError {
            status,
            code,
            message: message.into(),
        }
    }
}

/// Whether the client prefers JSON (asks for it and not for HTML).
pub fn wants_json(headers: &[(&str, &[u8])]) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("accept"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .any(|v| v.contains("application/json") && !v.contains("text/html"))
}

/// The error page for `e`, with extra headers (e.g. `Set-Cookie`).
pub fn error(e: &AuthError, json: bool, mut headers: Vec<(String, String)>) -> AuthOutcome {
    headers.push(("ngrok-error-code".into(), e.code.to_string()));
    headers.push(("cache-control".into(), "no-store".into()));
    let body = if json {
        headers.push(("content-type".into(), "application/json".into()));
        serde_json::json!({
            "error_code": e.code,
            "status_code": e.status,
            "msg": e.message,
        })
        .to_string()
        .into_bytes()
    } else {
        headers.push(("content-type".into(), "text/html; charset=utf-8".into()));
        page(&format!("{} {}", e.status, e.code), &e.message)
    };
    AuthOutcome::Respond {
        status: e.status,
        headers,
        body,
    }
}

/// A `302 Found` to `location`, never cached.
pub fn redirect(status: u16, location: &str, mut headers: Vec<(String, String)>) -> AuthOutcome {
    headers.push(("location".into(), location.to_string()));
    headers.push(("cache-control".into(), "no-store".into()));
    AuthOutcome::Respond {
        status,
        headers,
        body: Vec::new(),
    }
}

/// A small HTML page (`text` escaped).
pub fn page(title: &str, text: &str) -> Vec<u8> {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{m}</p></body></html>\n",
        t = html_escape(title),
        m = html_escape(text)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages() {
        let e = AuthError::new(403, "ERR_NGROK_5211", "provider said <no>");
        let AuthOutcome::Respond {
            status,
            headers,
            body,
        } = error(&e, false, vec![])
        else {
            panic!("respond");
        };
        assert_eq!(status, 403);
        assert!(headers.contains(&("ngrok-error-code".into(), "ERR_NGROK_5211".into())));
        let body = String::from_utf8(body).expect("utf8");
        assert!(body.contains("provider said &lt;no&gt;"), "{body}");
        let AuthOutcome::Respond { body, .. } = error(&e, true, vec![]) else {
            panic!("respond");
        };
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error_code"], "ERR_NGROK_5211");
        let h: Vec<(&str, &[u8])> = vec![("Accept", b"application/json".as_slice())];
        assert!(wants_json(&h));
        let h: Vec<(&str, &[u8])> = vec![("accept", b"text/html,application/json".as_slice())];
        assert!(!wants_json(&h));
    }
}
