//! Secret link tokens for confirmation and subscription management. A token
//! is 32 random bytes, shown as 43 characters of unpadded base64url; only its
//! SHA-256 is stored, so a database leak does not leak working links.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Length of the textual form: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;

/// A token parsed from a URL or freshly generated. `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("this link is not valid: the token is malformed ({0})")]
pub struct TokenError(&'static str);

impl Token {
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts exactly the shape [`Token::generate`] produces.
    pub fn parse(value: &str) -> Result<Self, TokenError> {
        if value.len() != TOKEN_LEN {
            return Err(TokenError("wrong length"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TokenError("unexpected characters"));
        }
        match URL_SAFE_NO_PAD.decode(value) {
            // Re-encoding rejects non-canonical trailing bits.
            Ok(bytes) if bytes.len() == 32 && URL_SAFE_NO_PAD.encode(&bytes) == value => {
                Ok(Self(value.to_owned()))
            }
            _ => Err(TokenError("not base64url")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lower-case hex SHA-256 of the textual form: what the database stores.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), TOKEN_LEN);
        assert_eq!(Token::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), a.as_str());
        assert_eq!(a.hash(), Token::parse(a.as_str()).unwrap().hash());
    }

    #[test]
    fn rejects_bad_shapes() {
        let good = Token::generate().as_str().to_owned();
        let overlong = format!("{good}A");
        let padded = format!("{}=", &good[..42]);
        let dotted = format!("../{}", &good[..40]);
        let encoded = format!("%2e%2e{}", &good[..37]);
        let slash = format!("{}/", &good[..42]);
        for bad in [
            "",
            "../x",
            "%2e",
            overlong.as_str(),
            &good[..42],
            padded.as_str(),
            dotted.as_str(),
            encoded.as_str(),
            slash.as_str(),
            "' OR 1=1 --",
        ] {
            assert!(Token::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = Token::generate();
        assert!(!format!("{t:?}").contains(t.as_str()));
    }
}
