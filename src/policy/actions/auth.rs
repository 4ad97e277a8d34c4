//! `basic-auth`: credentials are hashed (SHA-256 of `user:password`) at
//! load, and a presented credential is hashed and compared against every
//! configured one in constant time, so neither the match position nor
//! the length of a near miss shows in the timing.

use base64::Engine;
use cel_interpreter::Value;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::template;
use crate::policy::cel::{self, Needs};
use crate::policy::engine::{Cx, Fail, Flow};
use crate::policy::reply::{codes, write_error};
use crate::policy::template::Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    credentials: Vec<String>,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default = "yes")]
    enforce: bool,
}

fn default_realm() -> String {
    "ngrok".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
enum Credential {
    Hashed([u8; 32]),
    Dynamic(Template),
}

#[derive(Debug)]
pub struct BasicAuth {
    credentials: Vec<Credential>,
    challenge: String,
    enforce: bool,
    needs: Needs,
}

fn check_password(i: usize, password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if !(8..=128).contains(&n) {
        return Err(format!(
            "config.credentials[{i}]: the password must be 8 to 128 characters, got {n}"
        ));
    }
    Ok(())
}

fn hash(user_colon_pass: &[u8]) -> [u8; 32] {
    Sha256::digest(user_colon_pass).into()
}

impl BasicAuth {
    pub fn compile(cfg: &Option<serde_json::Value>) -> Result<BasicAuth, String> {
        let cfg: Config = super::config(cfg)?;
        if cfg.credentials.is_empty() {
            return Err("config.credentials: at least one user:password".into());
        }
        super::at_most("credentials", cfg.credentials.len(), 10)?;
        if cfg.realm.len() > 128
            || !cfg
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err("config.realm: at most 128 printable ASCII characters, no quotes".into());
        }
        let mut credentials = Vec::with_capacity(cfg.credentials.len());
        let mut needs = Needs::NONE;
        for (i, c) in cfg.credentials.iter().enumerate() {
            let t = template(&format!("credentials[{i}]"), c)?;
            match t.as_literal() {
                Some(lit) => {
                    let Some((user, pass)) = lit.split_once(':') else {
                        return Err(format!("config.credentials[{i}]: expected user:password"));
                    };
                    if user.is_empty() {
                        return Err(format!("config.credentials[{i}]: empty user name"));
                    }
                    check_password(i, pass)?;
                    credentials.push(Credential::Hashed(hash(lit.as_bytes())));
                }
                None => {
                    needs = needs.union(t.needs());
                    credentials.push(Credential::Dynamic(t));
                }
            }
        }
        Ok(BasicAuth {
            credentials,
            challenge: format!("Basic realm=\"{}\"", cfg.realm),
            enforce: cfg.enforce,
            needs,
        })
    }

    pub fn needs(&self) -> Needs {
        self.needs
    }

    pub fn run(&self, cx: &mut Cx<'_, '_>) -> Result<Flow, Fail> {
        let presented = cx.facts.req.and_then(|r| {
            r.header_values("authorization").find_map(|v| {
                let v = std::str::from_utf8(v).ok()?;
                let (scheme, token) = v.split_once(' ')?;
                if !scheme.eq_ignore_ascii_case("basic") {
                    return None;
                }
                base64::engine::general_purpose::STANDARD
                    .decode(token.trim())
                    .ok()
            })
        });
        let mut authorized = false;
        let mut username = String::new();
        if let Some(p) = &presented {
            if let Some(colon) = p.iter().position(|b| *b == b':') {
                username = String::from_utf8_lossy(&p[..colon]).into_owned();
                let digest = hash(p);
                let mut ok = subtle::Choice::from(0u8);
                for c in &self.credentials {
                    let expected = match c {
                        Credential::Hashed(h) => *h,
                        Credential::Dynamic(t) => {
                            let s = t.render(cx.scope(self.needs))?;
                            if !s.contains(':') {
                                continue;
                            }
                            hash(s.as_bytes())
                        }
                    };
                    ok |= digest.ct_eq(&expected);
                }
                authorized = bool::from(ok);
            }
        }
        let was_presented = presented.is_some();
        cx.result("basic_auth", || {
            cel::map([(
                "credentials",
                cel::map([
                    ("presented", Value::Bool(was_presented)),
                    ("username", cel::string(username.as_str())),
                    ("authorized", Value::Bool(authorized)),
                ]),
            )])
        });
        if authorized || !self.enforce {
            return Ok(Flow::Next);
        }
        write_error(
            codes::UNAUTHORIZED,
            "",
            &[("www-authenticate", &self.challenge)],
            cx.style,
            cx.out,
        );
        Ok(Flow::Done)
    }
}
