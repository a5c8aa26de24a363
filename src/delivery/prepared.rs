//! Digest bodies encoded once per content set.
//!
//! Thousands of recipients share one rendered body that differs only in two
//! links. Quoted-printable encoding each personalized copy was a fifth of the
//! CPU a digest cost, so a [`PreparedBody`] encodes the shared text once, in
//! pieces split where the links go, and a message is assembled by joining the
//! encoded pieces with the encoded links between them. The joins are soft line
//! breaks (`=` CRLF), which decoders remove, so the decoded part is exactly the
//! shared text with the links filled in. lettre still builds the headers and
//! the MIME structure and signs with DKIM; it takes the parts as pre-encoded
//! bodies.

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, MultiPart, SinglePart};

use super::compose::{PLACEHOLDER_PREFERENCES_URL, PLACEHOLDER_UNSUBSCRIBE_URL};

/// Encoded lines stay one short of quoted-printable's 76 characters, leaving
/// room for the `=` of the soft break a join appends.
const LINE_LIMIT: usize = 75;

/// Where a per-recipient link goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Unsubscribe,
    Preferences,
}

/// One part (text or HTML) of a shared body, encoded.
#[derive(Debug, Clone)]
struct EncodedPart {
    /// `pieces.len() == slots.len() + 1`; a slot sits between two pieces.
    pieces: Vec<Vec<u8>>,
    slots: Vec<Slot>,
}

/// A shared digest body, ready to be personalized per recipient.
#[derive(Debug, Clone)]
pub struct PreparedBody {
    pub subject: String,
    text: EncodedPart,
    html: EncodedPart,
}

/// A recipient's links, encoded once per message for both parts.
pub struct Links {
    unsubscribe: Vec<u8>,
    preferences: Vec<u8>,
}

impl Links {
    pub fn new(unsubscribe: &str, preferences: &str) -> Self {
        Self {
            unsubscribe: encode(unsubscribe.as_bytes()),
            preferences: encode(preferences.as_bytes()),
        }
    }
}

impl PreparedBody {
    pub fn new(subject: String, text: &str, html: &str) -> Self {
        Self {
            subject,
            text: EncodedPart::new(text),
            html: EncodedPart::new(html),
        }
    }

    /// The multipart/alternative body (text, then HTML) for one recipient.
    pub fn multipart(&self, links: &Links) -> MultiPart {
        MultiPart::alternative()
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(self.text.assemble(links)),
            )
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(self.html.assemble(links)),
            )
    }
}

impl EncodedPart {
    fn new(text: &str) -> Self {
        let text = crlf(text);
        let mut pieces = Vec::new();
        let mut slots = Vec::new();
        let mut rest = text.as_str();
        loop {
            let next = [
                (PLACEHOLDER_UNSUBSCRIBE_URL, Slot::Unsubscribe),
                (PLACEHOLDER_PREFERENCES_URL, Slot::Preferences),
            ]
            .into_iter()
            .filter_map(|(p, slot)| rest.find(p).map(|at| (at, p.len(), slot)))
            .min_by_key(|(at, _, _)| *at);
            match next {
                Some((at, len, slot)) => {
                    pieces.push(encode(rest[..at].as_bytes()));
                    slots.push(slot);
                    rest = &rest[at + len..];
                }
                None => {
                    pieces.push(encode(rest.as_bytes()));
                    break;
                }
            }
        }
        Self { pieces, slots }
    }

    fn assemble(&self, links: &Links) -> Body {
        let size = self.pieces.iter().map(Vec::len).sum::<usize>()
            + self.slots.len() * (links.unsubscribe.len().max(links.preferences.len()) + 6);
        let mut out = Vec::with_capacity(size);
        for (i, piece) in self.pieces.iter().enumerate() {
            join(&mut out, piece);
            if let Some(slot) = self.slots.get(i) {
                join(
                    &mut out,
                    match slot {
                        Slot::Unsubscribe => &links.unsubscribe,
                        Slot::Preferences => &links.preferences,
                    },
                );
            }
        }
        Body::dangerous_pre_encoded(out, ContentTransferEncoding::QuotedPrintable)
    }
}

/// Appends an encoded piece, first ending the current line with a soft break
/// unless it already ended with a hard one.
fn join(out: &mut Vec<u8>, piece: &[u8]) {
    if piece.is_empty() {
        return;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"=\r\n");
    }
    out.extend_from_slice(piece);
}

fn encode(bytes: &[u8]) -> Vec<u8> {
    let options = quoted_printable::Options::default()
        .line_length_limit(LINE_LIMIT)
        .input_mode(quoted_printable::InputMode::Text);
    quoted_printable::encode_with_options(bytes, options).into_bytes()
}

/// Line endings as CRLF, as the encoder's text mode expects (a lone LF would
/// otherwise be encoded as `=0A`).
fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut prev = '\0';
    for c in text.chars() {
        if c == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::compose::fill_links;

    fn decode(body: &Body) -> String {
        let bytes = quoted_printable::decode(body.as_ref(), quoted_printable::ParseMode::Strict)
            .expect("valid quoted-printable");
        String::from_utf8(bytes).unwrap()
    }

    fn lines_within_limit(body: &Body) -> bool {
        body.as_ref()
            .split(|b| *b == b'\n')
            .all(|l| l.strip_suffix(b"\r").unwrap_or(l).len() <= 76)
    }

    #[test]
    fn decoded_part_is_the_shared_text_with_the_links_filled_in() {
        let long = "word ".repeat(40);
        let text = format!(
            "Héllo = reader\n{long}unsubscribe: {PLACEHOLDER_UNSUBSCRIBE_URL} \nprefs:{PLACEHOLDER_PREFERENCES_URL}\n.dot line\nend {PLACEHOLDER_UNSUBSCRIBE_URL}"
        );
        let unsubscribe = "https://example.com/unsubscribe/abc_DEF-123?x=1&y=2";
        let preferences = format!("https://example.com/preferences/{}", "t".repeat(90));
        let links = Links::new(unsubscribe, &preferences);
        let part = EncodedPart::new(&text);
        assert_eq!(part.slots.len(), 3);
        let body = part.assemble(&links);
        assert_eq!(
            decode(&body),
            crlf(&fill_links(&text, unsubscribe, &preferences))
        );
        assert!(
            lines_within_limit(&body),
            "{}",
            String::from_utf8_lossy(body.as_ref())
        );
    }

    #[test]
    fn text_without_placeholders_is_one_piece() {
        let part = EncodedPart::new("plain\ntext");
        assert_eq!(part.pieces.len(), 1);
        let body = part.assemble(&Links::new("u", "p"));
        assert_eq!(decode(&body), "plain\r\ntext");
    }

    #[test]
    fn a_placeholder_at_the_edges_leaves_no_stray_breaks() {
        let text = format!("{PLACEHOLDER_UNSUBSCRIBE_URL}\n{PLACEHOLDER_PREFERENCES_URL}");
        let body = EncodedPart::new(&text).assemble(&Links::new("https://u", "https://p"));
        assert_eq!(decode(&body), "https://u\r\nhttps://p");
        assert_eq!(body.as_ref(), b"https://u=\r\n\r\nhttps://p");
    }
}
