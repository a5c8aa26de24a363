//! Cheap bot checks for the sign-up form, on top of the per-IP and
//! per-address limits: a honeypot field people never see or fill, and a
//! signed render time ("form stamp") that must be old enough when the form
//! comes back. A sign-up that trips either is answered exactly like a real
//! one and sends nothing, so a bot learns nothing from the response.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::keys::ServerKey;

/// Name of the hidden field a person leaves empty. It looks like a field
/// that form-filling bots like to fill.
pub const HONEYPOT_FIELD: &str = "website";

/// Name of the field carrying the signed render time.
pub const STAMP_FIELD: &str = "form_stamp";

/// A stamp older than this asks the person to send the form again (a
/// harvested stamp cannot be replayed for ever).
pub const STAMP_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

const PURPOSE: &str = "casewire sign-up form stamp v1";

/// `{unix seconds}.{128-bit MAC in hex}`: when the form was rendered.
pub fn stamp(key: &ServerKey, now: DateTime<Utc>) -> String {
    let secs = now.timestamp().to_string();
    let mac = key.mac(PURPOSE, secs.as_bytes());
    format!("{secs}.{}", hex::encode(&mac[..16]))
}

/// What a submitted stamp says about the submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampVerdict {
    /// Rendered at least `min_delay` ago and within [`STAMP_MAX_AGE`].
    Fine,
    /// Missing, forged, from the future or sent back faster than a person types.
    Bot,
    /// Genuine but older than [`STAMP_MAX_AGE`]: the form should be sent again.
    Stale,
}

pub fn check_stamp(
    key: &ServerKey,
    stamp: Option<&str>,
    now: DateTime<Utc>,
    min_delay: Duration,
) -> StampVerdict {
    let Some((secs, mac)) = stamp.and_then(|s| s.trim().split_once('.')) else {
        return StampVerdict::Bot;
    };
    let (Ok(rendered), Ok(tag)) = (secs.parse::<i64>(), hex::decode(mac)) else {
        return StampVerdict::Bot;
    };
    if tag.len() != 16 || !key.verify(PURPOSE, secs.as_bytes(), &tag) {
        return StampVerdict::Bot;
    }
    let age = now.timestamp() - rendered;
    if age < 0 || (age as u64) < min_delay.as_secs() {
        StampVerdict::Bot
    } else if age as u64 > STAMP_MAX_AGE.as_secs() {
        StampVerdict::Stale
    } else {
        StampVerdict::Fine
    }
}

/// True when the honeypot field holds anything but white space.
pub fn honeypot_filled(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn stamps_are_fine_only_between_min_delay_and_max_age() {
        let key = ServerKey::generate();
        let s = stamp(&key, at(1_000_000));
        let min = Duration::from_secs(3);
        let check = |now| check_stamp(&key, Some(&s), at(now), min);
        assert_eq!(check(1_000_000), StampVerdict::Bot);
        assert_eq!(check(1_000_002), StampVerdict::Bot);
        assert_eq!(check(999_999), StampVerdict::Bot);
        assert_eq!(check(1_000_003), StampVerdict::Fine);
        assert_eq!(check(1_000_000 + 24 * 3600), StampVerdict::Fine);
        assert_eq!(check(1_000_001 + 24 * 3600), StampVerdict::Stale);
    }

    #[test]
    fn forged_or_missing_stamps_are_bots() {
        let key = ServerKey::generate();
        let now = at(2_000_000);
        let min = Duration::from_secs(3);
        let other = stamp(&ServerKey::generate(), at(1_999_000));
        let mine = stamp(&key, at(1_999_000));
        let moved = mine.replacen("1999000", "1998000", 1);
        for bad in [
            None,
            Some(""),
            Some("1999000"),
            Some("x.y"),
            Some(other.as_str()),
            Some(moved.as_str()),
        ] {
            assert_eq!(
                check_stamp(&key, bad, now, min),
                StampVerdict::Bot,
                "{bad:?}"
            );
        }
        assert_eq!(check_stamp(&key, Some(&mine), now, min), StampVerdict::Fine);
    }

    #[test]
    fn honeypot_counts_only_content() {
        assert!(!honeypot_filled(None));
        assert!(!honeypot_filled(Some(" ")));
        assert!(honeypot_filled(Some("http://spam.example")));
    }
}
