//! A normalized, deliverable e-mail address. Nothing a person typed reaches
//! the database or a mail header without passing [`EmailAddress::parse`].

use std::fmt;

/// An address that `email_address` and lettre both accept, trimmed, with the
/// domain in punycode (IDNA) and the whole address lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{shown:?} is not a valid e-mail address: {reason} (expected e.g. \"ada@example.com\")")]
pub struct EmailError {
    shown: String,
    reason: &'static str,
}

impl EmailError {
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl EmailAddress {
    /// RFC 5321's limit on a forward path.
    pub const MAX_LEN: usize = 254;

    pub fn parse(value: &str) -> Result<Self, EmailError> {
        let fail = |reason| {
            // Quote at most 80 characters back, so an overlong value does not flood a page.
            let shown: String = value.chars().take(80).collect();
            Err(EmailError { shown, reason })
        };
        // Checked before trimming: a line break is never a harmless space.
        if value.chars().any(char::is_control) {
            return fail("it contains control characters such as line breaks");
        }
        let v = value.trim();
        if v.is_empty() {
            return fail("it is empty");
        }
        if v.len() > Self::MAX_LEN {
            return fail("it is longer than 254 characters");
        }
        if v.chars().any(char::is_whitespace) {
            return fail("it contains spaces");
        }
        // Legal in RFC 5322 local parts but never seen in real addresses, and
        // the stuff of header, SQL and template injection: refused outright.
        if v.contains([
            '"', '\'', '<', '>', '(', ')', ',', ';', '\\', '[', ']', '{', '}', '`', '|',
        ]) {
            return fail("it contains quotes, brackets, braces or separators");
        }
        let Some((local, domain)) = v.rsplit_once('@') else {
            return fail("it has no '@'");
        };
        if local.is_empty() || domain.is_empty() {
            return fail("the part before or after '@' is empty");
        }
        let domain = match idna::domain_to_ascii(domain) {
            Ok(d) if !d.is_empty() => d.to_ascii_lowercase(),
            _ => return fail("the domain is not a valid domain name"),
        };
        if !domain.contains('.') || domain.ends_with('.') || domain.starts_with('.') {
            return fail("the domain needs a dot, as in example.com");
        }
        // Lower-cased whole: providers treat local parts case-insensitively, and
        // "Ada@x.com" and "ada@x.com" must not become two subscribers who
        // each get every digest.
        let normalized = format!("{}@{domain}", local.to_lowercase());
        if normalized.len() > Self::MAX_LEN {
            return fail("it is longer than 254 characters");
        }
        let options = email_address::Options {
            minimum_sub_domains: 2,
            allow_domain_literal: false,
            allow_display_text: false,
        };
        if email_address::EmailAddress::parse_with_options(&normalized, options).is_err() {
            return fail("it does not have the form name@domain");
        }
        if normalized.parse::<lettre::Address>().is_err() {
            return fail("it does not have the form name@domain");
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for EmailAddress {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl EmailAddress {
    /// The address for the transport. Every `EmailAddress` passed lettre's
    /// own parser in [`EmailAddress::parse`], so this cannot fail.
    pub fn to_lettre(&self) -> lettre::Address {
        self.0
            .parse()
            .expect("EmailAddress::parse checked lettre accepts it")
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_space_and_international_domains() {
        assert_eq!(
            EmailAddress::parse("  Ada.Lovelace@Example.COM ")
                .unwrap()
                .as_str(),
            "ada.lovelace@example.com"
        );
        assert_eq!(
            EmailAddress::parse("hans@bücher.example").unwrap().as_str(),
            "hans@xn--bcher-kva.example"
        );
        assert_eq!(
            EmailAddress::parse("a+tag@sub.example.org")
                .unwrap()
                .as_str(),
            "a+tag@sub.example.org"
        );
    }

    #[test]
    fn rejects_bad_input() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "   ",
            "plainaddress",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada@@example.com",
            "ada lovelace@example.com",
            "ada@example.com\r\nBcc: victim@example.com",
            "ada@exa\nmple.com",
            "ada@example.com\n",
            "\tada@example.com",
            "ada\u{0}@example.com",
            "\"ada\"@example.com",
            "ada'--@example.com",
            "Ada <ada@example.com>",
            "ada@example.com, eve@example.com",
            "ada@[127.0.0.1]",
            "ada@example..com",
            "ada@.example.com",
            "{{ 7*7 }}@example.com",
            "{{7*7}}@example.com",
            "{%raw%}@example.com",
            "ada@exa mple.com",
            long.as_str(),
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn error_names_the_value_and_the_fix() {
        let e = EmailAddress::parse("nobody").unwrap_err().to_string();
        assert!(e.contains("\"nobody\""), "{e}");
        assert!(e.contains("expected e.g."), "{e}");
    }
}
