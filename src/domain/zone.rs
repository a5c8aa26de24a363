//! A subscriber's IANA time zone, for editions sent at local time. Parsed
//! against chrono-tz's copy of the tz database, so a stored zone always
//! names one the scheduler can evaluate a cron schedule in.

use std::fmt;

use chrono_tz::{Tz, TZ_VARIANTS};

/// An IANA time zone name such as `Asia/Kolkata`, checked against the tz
/// database. Stored by its canonical spelling ([`TimeZone::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeZone(Tz);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not an IANA time zone ({reason}; expected e.g. \"Europe/Berlin\", \"America/New_York\" or \"Asia/Kolkata\")")]
pub struct TimeZoneError {
    value: String,
    reason: &'static str,
}

/// Longest accepted input; the longest zone name has 32 characters.
const MAX_LEN: usize = 64;

/// Regions whose zones the sign-up form offers. The other names of the
/// database (`US/Eastern`, `EST5EDT`, `Etc/GMT+5`, ...) are still accepted
/// when typed or sent, only not listed.
const REGIONS: [&str; 10] = [
    "Africa/",
    "America/",
    "Antarctica/",
    "Arctic/",
    "Asia/",
    "Atlantic/",
    "Australia/",
    "Europe/",
    "Indian/",
    "Pacific/",
];

impl TimeZone {
    /// Accepts a zone name in any letter case, or a city alone when exactly
    /// one listed zone ends in it (`tokyo`, `New York` → `America/New_York`).
    pub fn parse(value: &str) -> Result<Self, TimeZoneError> {
        let fail = |reason| {
            Err(TimeZoneError {
                value: value.chars().take(MAX_LEN).collect(),
                reason,
            })
        };
        let text = value.trim();
        if text.is_empty() {
            return fail("it is empty");
        }
        if text.chars().count() > MAX_LEN {
            return fail("it is longer than 64 characters");
        }
        if let Ok(tz) = text.parse::<Tz>() {
            return Ok(Self(tz));
        }
        let wanted = text.replace(' ', "_");
        if let Some(tz) = TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(&wanted))
        {
            return Ok(Self(*tz));
        }
        let mut cities = listed().filter(|tz| {
            tz.name()
                .rsplit('/')
                .next()
                .is_some_and(|city| city.eq_ignore_ascii_case(&wanted))
        });
        match (cities.next(), cities.next()) {
            (Some(tz), None) => Ok(Self(tz)),
            (Some(_), Some(_)) => {
                fail("several zones have a city of that name; give the region too")
            }
            (None, _) => fail("no such zone in the tz database"),
        }
    }

    pub fn tz(self) -> Tz {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl From<Tz> for TimeZone {
    fn from(tz: Tz) -> Self {
        Self(tz)
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The zones a form lists: every zone of the ten regions, and `UTC`, by name.
pub fn listed() -> impl Iterator<Item = Tz> {
    let mut zones: Vec<Tz> = TZ_VARIANTS
        .iter()
        .copied()
        .filter(|tz| tz.name() == "UTC" || REGIONS.iter().any(|r| tz.name().starts_with(r)))
        .collect();
    zones.sort_by_key(|tz| tz.name());
    zones.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_parse_in_any_case_and_by_unique_city() {
        for (input, name) in [
            ("Asia/Kolkata", "Asia/Kolkata"),
            (" europe/berlin ", "Europe/Berlin"),
            ("America/New York", "America/New_York"),
            ("tokyo", "Asia/Tokyo"),
            ("Adelaide", "Australia/Adelaide"),
            ("UTC", "UTC"),
            ("US/Eastern", "US/Eastern"),
        ] {
            assert_eq!(TimeZone::parse(input).unwrap().name(), name, "{input}");
        }
    }

    #[test]
    fn unknown_empty_long_and_ambiguous_zones_are_refused() {
        for bad in [
            "",
            "  ",
            "Mars/Olympus",
            "Europe/Berlin; DROP TABLE subscribers",
            "+05:30",
            &"A".repeat(65),
        ] {
            let err = TimeZone::parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not an IANA time zone"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_listed_zones_include_half_hour_zones_and_skip_legacy_names() {
        let names: Vec<&str> = listed().map(|tz| tz.name()).collect();
        for name in [
            "Asia/Kolkata",
            "Australia/Adelaide",
            "America/New_York",
            "UTC",
        ] {
            assert!(names.contains(&name), "{name}");
        }
        for name in ["US/Eastern", "EST5EDT", "Etc/GMT+5"] {
            assert!(!names.contains(&name), "{name}");
        }
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
    }
}
