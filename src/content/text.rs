//! Characters a feed can carry. XML 1.0 forbids most C0 controls, U+FFFE and
//! U+FFFF (and surrogates, which a Rust string cannot hold); one of them in a
//! title makes every RSS and Atom feed that shows it ill-formed, and a mail
//! header holding one is refused or mangled by relays. Text is cleaned where it
//! enters the case study model, and the feed writers clean again on the way out.

use std::borrow::Cow;

/// Whether XML 1.0 allows `c` in a document (production `Char`).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `text` without the characters XML 1.0 forbids; borrowed when it has none.
pub fn xml_clean(text: &str) -> Cow<'_, str> {
    if text.chars().all(is_xml_char) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|c| is_xml_char(*c)).collect())
    }
}

/// [`xml_clean`] in place; returns whether anything was dropped.
pub fn xml_clean_in_place(text: &mut String) -> bool {
    if text.chars().all(is_xml_char) {
        return false;
    }
    text.retain(is_xml_char);
    true
}

/// Drops the bytes of forbidden characters from serialized UTF-8 XML: a last
/// line of defence for the writers, whatever reached them. A forbidden
/// character is a single byte below 0x20 (not tab, LF, CR) or the three-byte
/// U+FFFE / U+FFFF; neither can occur inside another character's encoding.
pub fn xml_clean_bytes(mut bytes: Vec<u8>) -> Vec<u8> {
    let bad_at = |b: &[u8], i: usize| -> usize {
        match b[i] {
            0x00..=0x08 | 0x0B | 0x0C | 0x0E..=0x1F => 1,
            0xEF if b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)) => 3,
            _ => 0,
        }
    };
    if !(0..bytes.len()).any(|i| bad_at(&bytes, i) > 0) {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bad_at(&bytes, i) {
            0 => {
                out.push(bytes[i]);
                i += 1;
            }
            n => i += n,
        }
    }
    bytes.clear();
    out
}

/// Describes the forbidden characters of `text` for a warning, e.g.
/// "U+0001, U+001B"; None when there are none.
pub fn describe_forbidden(text: &str) -> Option<String> {
    let mut seen: Vec<char> = Vec::new();
    for c in text.chars().filter(|c| !is_xml_char(*c)) {
        if !seen.contains(&c) {
            seen.push(c);
        }
    }
    if seen.is_empty() {
        return None;
    }
    Some(
        seen.iter()
            .map(|c| format!("U+{:04X}", u32::from(*c)))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The 1-based lines of `text` holding forbidden characters, each with what it holds.
pub fn forbidden_lines(text: &str) -> Vec<(usize, String)> {
    if text.chars().all(is_xml_char) {
        return Vec::new();
    }
    text.split('\n')
        .enumerate()
        .filter_map(|(i, line)| describe_forbidden(line).map(|d| (i + 1, d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_characters_are_dropped() {
        assert_eq!(xml_clean("a\u{1}b\u{1b}c\u{fffe}\u{ffff}d"), "abcd");
        assert_eq!(
            xml_clean("tab\tlf\ncr\r é \u{85} \u{10000}"),
            "tab\tlf\ncr\r é \u{85} \u{10000}"
        );
        assert!(matches!(xml_clean("plain"), Cow::Borrowed(_)));
        let mut s = String::from("x\u{0}y");
        assert!(xml_clean_in_place(&mut s));
        assert_eq!(s, "xy");
    }

    #[test]
    fn bytes_lose_exactly_the_forbidden_characters() {
        let text = "<a>\u{1}é\u{fffe}\u{fffd}\u{ffff}\u{b}ｏ\t</a>";
        let cleaned = xml_clean_bytes(text.as_bytes().to_vec());
        assert_eq!(String::from_utf8(cleaned).unwrap(), xml_clean(text));
    }

    #[test]
    fn lines_name_what_they_hold() {
        assert_eq!(
            forbidden_lines("ok\nbad\u{1}\u{1}\u{1b}\nok"),
            vec![(2, "U+0001, U+001B".to_owned())]
        );
    }
}
