//! Link tokens for confirmation and subscription management, as they arrive
//! in a URL. Two shapes parse: a signed token (44 characters of unpadded
//! base64url: 33 bytes of claims and MAC, see `subscribers::links`), derived
//! at send time and stored nowhere; and the legacy shape (32 random bytes, 43
//! characters), of which only the SHA-256 was stored, accepted until the
//! links already sent with it are used up.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Length of the legacy textual form: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;

/// Bytes of a signed token (claims and MAC).
pub const SIGNED_BYTES: usize = 33;

/// Length of a signed token's textual form: 33 bytes in unpadded base64url.
pub const SIGNED_LEN: usize = 44;

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

    /// The textual form of signed token bytes (see `subscribers::links`).
    pub fn from_signed_bytes(bytes: &[u8; SIGNED_BYTES]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The bytes of a signed token; None for the legacy shape.
    pub fn signed_bytes(&self) -> Option<[u8; SIGNED_BYTES]> {
        if self.0.len() != SIGNED_LEN {
            return None;
        }
        URL_SAFE_NO_PAD.decode(&self.0).ok()?.try_into().ok()
    }

    /// Accepts exactly the shapes [`Token::generate`] and
    /// [`Token::from_signed_bytes`] produce.
    pub fn parse(value: &str) -> Result<Self, TokenError> {
        let bytes = match value.len() {
            TOKEN_LEN => 32,
            SIGNED_LEN => SIGNED_BYTES,
            _ => return Err(TokenError("wrong length")),
        };
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TokenError("unexpected characters"));
        }
        match URL_SAFE_NO_PAD.decode(value) {
            // Re-encoding rejects non-canonical trailing bits.
            Ok(b) if b.len() == bytes && URL_SAFE_NO_PAD.encode(&b) == value => {
                Ok(Self(value.to_owned()))
            }
            _ => Err(TokenError("not base64url")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lower-case hex SHA-256 of the textual form: what the database stored
    /// for legacy tokens.
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
        let overlong = format!("{good}AA");
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
    fn signed_shape_round_trips_and_is_told_apart() {
        let mut bytes = [7u8; SIGNED_BYTES];
        bytes[0] = 1;
        let t = Token::from_signed_bytes(&bytes);
        assert_eq!(t.as_str().len(), SIGNED_LEN);
        let parsed = Token::parse(t.as_str()).unwrap();
        assert_eq!(parsed.signed_bytes(), Some(bytes));
        assert_eq!(Token::generate().signed_bytes(), None);
        let longer = format!("{}A", t.as_str());
        assert!(Token::parse(&longer).is_err());
        // Non-canonical last character (33 bytes leave no spare bits, 44 chars).
        let mut s = t.as_str().to_owned();
        s.replace_range(43..44, "=");
        assert!(Token::parse(&s).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = Token::generate();
        assert!(!format!("{t:?}").contains(t.as_str()));
    }
}
