//! Operator accounts of the console (`/admin/`): names, argon2id password
//! hashes, session tokens and the CSRF tokens derived from them. Shared by
//! the `casewire admin` commands and the console's handlers; the SQL lives
//! in `store::admin`. Nothing secret is stored in the clear (DESIGN.md
//! invariant 10): a password only as its argon2id hash, a session only as
//! the SHA-256 of its cookie token, and a CSRF token not at all (it is an
//! HMAC of the session token under the server key).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::domain::Token;
use crate::keys::ServerKey;

/// An operator's login name: 1–64 characters of ASCII letters, digits,
/// `.`, `_`, `-` and `@`, compared as lower case. Built only by [`OperatorName::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct OperatorName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("operator name {0:?} is not valid: use 1 to 64 letters, digits, '.', '_', '-' or '@' (e.g. \"ada\")")]
    BadName(String),
    #[error("the password is too short: use at least {MIN_PASSWORD} characters")]
    ShortPassword,
    #[error("the password is too long: at most {MAX_PASSWORD} bytes")]
    LongPassword,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Fewest characters a password may have.
pub const MIN_PASSWORD: usize = 12;
/// Most bytes a password may have (argon2 takes any length; a bound keeps a
/// login request from costing more than it should).
pub const MAX_PASSWORD: usize = 1024;

impl OperatorName {
    pub fn parse(text: &str) -> Result<Self, AccountError> {
        let t = text.trim();
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
        if ok {
            Ok(Self(t.to_ascii_lowercase()))
        } else {
            Err(AccountError::BadName(text.chars().take(70).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OperatorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The argon2id PHC string of `password` (argon2 crate defaults: 19 MiB,
/// two passes, one lane, a random 16-byte salt). Slow on purpose: call it
/// off the async threads (`spawn_blocking`).
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    check_password(password)?;
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` fits the length rules.
pub fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccountError::ShortPassword);
    }
    if password.len() > MAX_PASSWORD {
        return Err(AccountError::LongPassword);
    }
    Ok(())
}

/// Whether `password` matches the stored PHC string `hash`. With no stored
/// hash (an unknown operator) a fixed hash is checked instead, so the answer
/// takes as long either way and does not tell which names exist.
pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let decoy = DECOY
        .get_or_init(|| hash_password("decoy password that never matches").unwrap_or_default());
    let known = hash.is_some();
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(decoy)) else {
        return false;
    };
    if password.len() > MAX_PASSWORD {
        return false;
    }
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    known && matches
}

/// A random one-time password: 20 characters of base64url (120 bits).
pub fn generate_password() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 15];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new session token for the cookie; store only [`Token::hash`].
pub fn new_session_token() -> Token {
    Token::generate()
}

/// The CSRF token of a session: an HMAC of its cookie token, so it is
/// stored nowhere and is worthless without the session it belongs to.
pub fn csrf_token(key: &ServerKey, session: &Token) -> String {
    URL_SAFE_NO_PAD.encode(key.mac("admin-csrf", session.as_str().as_bytes()))
}

/// Whether `given` is the CSRF token of `session` (constant time).
pub fn csrf_matches(key: &ServerKey, session: &Token, given: &str) -> bool {
    match URL_SAFE_NO_PAD.decode(given.trim()) {
        Ok(tag) => key.verify("admin-csrf", session.as_str().as_bytes(), &tag),
        Err(_) => false,
    }
}

/// The login form's CSRF token, bound to the random value of its own
/// short-lived cookie (double submit), since there is no session yet.
pub fn login_csrf_token(key: &ServerKey, cookie_value: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.mac("admin-login-csrf", cookie_value.as_bytes()))
}

pub fn login_csrf_matches(key: &ServerKey, cookie_value: &str, given: &str) -> bool {
    match URL_SAFE_NO_PAD.decode(given.trim()) {
        Ok(tag) => key.verify("admin-login-csrf", cookie_value.as_bytes(), &tag),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lower_cased() {
        assert_eq!(OperatorName::parse(" Ada ").unwrap().as_str(), "ada");
        assert_eq!(
            OperatorName::parse("ops-team.on_call@x").unwrap().as_str(),
            "ops-team.on_call@x"
        );
        for bad in [
            "",
            " ",
            "a b",
            "ada;drop",
            "<script>",
            &"x".repeat(65),
            "ädä",
        ] {
            assert!(OperatorName::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn passwords_hash_as_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(verify_password("correct horse battery", Some(&hash)));
        assert!(!verify_password("correct horse batterx", Some(&hash)));
        assert!(!verify_password("correct horse battery", None));
        assert!(!verify_password("x", Some("not a phc string")));
        assert_eq!(hash_password("short"), Err(AccountError::ShortPassword));
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let key = ServerKey::generate();
        let (a, b) = (new_session_token(), new_session_token());
        let t = csrf_token(&key, &a);
        assert!(csrf_matches(&key, &a, &t));
        assert!(!csrf_matches(&key, &b, &t));
        assert!(!csrf_matches(&key, &a, ""));
        assert!(!csrf_matches(&key, &a, "AAAA"));
        assert!(!csrf_matches(&ServerKey::generate(), &a, &t));
        let l = login_csrf_token(&key, "cookie");
        assert!(login_csrf_matches(&key, "cookie", &l));
        assert!(!login_csrf_matches(&key, "other", &l));
        assert!(generate_password().len() >= MIN_PASSWORD);
    }
}
