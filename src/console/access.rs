//! Who may use the console, and proof that a POST came from one of its own forms.
//!
//! Access: with no credentials configured (allowed only on a loopback `http.listen`, see
//! `config::ConsoleConfig`) everyone who can reach the port is the local operator. With
//! credentials, every request carries them: `Authorization: Bearer TOKEN`, or Basic with a
//! configured user's password or a token as the password. Argon2 is slow on purpose, so a
//! verified password is remembered (as a SHA-256 of it) for the life of the process: a page
//! with its assets and its event stream costs one hash check, not four.
//!
//! CSRF: every form carries a token that is an HMAC of the principal's name under a key
//! drawn at start; a POST without the right one is refused (403). A cross-site POST also
//! names another origin in `Origin`, which is refused as well.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::{PasswordHash, PasswordVerifier};
use axum::http::{header, HeaderMap};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{ConsoleConfig, ConsoleRole};

/// Someone using the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Shown on pages and written into the audit.
    pub name: String,
    /// What they may do.
    pub role: ConsoleRole,
}

impl Principal {
    /// May requeue.
    pub fn is_operator(&self) -> bool {
        self.role == ConsoleRole::Operator
    }
}

/// Why a request was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or wrong ones: 401 with a Basic challenge.
    Unauthenticated,
}

/// The configured credentials and the CSRF key.
pub struct Access {
    open: bool,
    operator_token: String,
    read_token: String,
    users: HashMap<String, (String, ConsoleRole)>,
    /// user -> SHA-256 of a password Argon2 already accepted.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    csrf_key: [u8; 32],
}

impl Access {
    /// From `[console]`.
    pub fn new(cfg: &ConsoleConfig) -> Self {
        Self {
            open: !cfg.has_credentials(),
            operator_token: cfg.operator_token.clone(),
            read_token: cfg.read_token.clone(),
            users: cfg
                .users
                .iter()
                .map(|u| (u.name.clone(), (u.password_hash.clone(), u.role)))
                .collect(),
            verified: Mutex::new(HashMap::new()),
            csrf_key: rand::random(),
        }
    }

    /// Who sent these headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        if self.open {
            return Ok(Principal {
                name: "local".to_owned(),
                role: ConsoleRole::Operator,
            });
        }
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(Refusal::Unauthenticated)?;
        if let Some(token) = auth.strip_prefix("Bearer ") {
            return self.by_token(token.trim()).ok_or(Refusal::Unauthenticated);
        }
        let encoded = auth
            .strip_prefix("Basic ")
            .ok_or(Refusal::Unauthenticated)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(Refusal::Unauthenticated)?;
        let (user, password) = decoded.split_once(':').ok_or(Refusal::Unauthenticated)?;
        if let Some((hash, role)) = self.users.get(user) {
            return self
                .check_password(user, hash, password)
                .then(|| Principal {
                    name: user.to_owned(),
                    role: *role,
                })
                .ok_or(Refusal::Unauthenticated);
        }
        self.by_token(password).ok_or(Refusal::Unauthenticated)
    }

    fn by_token(&self, given: &str) -> Option<Principal> {
        for (token, role, name) in [
            (
                &self.operator_token,
                ConsoleRole::Operator,
                "operator-token",
            ),
            (&self.read_token, ConsoleRole::ReadOnly, "read-token"),
        ] {
            if !token.is_empty() && same(token.as_bytes(), given.as_bytes()) {
                return Some(Principal {
                    name: name.to_owned(),
                    role,
                });
            }
        }
        None
    }

    fn check_password(&self, user: &str, hash: &str, password: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        // A poisoned lock only means another request panicked; the map is still valid.
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .copied();
        if let Some(known) = known {
            return same(&known, &digest);
        }
        let ok = PasswordHash::new(hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(user.to_owned(), digest);
        }
        ok
    }

    /// The CSRF token of `who`'s forms.
    pub fn csrf_token(&self, who: &Principal) -> String {
        hex::encode(self.mac(who).finalize().into_bytes())
    }

    /// Whether a POST carries `who`'s token and comes from this origin.
    pub fn csrf_ok(&self, who: &Principal, headers: &HeaderMap, token: Option<&str>) -> bool {
        if cross_origin(headers) {
            return false;
        }
        let Some(given) = token.and_then(|t| hex::decode(t).ok()) else {
            return false;
        };
        self.mac(who).verify_slice(&given).is_ok()
    }

    fn mac(&self, who: &Principal) -> Hmac<Sha256> {
        // HMAC takes a key of any length; 32 bytes cannot be refused.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.csrf_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        m.update(b"postpub console csrf\0");
        m.update(who.name.as_bytes());
        m
    }
}

/// An `Origin` header naming another host than `Host` (browsers send it on POSTs).
fn cross_origin(headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (None, _) => false,
        (Some(o), Some(h)) => o
            .split_once("://")
            .is_none_or(|(_, rest)| !rest.eq_ignore_ascii_case(h)),
        (Some(_), None) => true,
    }
}

/// Constant-time equality (length may leak; tokens have a fixed length per deployment).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An Argon2id PHC string for `password` (`postpub hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConsoleUser;
    use axum::http::HeaderValue;

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).expect("header"),
        );
        h
    }

    #[test]
    fn users_tokens_and_levels() {
        let cfg = ConsoleConfig {
            operator_token: "o".repeat(20),
            read_token: "r".repeat(20),
            users: vec![ConsoleUser {
                name: "alice".into(),
                password_hash: hash_password("secret pass").expect("hash"),
                role: ConsoleRole::ReadOnly,
            }],
            ..ConsoleConfig::default()
        };
        let a = Access::new(&cfg);
        assert_eq!(
            a.authenticate(&HeaderMap::new()),
            Err(Refusal::Unauthenticated)
        );
        let alice = a
            .authenticate(&basic("alice", "secret pass"))
            .expect("alice");
        assert_eq!(alice.role, ConsoleRole::ReadOnly);
        // The second time comes from the cache, and a wrong password still fails.
        assert!(a.authenticate(&basic("alice", "secret pass")).is_ok());
        assert!(a.authenticate(&basic("alice", "wrong")).is_err());
        let op = a.authenticate(&basic("x", &"o".repeat(20))).expect("token");
        assert!(op.is_operator());
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", "r".repeat(20))).expect("header"),
        );
        assert_eq!(
            a.authenticate(&bearer).expect("read").role,
            ConsoleRole::ReadOnly
        );
    }

    #[test]
    fn csrf_tokens_are_per_principal_and_origin_checked() {
        let a = Access::new(&ConsoleConfig::default());
        let me = a.authenticate(&HeaderMap::new()).expect("open");
        let other = Principal {
            name: "other".into(),
            role: ConsoleRole::Operator,
        };
        let t = a.csrf_token(&me);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9187"));
        assert!(a.csrf_ok(&me, &h, Some(&t)));
        assert!(!a.csrf_ok(&other, &h, Some(&t)));
        assert!(!a.csrf_ok(&me, &h, None));
        assert!(!a.csrf_ok(&me, &h, Some("zz")));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9187"),
        );
        assert!(a.csrf_ok(&me, &h, Some(&t)));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!a.csrf_ok(&me, &h, Some(&t)));
    }
}
