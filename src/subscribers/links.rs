//! Signed link tokens: confirmation, preferences and unsubscribe links are
//! derived when a message is sent, from the subscriber id, the purpose, the
//! subscriber's link version and (confirmation) an expiry, with an HMAC under
//! a key derived from a server key ([`crate::keys`]) kept in a file outside
//! the database (`[database] key_file`). Nothing secret is
//! stored (DESIGN.md invariant 10), no row is written per message, and
//! bumping a subscriber's version (unsubscribe) kills every link sent before.
//!
//! Token bytes: purpose (1) | subscriber id (8, big-endian) | version (4) |
//! expiry in Unix seconds, 0 for none (4) | HMAC-SHA256 truncated to 16.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{Token, SIGNED_BYTES};
use crate::store::subscribers::Purpose;

/// Length of the server key.
pub const KEY_BYTES: usize = 32;

const CLAIM_BYTES: usize = 17;
const MAC_BYTES: usize = SIGNED_BYTES - CLAIM_BYTES;
/// Separates these MACs from any other use of the key.
const CONTEXT: &[u8] = b"casewire link v1\0";

/// Reading or creating the key file (see [`crate::keys`]).
pub type LinkKeyError = crate::keys::KeyError;

/// What a signed token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub subscriber_id: i64,
    pub purpose: Purpose,
    /// The subscriber's link version when the link was made.
    pub version: u32,
    /// Whole seconds; None for links that do not expire (manage).
    pub expires: Option<i64>,
}

/// The MAC key of links. `Debug` does not show it.
pub struct LinkKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(***)")
    }
}

fn purpose_byte(p: Purpose) -> u8 {
    match p {
        Purpose::Confirm => 1,
        Purpose::Manage => 2,
    }
}

impl LinkKey {
    pub fn from_bytes(key: &[u8; KEY_BYTES]) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"),
        }
    }

    fn tag(&self, claims: &[u8]) -> [u8; MAC_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(CONTEXT);
        mac.update(claims);
        let full = mac.finalize().into_bytes();
        full[..MAC_BYTES].try_into().expect("32 >= 16")
    }

    /// The token for `claims`: one HMAC, no I/O.
    pub fn sign(&self, claims: &Claims) -> Token {
        let mut bytes = [0u8; SIGNED_BYTES];
        bytes[0] = purpose_byte(claims.purpose);
        bytes[1..9].copy_from_slice(&claims.subscriber_id.to_be_bytes());
        bytes[9..13].copy_from_slice(&claims.version.to_be_bytes());
        let expires = claims
            .expires
            .map_or(0, |e| u32::try_from(e.max(1)).unwrap_or(u32::MAX));
        bytes[13..17].copy_from_slice(&expires.to_be_bytes());
        let tag = self.tag(&bytes[..CLAIM_BYTES]);
        bytes[CLAIM_BYTES..].copy_from_slice(&tag);
        Token::from_signed_bytes(&bytes)
    }

    /// The manage link token of a subscriber at `version`.
    pub fn manage(&self, subscriber_id: i64, version: u32) -> Token {
        self.sign(&Claims {
            subscriber_id,
            purpose: Purpose::Manage,
            version,
            expires: None,
        })
    }

    /// The claims of a signed token made with this key, if its MAC is right
    /// (compared in constant time). Expiry and version are the caller's to check.
    pub fn open(&self, token: &Token) -> Option<Claims> {
        let bytes = token.signed_bytes()?;
        let mut mac = self.mac.clone();
        mac.update(CONTEXT);
        mac.update(&bytes[..CLAIM_BYTES]);
        mac.verify_truncated_left(&bytes[CLAIM_BYTES..]).ok()?;
        let purpose = match bytes[0] {
            1 => Purpose::Confirm,
            2 => Purpose::Manage,
            _ => return None,
        };
        let expires = u32::from_be_bytes(bytes[13..17].try_into().ok()?);
        Some(Claims {
            subscriber_id: i64::from_be_bytes(bytes[1..9].try_into().ok()?),
            purpose,
            version: u32::from_be_bytes(bytes[9..13].try_into().ok()?),
            expires: (expires != 0).then_some(i64::from(expires)),
        })
    }

    /// The claims of `token` when it is valid for `purpose` at `now`
    /// (the version is checked against the database by the caller).
    pub fn check(&self, token: &Token, purpose: Purpose, now: DateTime<Utc>) -> Option<Claims> {
        let c = self.open(token)?;
        let live = c.expires.is_none_or(|e| now.timestamp() < e);
        (c.purpose == purpose && live).then_some(c)
    }

    /// The link key of a server key: a MAC key derived once for this
    /// purpose, so each link costs one HMAC.
    pub fn from_server_key(key: &crate::keys::ServerKey) -> Self {
        Self::from_bytes(&key.mac("casewire links v1", b""))
    }

    /// Reads the server key at `path`, creating it (mode 0600, random) when
    /// there is no file. Cached per path, so every part of a process shares one.
    pub fn load_or_create(path: &Path) -> Result<Arc<LinkKey>, LinkKeyError> {
        static CACHE: Mutex<Option<HashMap<PathBuf, Arc<LinkKey>>>> = Mutex::new(None);
        let mut cache = CACHE.lock().expect("not poisoned");
        let cache = cache.get_or_insert_with(HashMap::new);
        if let Some(k) = cache.get(path) {
            return Ok(k.clone());
        }
        let server = crate::keys::ServerKey::load_or_create(path)?;
        let key = Arc::new(Self::from_server_key(&server));
        cache.insert(path.to_owned(), key.clone());
        Ok(key)
    }
}

/// Whether others than the owner may read the key file (`check` warns).
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
pub fn readable_by_others(_path: &Path) -> std::io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> LinkKey {
        LinkKey::from_bytes(&[b; KEY_BYTES])
    }

    #[test]
    fn signed_claims_open_with_the_same_key_only() {
        let claims = Claims {
            subscriber_id: 42,
            purpose: Purpose::Confirm,
            version: 3,
            expires: Some(1_900_000_000),
        };
        let t = key(1).sign(&claims);
        assert_eq!(key(1).open(&t), Some(claims));
        assert_eq!(key(2).open(&t), None);
        assert_eq!(key(1).open(&Token::generate()), None);
        // Deterministic: the same claims give the same link on every retry.
        assert_eq!(key(1).sign(&claims), t);
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let t = key(1).manage(7, 0);
        let bytes = t.signed_bytes().unwrap();
        for i in 0..SIGNED_BYTES {
            let mut b = bytes;
            b[i] ^= 1;
            assert_eq!(key(1).open(&Token::from_signed_bytes(&b)), None, "byte {i}");
        }
    }

    #[test]
    fn purpose_and_expiry_are_checked() {
        let now = Utc::now();
        let k = key(1);
        let confirm = k.sign(&Claims {
            subscriber_id: 1,
            purpose: Purpose::Confirm,
            version: 0,
            expires: Some(now.timestamp() + 60),
        });
        assert!(k.check(&confirm, Purpose::Confirm, now).is_some());
        assert!(k.check(&confirm, Purpose::Manage, now).is_none());
        let later = now + chrono::Duration::seconds(61);
        assert!(k.check(&confirm, Purpose::Confirm, later).is_none());
        let manage = k.manage(1, 0);
        assert!(k.check(&manage, Purpose::Manage, later).is_some());
        assert!(k.check(&manage, Purpose::Confirm, now).is_none());
    }

    #[test]
    fn key_file_is_created_private_and_gives_the_same_links_when_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.key");
        let a = LinkKey::load_or_create(&path).unwrap().manage(1, 0);
        let server = crate::keys::ServerKey::load_or_create(&path).unwrap();
        assert_eq!(LinkKey::from_server_key(&server).manage(1, 0), a);
        assert!(!readable_by_others(&path).unwrap());
        let other = dir.path().join("y.key");
        std::fs::write(&other, "not hex").unwrap();
        assert!(LinkKey::load_or_create(&other).is_err());
    }
}
