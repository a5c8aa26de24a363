//! The fixed sections case studies are written in (summary, root cause,
//! impact, ...), recognised from their headings. Which headings name which
//! section is configuration (`[content] sections`), with defaults that match
//! the usual wording and its common variants; the body of a section is kept as
//! plain text for digests (a one-line root cause under each title) and the
//! JSON Feed `_casewire` extension.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use serde::Serialize;

/// One kind of section: the key templates and feeds use, the headings that
/// introduce it, and whether `casewire check` warns when a case study lacks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionSpec {
    /// `[a-z0-9_]+`, e.g. `root_cause`.
    pub key: String,
    /// Heading texts that start the section, compared after [`normalize`].
    pub headings: Vec<String>,
    pub expected: bool,
}

/// The defaults: the six sections of the seeds' format and the wordings
/// publications use for them. None is expected until `[content]
/// expected_sections` names it, so free-form content does not warn.
pub fn defaults() -> Vec<SectionSpec> {
    let spec = |key: &str, expected: bool, headings: &[&str]| SectionSpec {
        key: key.into(),
        headings: headings.iter().map(|h| normalize(h)).collect(),
        expected,
    };
    vec![
        spec(
            "summary",
            false,
            &[
                "summary",
                "tl;dr",
                "tldr",
                "overview",
                "executive summary",
                "in short",
            ],
        ),
        spec(
            "root_cause",
            false,
            &[
                "root cause",
                "root causes",
                "the root cause",
                "cause",
                "causes",
                "what went wrong",
                "what happened",
            ],
        ),
        spec(
            "why_it_happens",
            false,
            &[
                "why it happens in real systems",
                "why it happens",
                "why this happens",
                "why it happens in production",
                "why this happens in real systems",
                "contributing factors",
            ],
        ),
        spec(
            "impact",
            false,
            &[
                "impact",
                "the impact",
                "blast radius",
                "consequences",
                "business impact",
                "user impact",
            ],
        ),
        spec(
            "how_to_handle",
            false,
            &[
                "how experienced engineers handle it",
                "how experienced teams handle it",
                "how to handle it",
                "how to fix it",
                "the fix",
                "fix",
                "mitigation",
                "mitigations",
                "remediation",
                "resolution",
                "lessons learned",
            ],
        ),
        spec(
            "why_teams_miss",
            false,
            &[
                "why less experienced teams miss it",
                "why teams miss it",
                "why it is missed",
                "why it's missed",
                "why it gets missed",
                "common mistakes",
                "pitfalls",
            ],
        ),
    ]
}

/// Lower case, punctuation dropped, runs of white space made one space, and a
/// leading number ("2." or "2)") removed: "2. Root Cause:" becomes "root cause".
pub fn normalize(heading: &str) -> String {
    let lowered = heading.to_lowercase().replace(['’', '\''], "");
    let words: Vec<String> = lowered
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    let skip = usize::from(
        words
            .first()
            .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit()))
            && words.len() > 1,
    );
    words[skip..].join(" ")
}

/// A recognised section of one case study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    pub key: String,
    /// The heading as written.
    pub heading: String,
    /// The section's text without markup, paragraphs separated by blank lines.
    pub text: String,
}

impl Section {
    /// The first sentence (or line) of the text, at most `max_chars`
    /// characters, for a one-line teaser.
    pub fn first_line(&self, max_chars: usize) -> String {
        let para = self
            .text
            .split("\n\n")
            .next()
            .unwrap_or("")
            .replace('\n', " ");
        let mut end = para.len();
        for (i, c) in para.char_indices() {
            if matches!(c, '.' | '!' | '?')
                && para[i + c.len_utf8()..].starts_with(|n: char| n.is_whitespace())
            {
                end = i + c.len_utf8();
                break;
            }
        }
        let sentence = para[..end].trim();
        if sentence.chars().count() <= max_chars {
            return sentence.to_owned();
        }
        let cut: String = sentence.chars().take(max_chars.saturating_sub(1)).collect();
        let cut = cut.rsplit_once(' ').map(|(a, _)| a).unwrap_or(&cut);
        format!("{}…", cut.trim_end_matches([',', ';', ':']))
    }
}

/// The sections of a Markdown body, in document order; the first heading
/// matching a spec wins, and a section runs until the next heading of the same
/// or a higher level. Headings inside code blocks are not headings.
pub fn extract(body: &str, specs: &[SectionSpec]) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    // (spec key, heading text, level) of the section being collected.
    let mut open: Option<(String, String, HeadingLevel)> = None;
    let mut text = String::new();
    let mut heading: Option<(HeadingLevel, String)> = None;
    let close = |open: &mut Option<(String, String, HeadingLevel)>,
                 text: &mut String,
                 out: &mut Vec<Section>| {
        if let Some((key, heading, _)) = open.take() {
            out.push(Section {
                key,
                heading,
                text: tidy(text),
            });
        }
        text.clear();
    };
    for event in Parser::new_ext(body, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => heading = Some((level, String::new())),
            Event::End(TagEnd::Heading(level)) => {
                let (_, title) = heading.take().unwrap_or((level, String::new()));
                let ends_open = open.as_ref().is_some_and(|(_, _, l)| level <= *l);
                if ends_open {
                    close(&mut open, &mut text, &mut out);
                }
                let norm = normalize(&title);
                if let Some(spec) = specs.iter().find(|s| s.headings.contains(&norm)) {
                    if !out.iter().any(|s| s.key == spec.key)
                        && open.as_ref().is_none_or(|(k, _, _)| *k != spec.key)
                    {
                        close(&mut open, &mut text, &mut out);
                        open = Some((spec.key.clone(), title.trim().to_owned(), level));
                    }
                } else if open.is_some() {
                    // A sub-heading inside a section is part of its text.
                    text.push_str(title.trim());
                    text.push_str("\n\n");
                }
            }
            Event::Text(t) | Event::Code(t) => match &mut heading {
                Some((_, h)) => h.push_str(&t),
                None if open.is_some() => text.push_str(&t),
                None => {}
            },
            Event::SoftBreak | Event::HardBreak if open.is_some() && heading.is_none() => {
                text.push(' ')
            }
            Event::End(TagEnd::Paragraph | TagEnd::Item | TagEnd::CodeBlock | TagEnd::TableRow)
                if open.is_some() =>
            {
                text.push_str("\n\n")
            }
            Event::End(TagEnd::TableCell) if open.is_some() => text.push(' '),
            _ => {}
        }
    }
    close(&mut open, &mut text, &mut out);
    out
}

/// Trims every paragraph and drops empty ones.
fn tidy(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Keys of the expected sections that `found` lacks, in configuration order.
pub fn missing<'a>(found: &[Section], specs: &'a [SectionSpec]) -> Vec<&'a str> {
    specs
        .iter()
        .filter(|s| s.expected && !found.iter().any(|f| f.key == s.key))
        .map(|s| s.key.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "Intro line.\n\n## Summary\n\nThe pool ran dry.\nTwice.\n\n## 2. Root Cause:\n\nEach request held a connection while it called a slow service. Then more.\n\n```\n# not a heading\nmax_pool = 10\n```\n\n### Details\n\n- one\n- two\n\n## Impact\n\nCheckout failed for *40 minutes*.\n\n## How experienced teams handle it\n\nThey bound the wait.\n\n## Appendix\n\nNot a section.\n";

    #[test]
    fn recognises_headings_with_aliases_numbers_and_case() {
        let found = extract(BODY, &defaults());
        let keys: Vec<&str> = found.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["summary", "root_cause", "impact", "how_to_handle"]);
        assert_eq!(found[0].text, "The pool ran dry. Twice.");
        assert_eq!(found[1].heading, "2. Root Cause:");
        assert!(
            found[1].text.contains("# not a heading"),
            "{}",
            found[1].text
        );
        assert!(
            found[1].text.contains("Details\n\none\n\ntwo"),
            "{}",
            found[1].text
        );
        assert_eq!(found[2].text, "Checkout failed for 40 minutes.");
        assert_eq!(
            found[3].text, "They bound the wait.",
            "a later unknown heading ends it"
        );
        assert!(
            missing(&found, &defaults()).is_empty(),
            "nothing is expected by default"
        );
        let mut specs = defaults();
        for s in &mut specs {
            s.expected = s.key != "why_it_happens";
        }
        assert_eq!(missing(&found, &specs), ["why_teams_miss"]);
    }

    #[test]
    fn first_line_is_one_sentence_within_the_limit() {
        let found = extract(BODY, &defaults());
        assert_eq!(
            found[1].first_line(200),
            "Each request held a connection while it called a slow service."
        );
        let short = found[1].first_line(20);
        assert!(short.chars().count() <= 20, "{short}");
        assert!(short.ends_with('…'), "{short}");
        let s = Section {
            key: "x".into(),
            heading: "x".into(),
            text: "v1.2 of the client. More".into(),
        };
        assert_eq!(s.first_line(200), "v1.2 of the client.");
    }

    #[test]
    fn configured_specs_replace_the_defaults() {
        let specs = vec![SectionSpec {
            key: "lesson".into(),
            headings: vec![normalize("What we learned")],
            expected: true,
        }];
        let found = extract("# What we learned\n\nAlways bound queues.\n", &specs);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "lesson");
        assert_eq!(
            missing(&extract("## Summary\n\nx\n", &specs), &specs),
            ["lesson"]
        );
    }

    #[test]
    fn normalize_drops_punctuation_and_numbering() {
        assert_eq!(normalize("  Why it's  Missed? "), "why its missed");
        assert_eq!(normalize("1) Impact"), "impact");
        assert_eq!(normalize("TL;DR"), "tl dr");
        assert_eq!(normalize("2025"), "2025");
    }
}
