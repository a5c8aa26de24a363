//! Markdown to safe HTML: pulldown-cmark renders, ammonia sanitizes raw HTML
//! and makes every relative link and image absolute against the page's URL,
//! because feed readers show content far from the site it came from.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
}

/// Renders `body` and sanitizes it; relative URLs resolve against `page`.
pub fn render(body: &str, page: &url::Url) -> String {
    let mut html = String::with_capacity(body.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, Parser::new_ext(body, options()));
    sanitize(&html, page)
}

/// Sanitizes HTML from any source (rendered Markdown, upstream feeds).
/// Character references to controls (`&#1;`) decode to characters that XML
/// cannot carry, so they are dropped from the result.
pub fn sanitize(html: &str, page: &url::Url) -> String {
    let mut out = ammonia::Builder::default()
        .add_tag_attributes("code", &["class"])
        .add_tag_attributes("img", &["loading"])
        .url_relative(ammonia::UrlRelative::RewriteWithBase(page.clone()))
        .clean(html)
        .to_string();
    super::text::xml_clean_in_place(&mut out);
    out
}

/// Plain text of the first paragraph, cut at a word boundary near `max` chars;
/// the summary of a case study that has none in its front matter.
pub fn first_paragraph(body: &str, max: usize) -> String {
    let mut text = String::new();
    let mut inside = false;
    for event in Parser::new_ext(body, options()) {
        match event {
            Event::Start(Tag::Paragraph) => inside = true,
            Event::End(TagEnd::Paragraph) if inside && !text.trim().is_empty() => break,
            Event::End(TagEnd::Paragraph) => inside = false,
            Event::Text(t) | Event::Code(t) if inside => text.push_str(&t),
            Event::SoftBreak | Event::HardBreak if inside => text.push(' '),
            _ => {}
        }
    }
    truncate_words(text.trim(), max)
}

pub fn truncate_words(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(i) if i > max / 2 => &cut[..i],
        _ => &cut[..],
    };
    format!(
        "{}…",
        cut.trim_end_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> url::Url {
        url::Url::parse("https://example.com/case-studies/pool/").unwrap()
    }

    #[test]
    fn relative_links_and_images_become_absolute() {
        let html = render(
            "[a](/case-studies/other/) ![q](images/q.svg) <a href=\"x.html\">x</a>",
            &page(),
        );
        assert!(
            html.contains("href=\"https://example.com/case-studies/other/\""),
            "{html}"
        );
        assert!(
            html.contains("src=\"https://example.com/case-studies/pool/images/q.svg\""),
            "{html}"
        );
        assert!(
            html.contains("href=\"https://example.com/case-studies/pool/x.html\""),
            "{html}"
        );
    }

    #[test]
    fn raw_html_is_sanitized() {
        let html = render(
            "Hi <script>alert(1)</script> <kbd>Ctrl</kbd> <img src=x onerror=alert(1)>",
            &page(),
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("onerror"), "{html}");
        assert!(html.contains("<kbd>Ctrl</kbd>"), "{html}");
    }

    #[test]
    fn first_paragraph_skips_headings_and_truncates() {
        assert_eq!(
            first_paragraph("## Summary\n\nThe *pool* ran dry.\n\nMore.", 300),
            "The pool ran dry."
        );
        let long = "word ".repeat(100);
        let s = first_paragraph(&long, 50);
        assert!(s.ends_with('…') && s.chars().count() <= 51, "{s}");
    }
}
