//! The server key: 32 random bytes kept in a file outside the database
//! (DESIGN.md invariant 10), from which keyed MACs are derived, one purpose at
//! a time. Today it signs the sign-up form's render time; anything else that
//! needs a server secret derives its own MAC with a different `purpose`.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path}: cannot read the server key: {source} (remove the file to have a new key made)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the server key must be 64 hexadecimal characters (remove the file to have a new key made)")]
    Malformed { path: PathBuf },
    #[error("{path}: cannot create the server key: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The key itself; `Debug` hides it.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(***)")
    }
}

impl ServerKey {
    /// A fresh random key (tests, and the first start).
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Reads the key from `path`, creating the file (mode 0600, hex) with a
    /// random key when it does not exist. Two processes starting at once end
    /// up with the same key: the file is written under a temporary name and
    /// moved into place only if no other process got there first.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let create = |source| KeyError::Create {
                    path: path.to_owned(),
                    source,
                };
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                std::fs::create_dir_all(dir).map_err(create)?;
                let key = Self::generate();
                let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(create)?;
                tmp.write_all(hex::encode(key.0).as_bytes())
                    .map_err(create)?;
                match tmp.persist_noclobber(path) {
                    Ok(_) => Ok(key),
                    Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                        let text =
                            std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                                path: path.to_owned(),
                                source,
                            })?;
                        Self::parse(path, &text)
                    }
                    Err(e) => Err(create(e.error)),
                }
            }
            Err(source) => Err(KeyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Self, KeyError> {
        let malformed = || KeyError::Malformed {
            path: path.to_owned(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| malformed())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
        Ok(Self(bytes))
    }

    /// HMAC-SHA256 over `message`, keyed by a key derived for `purpose`, so
    /// a MAC made for one purpose is never valid for another.
    pub fn mac(&self, purpose: &str, message: &[u8]) -> [u8; 32] {
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        derive.update(purpose.as_bytes());
        let sub = derive.finalize().into_bytes();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&sub).expect("any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Checks a MAC made by [`ServerKey::mac`] in constant time.
    pub fn verify(&self, purpose: &str, message: &[u8], tag: &[u8]) -> bool {
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        derive.update(purpose.as_bytes());
        let sub = derive.finalize().into_bytes();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&sub).expect("any key length");
        mac.update(message);
        // Truncated tags are accepted down to 128 bits.
        tag.len() >= 16 && mac.verify_truncated_left(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/form.key");
        let a = ServerKey::load_or_create(&path).unwrap();
        let b = ServerKey::load_or_create(&path).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 64);
    }

    #[test]
    fn malformed_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("form.key");
        std::fs::write(&path, "not hex").unwrap();
        let err = ServerKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("64 hexadecimal"), "{err}");
    }

    #[test]
    fn macs_depend_on_key_purpose_and_message() {
        let k = ServerKey::generate();
        let m = k.mac("form", b"123");
        assert!(k.verify("form", b"123", &m));
        assert!(k.verify("form", b"123", &m[..16]));
        assert!(!k.verify("form", b"123", &m[..8]));
        assert!(!k.verify("other", b"123", &m));
        assert!(!k.verify("form", b"124", &m));
        assert!(!ServerKey::generate().verify("form", b"123", &m));
        assert!(!format!("{k:?}").contains(&hex::encode(k.0)));
    }
}
