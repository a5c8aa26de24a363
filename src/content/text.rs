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

/// Whether UTF-8 `bytes` hold a character XML 1.0 forbids: a byte below
/// 0x20 other than tab, LF and CR (a C0 control is one byte in UTF-8 and
/// never part of another character's encoding), or U+FFFE / U+FFFF. The
/// same answer as testing every character with [`is_xml_char`], without
/// decoding them: every content file is checked on each scan.
pub fn has_forbidden(bytes: &[u8]) -> bool {
    // No early exit inside a block, so the compiler can vectorize it.
    let control = |b: u8| (b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r');
    bytes
        .chunks(64)
        .any(|block| block.iter().fold(false, |seen, &b| seen | control(b)))
        || memchr::memmem::find(bytes, "\u{FFFE}".as_bytes()).is_some()
        || memchr::memmem::find(bytes, "\u{FFFF}".as_bytes()).is_some()
}

/// How many words `text` has: runs of characters between white space, as
/// `str::split_whitespace` counts them. ASCII is counted 64 bytes at a time
/// (a word starts wherever a space is followed by a non-space), other
/// characters one at a time.
pub fn word_count(text: &str) -> usize {
    // `char::is_whitespace` of ASCII: also vertical tab (0x0B).
    let space = |b: u8| matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ');
    let bytes = text.as_bytes();
    let (mut words, mut after_space, mut i) = (0, true, 0);
    while i < bytes.len() {
        let block = &bytes[i..bytes.len().min(i + 64)];
        if block.is_ascii() {
            let first = usize::from(after_space && !space(block[0]));
            let rest: usize = block
                .windows(2)
                .map(|w| usize::from(space(w[0]) & !space(w[1])))
                .sum();
            words += first + rest;
            after_space = space(block[block.len() - 1]);
            i += block.len();
        } else {
            // One character, then ASCII blocks again from the next one.
            let c = text[i..]
                .chars()
                .next()
                .expect("i is on a character boundary");
            let is_space = c.is_whitespace();
            words += usize::from(after_space && !is_space);
            after_space = is_space;
            i += c.len_utf8();
        }
    }
    words
}

/// `text` without the characters XML 1.0 forbids; borrowed when it has none.
pub fn xml_clean(text: &str) -> Cow<'_, str> {
    if !has_forbidden(text.as_bytes()) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|c| is_xml_char(*c)).collect())
    }
}

/// [`xml_clean`] in place; returns whether anything was dropped.
pub fn xml_clean_in_place(text: &mut String) -> bool {
    if !has_forbidden(text.as_bytes()) {
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
    if !has_forbidden(&bytes) {
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
    if !has_forbidden(text.as_bytes()) {
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
    fn the_byte_check_agrees_with_every_character_checked() {
        let cases = [
            "",
            "plain",
            "tab\tlf\ncr\r",
            "\u{7f} \u{85} \u{a0}",
            "\u{fffd}\u{fffc}",
            "\u{ffbe}\u{ffe5}\u{fbff}",
            "\u{10000}\u{10fffe}",
            "\u{1}",
            "x\u{b}",
            "\u{1f}",
            "\u{fffe}",
            "ab\u{ffff}",
            "日本\u{c}",
            "\u{efbf}\u{ffbf}",
        ];
        for text in cases {
            // Past the first 64-byte block too.
            for padded in [text.to_owned(), format!("{}{text}", "é".repeat(40))] {
                let by_char = !padded.chars().all(is_xml_char);
                assert_eq!(has_forbidden(padded.as_bytes()), by_char, "{padded:?}");
            }
        }
    }

    #[test]
    fn words_are_counted_as_split_whitespace_counts_them() {
        let cases = [
            "",
            " ",
            "one",
            "  two words  ",
            "a\tb\nc\rd\u{b}e\u{c}f",
            "no\u{a0}break\u{2003}em",
            "日本語 テキスト",
            "x\u{85}y\u{2028}z\u{3000}",
            "é è",
            "\u{1680}lead",
            "trail\u{205f}",
            "`code`\n\n- item\n- item 2\n",
        ];
        for text in cases {
            assert_eq!(
                word_count(text),
                text.split_whitespace().count(),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_checks_agree_with_the_char_by_char_ones(text in "(\\PC|[\\x00-\\x1f\\u{85}\\u{a0}\\u{2000}-\\u{200b}\\u{3000}\\u{fff0}-\\u{ffff}])*") {
            proptest::prop_assert_eq!(has_forbidden(text.as_bytes()), !text.chars().all(is_xml_char));
            proptest::prop_assert_eq!(word_count(&text), text.split_whitespace().count());
        }

        #[test]
        fn words_of_mostly_ascii_text_span_blocks(text in "[a-z \\t\\n\\x0b\\x0c.]{0,300}(é|\\u{a0}|\\u{3000}|日)?[a-z \\n\\u{2003}]{0,200}") {
            proptest::prop_assert_eq!(word_count(&text), text.split_whitespace().count());
        }
    }

    #[test]
    fn lines_name_what_they_hold() {
        assert_eq!(
            forbidden_lines("ok\nbad\u{1}\u{1}\u{1b}\nok"),
            vec![(2, "U+0001, U+001B".to_owned())]
        );
    }
}
