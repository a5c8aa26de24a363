//! DKIM keys: reading the configured private key (RSA in PKCS#1 or PKCS#8
//! PEM, or Ed25519 in the PKCS#8 PEM that `openssl genpkey` writes), the
//! signing configuration the composer uses, and the DNS TXT record that
//! publishes the matching public key (RFC 6376; RFC 8463 for Ed25519).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;

use crate::config::DkimSettings;

/// Headers a DKIM signature covers. List-Unsubscribe and its one-click
/// companion are signed because mailbox providers only honour one-click
/// unsubscribe (RFC 8058) when both are covered by a valid signature.
/// Listing a header a message does not have is harmless (it signs its absence).
pub const SIGNED_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Smallest RSA key accepted; verifiers (and RFC 8301) refuse shorter ones.
pub const MIN_RSA_BITS: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("[mail] dkim key_file {}: {message}", file.display())]
pub struct DkimKeyError {
    pub file: std::path::PathBuf,
    pub message: String,
}

/// Which kind of key the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    Ed25519,
}

/// A loaded key: what signs, and what DNS must publish.
pub struct DkimKey {
    pub kind: KeyKind,
    pub config: DkimConfig,
    /// `p=` of the TXT record: the base64 public key (SubjectPublicKeyInfo
    /// DER for RSA, the raw 32 bytes for Ed25519).
    pub public_key: String,
    pub selector: String,
    pub domain: String,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("kind", &self.kind)
            .field("selector", &self.selector)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl DkimKey {
    /// Reads and parses `settings.key_file`.
    pub fn load(settings: &DkimSettings) -> Result<Self, DkimKeyError> {
        let err = |message: String| DkimKeyError {
            file: settings.key_file.clone(),
            message,
        };
        let pem = std::fs::read_to_string(&settings.key_file)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        Self::from_pem(&pem, &settings.selector, &settings.domain).map_err(err)
    }

    /// Parses a PEM private key; the error says what the file holds instead.
    pub fn from_pem(pem: &str, selector: &str, domain: &str) -> Result<Self, String> {
        let label = pem
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("-----BEGIN "))
            .ok_or("not a PEM file (no -----BEGIN line); expected an RSA or Ed25519 private key")?;
        let (kind, key, public_key) = match label {
            "-----BEGIN RSA PRIVATE KEY-----" => {
                let rsa = RsaPrivateKey::from_pkcs1_pem(pem)
                    .map_err(|e| format!("not a valid PKCS#1 RSA private key: {e}"))?;
                rsa_key(rsa)?
            }
            "-----BEGIN PRIVATE KEY-----" => match RsaPrivateKey::from_pkcs8_pem(pem) {
                Ok(rsa) => rsa_key(rsa)?,
                Err(rsa_err) => match ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
                    Ok(ed) => {
                        let public = STANDARD.encode(ed.verifying_key().to_bytes());
                        let key = DkimSigningKey::new(
                            &STANDARD.encode(ed.to_bytes()),
                            DkimSigningAlgorithm::Ed25519,
                        )
                        .map_err(|e| format!("Ed25519 key refused by the signer: {e}"))?;
                        (KeyKind::Ed25519, key, public)
                    }
                    Err(_) => {
                        return Err(format!(
                            "a PKCS#8 key that is neither RSA nor Ed25519 ({rsa_err}); generate one with `openssl genrsa -out KEY 2048` or `openssl genpkey -algorithm ed25519 -out KEY`"
                        ))
                    }
                },
            },
            "-----BEGIN ENCRYPTED PRIVATE KEY-----" => {
                return Err("the key is encrypted; store it without a passphrase (`openssl pkey -in KEY -out KEY.pem`)".into())
            }
            other => {
                return Err(format!(
                    "{other} is not a private key casewire can sign with (expected BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)"
                ))
            }
        };
        let config = DkimConfig::new(
            selector.to_owned(),
            domain.to_owned(),
            key,
            SIGNED_HEADERS
                .iter()
                .map(|h| HeaderName::new_from_ascii_str(h))
                .collect(),
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        );
        Ok(Self {
            kind,
            config,
            public_key,
            selector: selector.to_owned(),
            domain: domain.to_owned(),
        })
    }

    /// The DNS name of the record: `selector._domainkey.domain`.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record's value, e.g. `v=DKIM1; k=ed25519; p=…`.
    pub fn txt_value(&self) -> String {
        let k = match self.kind {
            KeyKind::Rsa { .. } => "rsa",
            KeyKind::Ed25519 => "ed25519",
        };
        format!("v=DKIM1; k={k}; p={}", self.public_key)
    }

    /// The record as a zone file line. DNS strings hold at most 255
    /// characters, so a long value (2048-bit RSA) is split into several
    /// quoted strings, which resolvers join.
    pub fn txt_record(&self) -> String {
        let value = self.txt_value();
        let parts: Vec<String> = value
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!("{} TXT {}", self.dns_name(), parts.join(" "))
    }
}

/// lettre signs with PKCS#1 only: a PKCS#8 RSA key is handed over re-encoded.
fn rsa_key(rsa: RsaPrivateKey) -> Result<(KeyKind, DkimSigningKey, String), String> {
    let bits = rsa.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; verifiers refuse fewer than {MIN_RSA_BITS} (use 2048)"
        ));
    }
    let public = rsa
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    let pkcs1 = rsa
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| format!("cannot re-encode the key: {e}"))?;
    let key = DkimSigningKey::new(&pkcs1, DkimSigningAlgorithm::Rsa)
        .map_err(|e| format!("RSA key refused by the signer: {e}"))?;
    Ok((
        KeyKind::Rsa { bits },
        key,
        STANDARD.encode(public.as_bytes()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8463 appendix A.2's example key, as `openssl genpkey` would store it.
    const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";

    #[test]
    fn ed25519_pkcs8_gives_the_rfc_8463_public_key() {
        let key = DkimKey::from_pem(ED25519_PEM, "brisbane", "football.example.com").unwrap();
        assert_eq!(key.kind, KeyKind::Ed25519);
        assert_eq!(
            key.txt_value(),
            "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        );
        assert_eq!(
            key.txt_record(),
            "brisbane._domainkey.football.example.com TXT \"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\""
        );
    }

    #[test]
    fn refuses_what_it_cannot_sign_with() {
        for (pem, says) in [
            ("hello", "not a PEM file"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not a private key",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "PKCS#1",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "neither RSA nor Ed25519",
            ),
        ] {
            let e = DkimKey::from_pem(pem, "s", "example.com").unwrap_err();
            assert!(e.contains(says), "{pem:?}: {e}");
        }
    }
}
