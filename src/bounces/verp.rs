//! VERP: each message's envelope sender names its outbox row, so a bounce
//! that comes back to `bounces+<id>-<signature>@<domain>` tells which
//! message (and so which subscriber, edition and run) failed. The id is
//! signed with the server key, so a forged bounce cannot suppress anyone.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The VERP key, derived from the server key (kept outside the database).
pub fn key(server: &crate::keys::ServerKey) -> std::sync::Arc<[u8]> {
    std::sync::Arc::from(&server.mac("verp", b"")[..])
}

/// The return path VERP addresses are made from: `[bounces] return_path`,
/// or `bounces@` + `[mail] bounce_domain`.
pub fn return_path(settings: &crate::config::Settings) -> Option<String> {
    settings.bounces.return_path.clone().or_else(|| {
        settings
            .mail
            .bounce_domain
            .as_ref()
            .map(|d| format!("bounces@{d}"))
    })
}

/// Makes the envelope sender of each outbox row.
#[derive(Clone)]
pub struct Senders {
    return_path: String,
    key: std::sync::Arc<[u8]>,
}

impl Senders {
    /// None when no return path is configured (the envelope sender is then `mail.from`).
    pub fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<Option<Self>> {
        use anyhow::Context as _;
        let Some(return_path) = return_path(settings) else {
            return Ok(None);
        };
        let server = crate::keys::ServerKey::load_or_create(&settings.http.form_key_file)
            .context("loading the server key for VERP ([http] form_key_file)")?;
        Ok(Some(Self {
            return_path,
            key: key(&server),
        }))
    }

    pub fn for_row(&self, id: i64) -> Result<lettre::Address, lettre::address::AddressError> {
        encode(&self.return_path, &self.key, id).parse()
    }
}

/// Hex digits of the signature: 64 bits, plenty against guessing, short
/// enough for a local part (64 characters at most, RFC 5321).
const SIG_HEX: usize = 16;

fn signature(key: &[u8], id: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"casewire-verp:");
    mac.update(id.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())[..SIG_HEX].to_owned()
}

/// The envelope sender for outbox row `id`, from a return path such as
/// `bounces@example.org`: `bounces+123-0f1e2d3c4b5a6978@example.org`.
pub fn encode(return_path: &str, key: &[u8], id: i64) -> String {
    let (local, domain) = return_path
        .rsplit_once('@')
        .unwrap_or((return_path, "invalid"));
    format!("{local}+{id}-{}@{domain}", signature(key, id))
}

/// The outbox row named by a VERP address, when its signature is right.
/// The comparison is case-insensitive: some relays lower-case addresses.
pub fn decode(address: &str, key: &[u8]) -> Option<i64> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, _domain) = address.rsplit_once('@')?;
    let (_, tag) = local.rsplit_once('+')?;
    let (id, sig) = tag.split_once('-')?;
    let id: i64 = id.parse().ok()?;
    let want = signature(key, id);
    // Constant-time enough for a 64-bit tag: compare every byte.
    let got = sig.to_ascii_lowercase();
    (got.len() == want.len()
        && got
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0)
        .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verp_address_names_its_row_and_resists_forgery() {
        let key = b"0123456789abcdef0123456789abcdef";
        let a = encode("bounces@example.org", key, 4242);
        assert!(
            a.starts_with("bounces+4242-") && a.ends_with("@example.org"),
            "{a}"
        );
        assert_eq!(decode(&a, key), Some(4242));
        assert_eq!(decode(&a.to_uppercase(), key), Some(4242));
        assert_eq!(decode(&format!("<{a}>"), key), Some(4242));
        // Another id with the same signature, another key, a cut signature.
        let forged = a.replace("+4242-", "+4243-");
        assert_eq!(decode(&forged, key), None);
        assert_eq!(decode(&a, b"another key of the same length!!"), None);
        assert_eq!(decode(&a[..a.len() - 13], key), None);
        assert_eq!(decode("bounces@example.org", key), None);
    }
}
