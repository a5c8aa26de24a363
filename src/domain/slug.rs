//! A URL- and path-safe identifier for case studies, categories and editions.

use std::fmt;

/// Lower-case ASCII letters, digits and single hyphens, 1–100 characters,
/// never starting or ending with a hyphen. Safe in a URL path, a file name
/// and a feed id without escaping.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Slug(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not a valid slug ({reason}; expected e.g. \"connection-pool-exhaustion\")")]
pub struct SlugError {
    value: String,
    reason: &'static str,
}

impl Slug {
    pub const MAX_LEN: usize = 100;

    pub fn parse(value: &str) -> Result<Self, SlugError> {
        let fail = |reason| {
            Err(SlugError {
                value: value.to_owned(),
                reason,
            })
        };
        if value.is_empty() {
            return fail("it is empty");
        }
        if value.len() > Self::MAX_LEN {
            return fail("it is longer than 100 characters");
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return fail("only a-z, 0-9 and '-' are allowed");
        }
        if value.starts_with('-') || value.ends_with('-') || value.contains("--") {
            return fail("hyphens must separate words");
        }
        Ok(Self(value.to_owned()))
    }

    /// Turns free text ("Failure Analysis", "My_Post 2") into a slug, or None
    /// when nothing slug-worthy is left.
    pub fn slugify(text: &str) -> Option<Self> {
        let mut out = String::with_capacity(text.len());
        for c in text.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        while out.ends_with('-') {
            out.pop();
        }
        out.truncate(Self::MAX_LEN);
        while out.ends_with('-') {
            out.pop();
        }
        Self::parse(&out).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Slug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Slug::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kebab_case() {
        assert_eq!(
            Slug::parse("ai-infrastructure").unwrap().as_str(),
            "ai-infrastructure"
        );
        assert!(Slug::parse("a1").is_ok());
    }

    #[test]
    fn rejects_bad_slugs() {
        for bad in [
            "", "Upper", "-lead", "trail-", "dou--ble", "sp ace", "dot.s", "../etc", "é",
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Slug::parse(&"a".repeat(101)).is_err());
    }

    #[test]
    fn slugify_normalizes_free_text() {
        assert_eq!(
            Slug::slugify("Failure Analysis").unwrap().as_str(),
            "failure-analysis"
        );
        assert_eq!(
            Slug::slugify("  AI / Infra__2 ").unwrap().as_str(),
            "ai-infra-2"
        );
        assert!(Slug::slugify("!!!").is_none());
    }
}
