//! Front matter: YAML between `---` lines or TOML between `+++` lines, read
//! into one generic map so the keys of Hugo, Zola and Jekyll can be looked up
//! the same way whatever the syntax. Errors carry the line in the file.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

/// A file split into its front matter and its Markdown body.
#[derive(Debug)]
pub struct Split<'a> {
    pub format: Format,
    /// The front matter text, without its fences.
    pub front: &'a str,
    /// 1-based line of the file where `front` starts.
    pub front_line: usize,
    pub body: &'a str,
}

/// A problem at a line of the file (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl LineError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// Splits `src` at its front matter fences. A BOM and leading blank lines are tolerated.
pub fn split(src: &str) -> Result<Split<'_>, LineError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut offset = 0;
    let mut line_no = 1;
    // Skip leading blank lines.
    for line in src.split_inclusive('\n') {
        if line.trim().is_empty() {
            offset += line.len();
            line_no += 1;
        } else {
            break;
        }
    }
    let rest = &src[offset..];
    let first = rest.split_inclusive('\n').next().unwrap_or("");
    let (format, fence) = match first.trim_end() {
        "---" => (Format::Yaml, "---"),
        "+++" => (Format::Toml, "+++"),
        _ => {
            return Err(LineError::new(
                line_no,
                "no front matter: the file must start with '---' (YAML) or '+++' (TOML)",
            ))
        }
    };
    let front_start = offset + first.len();
    let mut pos = front_start;
    let mut line = line_no + 1;
    for l in src[front_start..].split_inclusive('\n') {
        let t = l.trim_end();
        // Jekyll allows '...' to close YAML.
        if t == fence || (format == Format::Yaml && t == "...") {
            return Ok(Split {
                format,
                front: &src[front_start..pos],
                front_line: line_no + 1,
                body: &src[pos + l.len()..],
            });
        }
        pos += l.len();
        line += 1;
    }
    let _ = line;
    Err(LineError::new(
        line_no,
        format!("front matter opened here is never closed with '{fence}'"),
    ))
}

/// Deepest nesting of lists and maps that front matter may use. Real front
/// matter nests two or three levels; the parsers take time quadratic in the
/// depth to reject a file of nothing but `[[[[...`, so the depth is checked
/// first, by a scan that costs one pass over the text.
pub const MAX_NESTING: usize = 32;

/// Rejects front matter nested deeper than [`MAX_NESTING`]: flow brackets
/// and braces (YAML flow collections, TOML arrays and inline tables), plus,
/// for YAML, the levels of block indentation and `- ` list markers. Quoted
/// text and comments do not count.
pub fn check_nesting(split: &Split<'_>) -> Result<(), LineError> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    // YAML block structure: the indentation of each open level.
    let mut indents: Vec<usize> = Vec::new();
    for (i, line) in split.front.split('\n').enumerate() {
        let line_no = split.front_line + i;
        let too_deep = || {
            LineError::new(
                line_no,
                format!("front matter is nested more than {MAX_NESTING} levels deep; flatten it"),
            )
        };
        if quote.is_none() && depth == 0 && split.format == Format::Yaml {
            let trimmed = line.trim_start_matches(' ');
            if !trimmed.is_empty() && !trimmed.starts_with('#') {
                // Each "- " opens one more level at the next column.
                let mut indent = line.len() - trimmed.len();
                let mut rest = trimmed;
                let mut levels = Vec::new();
                loop {
                    levels.push(indent);
                    match rest
                        .strip_prefix("- ")
                        .or_else(|| (rest == "-").then_some(""))
                    {
                        Some(r) => {
                            let r2 = r.trim_start_matches(' ');
                            indent += 2 + (r.len() - r2.len());
                            rest = r2;
                            if rest.is_empty() {
                                break;
                            }
                        }
                        None => break,
                    }
                }
                while indents.last().is_some_and(|&top| top >= levels[0]) {
                    indents.pop();
                }
                indents.extend(levels);
                if indents.len() > MAX_NESTING {
                    return Err(too_deep());
                }
            }
        }
        let base = indents.len();
        for c in line.chars() {
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '"' | '\'' => quote = Some(c),
                '#' => break,
                '[' | '{' => {
                    depth += 1;
                    if base + depth > MAX_NESTING {
                        return Err(too_deep());
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        // A YAML single-quoted scalar and a TOML literal string end at the
        // line; a basic string may not span lines either (TOML) or is
        // closed by the parser's rules, which the depth does not need.
        if split.format == Format::Toml || quote == Some('\'') {
            quote = None;
        }
        escaped = false;
    }
    Ok(())
}

/// Parses the front matter into a JSON-like map (TOML dates become strings).
pub fn parse(split: &Split<'_>) -> Result<Map<String, Value>, LineError> {
    check_nesting(split)?;
    let value = match split.format {
        Format::Yaml => {
            if split.front.trim().is_empty() {
                return Ok(Map::new());
            }
            serde_yaml_ng::from_str::<Value>(split.front).map_err(|e| {
                let line = e.location().map(|l| l.line()).unwrap_or(1);
                LineError::new(
                    split.front_line + line.saturating_sub(1),
                    format!(
                        "front matter is not valid YAML: {}",
                        one_line(&strip_location(&e.to_string()))
                    ),
                )
            })?
        }
        Format::Toml => {
            let table: toml::Table = toml::from_str(split.front).map_err(|e| {
                let line = e
                    .span()
                    .map(|s| {
                        split.front[..s.start.min(split.front.len())]
                            .matches('\n')
                            .count()
                    })
                    .unwrap_or(0);
                LineError::new(
                    split.front_line + line,
                    format!("front matter is not valid TOML: {}", one_line(e.message())),
                )
            })?;
            toml_to_json(toml::Value::Table(table))
        }
    };
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(LineError::new(
            split.front_line,
            "front matter must be a map of keys to values",
        )),
    }
}

fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Parser messages can span lines ("invalid array\nexpected `]`"); a problem
/// must stay on one `path:line: message` line for editors and CI logs.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// The 1-based file line where `key` is set in the front matter, or the
/// front matter's first line when it is not found (e.g. a missing key).
pub fn key_line(split: &Split<'_>, key: &str) -> usize {
    for (i, line) in split.front.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            let rest = rest.trim_start();
            if rest.starts_with(':') || rest.starts_with('=') {
                return split.front_line + i;
            }
        }
    }
    split.front_line
}

/// Parses the date formats that Hugo, Zola and Jekyll accept. A time without
/// an offset is taken as UTC; a date alone is midnight UTC.
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    // "2025-03-14 09:00:00+01:00" (TOML allows a space instead of 'T').
    if let Ok(d) = DateTime::parse_from_rfc3339(&t.replacen(' ', "T", 1)) {
        return Some(d.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%d %H:%M %z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(t, fmt) {
            return Some(d.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(Utc.from_utc_datetime(&d));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    }
    DateTime::parse_from_rfc2822(t)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_yaml_and_toml() {
        let s = split("---\ntitle: A\n---\nbody\n").unwrap();
        assert_eq!(
            (s.format, s.front, s.front_line, s.body),
            (Format::Yaml, "title: A\n", 2, "body\n")
        );
        let s = split("\n+++\ntitle = \"A\"\n+++\n").unwrap();
        assert_eq!((s.format, s.front_line, s.body), (Format::Toml, 3, ""));
    }

    #[test]
    fn unclosed_or_missing_front_matter_is_an_error() {
        assert!(split("---\ntitle: a\n")
            .unwrap_err()
            .message
            .contains("never closed"));
        assert!(split("# Just markdown\n")
            .unwrap_err()
            .message
            .contains("no front matter"));
    }

    #[test]
    fn yaml_errors_point_at_the_file_line() {
        let src = "---\ntitle: ok\ndate: [unclosed\n---\n";
        let e = parse(&split(src).unwrap()).unwrap_err();
        assert!(e.line >= 3, "{e:?}");
        assert!(e.message.contains("not valid YAML"));
    }

    #[test]
    fn toml_error_message_spanning_lines_is_one_line() {
        let src = "+++\ntitle = \"ok\"\ntags = [\"a\",\n+++\n";
        let e = parse(&split(src).unwrap()).unwrap_err();
        assert!(e.message.contains("not valid TOML"), "{e:?}");
        assert!(!e.message.contains('\n'), "{e:?}");
    }

    #[test]
    fn toml_datetimes_become_strings() {
        let src =
            "+++\ndate = 2026-01-20T08:30:00Z\n[taxonomies]\ncategories = [\"databases\"]\n+++\n";
        let m = parse(&split(src).unwrap()).unwrap();
        assert_eq!(m["date"], "2026-01-20T08:30:00Z");
        assert_eq!(m["taxonomies"]["categories"][0], "databases");
    }

    #[test]
    fn date_formats() {
        let want = Utc.with_ymd_and_hms(2025, 3, 14, 9, 0, 0).unwrap();
        for s in [
            "2025-03-14T09:00:00Z",
            "2025-03-14T10:00:00+01:00",
            "2025-03-14 10:00:00 +0100",
            "2025-03-14T09:00:00",
            "2025-03-14 09:00",
            "Fri, 14 Mar 2025 09:00:00 +0000",
        ] {
            assert_eq!(parse_date(s), Some(want), "{s}");
        }
        assert_eq!(
            parse_date("2025-03-14"),
            Some(Utc.with_ymd_and_hms(2025, 3, 14, 0, 0, 0).unwrap())
        );
        assert_eq!(parse_date("next tuesday"), None);
        assert_eq!(parse_date("2025-02-30"), None);
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = "[".repeat(200_000);
        let e = parse(&split(&format!("---\ntitle: a\ntags: {deep}\n---\n")).unwrap()).unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        assert!(e.message.contains("nested more than 32 levels"), "{e:?}");
        let e =
            parse(&split(&format!("+++\ntitle = \"a\"\nx = {deep}\n+++\n")).unwrap()).unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        let e =
            parse(&split(&format!("+++\nx = {}\n+++\n", "{a=".repeat(40))).unwrap()).unwrap_err();
        assert!(e.message.contains("nested"), "{e:?}");
        // Block YAML: indentation and list markers count too.
        let mut block = String::from("---\n");
        for i in 0..40 {
            block.push_str(&format!("{}k{i}:\n", "  ".repeat(i)));
        }
        block.push_str("---\n");
        let e = parse(&split(&block).unwrap()).unwrap_err();
        assert_eq!(e.line, 2 + MAX_NESTING, "{e:?}");
        let e =
            parse(&split(&format!("---\nx:\n{}a\n---\n", "- ".repeat(40))).unwrap()).unwrap_err();
        assert!(e.message.contains("nested"), "{e:?}");
    }

    #[test]
    fn ordinary_nesting_and_brackets_in_text_pass() {
        for src in [
            "---\ntitle: \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"\nauthors:\n  - name: A\n    links: [{a: [1, [2]]}]\n  - name: B\n---\n",
            "---\ntitle: '{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{'\n# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n---\n",
            "+++\ntitle = 'x[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\n[extra]\nfeatured = true\n[taxonomies]\ntags = [\"a\", \"]\"]\n+++\n",
        ] {
            check_nesting(&split(src).unwrap()).unwrap_or_else(|e| panic!("{src}: {e:?}"));
            parse(&split(src).unwrap()).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        }
    }

    #[test]
    fn key_line_finds_keys() {
        let s = split("---\ntitle: a\ndate: b\n---\n").unwrap();
        assert_eq!(key_line(&s, "date"), 3);
        assert_eq!(key_line(&s, "missing"), 2);
    }
}
