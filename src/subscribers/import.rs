//! CSV import and export of the subscriber list (`email,name,categories,
//! editions,status,timezone`; categories and editions separated by `;`, an
//! empty timezone meaning each edition's own zone; every column but `email`
//! may be left out). Import checks
//! every row, reports bad ones by line number, keeps the good ones, and never
//! changes an address that is already present, so importing a file twice
//! changes nothing (and never re-subscribes someone who left).
//!
//! A cell that a spreadsheet would read as a formula (one starting with `=`,
//! `+`, `-`, `@`, tab or carriage return) is written with a leading `'`, as
//! OWASP advises against CSV injection; import removes that `'` again, so an
//! exported file imports back to the same names and addresses.

use std::io::{Read, Write};

use chrono::{DateTime, Utc};

use super::{parse_choices, parse_name, parse_timezone, SubscriberError};
use crate::config::Settings;
use crate::domain::EmailAddress;
use crate::store::subscribers::{self as store, NewSubscriber, Status, Subscriber};
use crate::store::Db;

pub const HEADER: [&str; 6] = [
    "email",
    "name",
    "categories",
    "editions",
    "status",
    "timezone",
];

/// Rows written per transaction.
const BATCH: usize = 2000;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ImportReport {
    /// New subscribers stored.
    pub imported: usize,
    /// Valid rows whose address was already present (left unchanged).
    pub unchanged: usize,
    /// Rows rejected, with their line number in the file.
    pub errors: Vec<RowError>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

struct Row {
    email: String,
    name: String,
    categories: Vec<String>,
    editions: Vec<String>,
    status: Status,
    timezone: Option<&'static str>,
}

fn split(field: &str) -> Vec<String> {
    field
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Imports CSV from `reader`; `progress` receives the byte offset read so far.
pub async fn import<R: Read>(
    settings: &Settings,
    db: &Db,
    reader: R,
    source: &str,
    now: DateTime<Utc>,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, SubscriberError> {
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| SubscriberError::Invalid {
            field: "csv",
            message: format!("line 1: cannot read the header: {e}"),
        })?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let Some(email_col) = col("email") else {
        return Err(SubscriberError::Invalid {
            field: "csv",
            message: format!(
                "line 1: the header has no 'email' column (expected: {})",
                HEADER.join(",")
            ),
        });
    };
    if let Some(unknown) = headers
        .iter()
        .find(|h| !HEADER.iter().any(|k| k.eq_ignore_ascii_case(h)))
    {
        return Err(SubscriberError::Invalid {
            field: "csv",
            message: format!(
                "line 1: unknown column {unknown:?} (expected: {})",
                HEADER.join(",")
            ),
        });
    }
    let (name_col, cat_col, ed_col, status_col, tz_col) = (
        col("name"),
        col("categories"),
        col("editions"),
        col("status"),
        col("timezone"),
    );

    let mut report = ImportReport::default();
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH);
    let mut seen = std::collections::HashSet::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = csv.position().line();
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                report.errors.push(RowError {
                    line: e.position().map(|p| p.line()).unwrap_or(line),
                    message: e.to_string(),
                });
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(line);
        let get = |c: Option<usize>| unescape_cell(c.and_then(|i| record.get(i)).unwrap_or(""));
        let parsed = (|| {
            let email =
                EmailAddress::parse(get(Some(email_col))).map_err(|e| format!("email: {e}"))?;
            let name = parse_name(get(name_col)).map_err(|e| e.to_string())?;
            let choices = parse_choices(settings, &split(get(cat_col)), &split(get(ed_col)))
                .map_err(|e| e.to_string())?;
            let status_text = get(status_col);
            let status = if status_text.is_empty() {
                Status::Confirmed
            } else {
                Status::parse(&status_text.to_ascii_lowercase()).ok_or_else(|| {
                    format!("status: {status_text:?} is not a status (expected confirmed, pending or unsubscribed)")
                })?
            };
            let timezone = parse_timezone(get(tz_col)).map_err(|e| e.to_string())?;
            Ok::<_, String>(Row {
                email: email.to_string(),
                name,
                categories: choices.categories,
                editions: choices.editions,
                status,
                timezone: timezone.map(|z| z.name()),
            })
        })();
        match parsed {
            Ok(row) => {
                if seen.insert(row.email.clone()) {
                    batch.push(row);
                } else {
                    report.unchanged += 1;
                }
            }
            Err(message) => report.errors.push(RowError { line, message }),
        }
        if batch.len() >= BATCH {
            write_batch(db, &mut batch, source, now, &mut report).await?;
            progress(csv.position().byte());
        }
    }
    write_batch(db, &mut batch, source, now, &mut report).await?;
    progress(csv.position().byte());
    Ok(report)
}

async fn write_batch(
    db: &Db,
    batch: &mut Vec<Row>,
    source: &str,
    now: DateTime<Utc>,
    report: &mut ImportReport,
) -> Result<(), SubscriberError> {
    if batch.is_empty() {
        return Ok(());
    }
    let rows: Vec<NewSubscriber<'_>> = batch
        .iter()
        .map(|r| NewSubscriber {
            email: &r.email,
            name: &r.name,
            status: r.status,
            source,
            timezone: r.timezone,
            categories: &r.categories,
            editions: &r.editions,
        })
        .collect();
    let mut tx = store::begin_write(db).await?;
    let inserted = store::insert_many(&mut tx, &rows, now).await?;
    tx.commit().await?;
    report.imported += inserted;
    report.unchanged += rows.len() - inserted;
    batch.clear();
    Ok(())
}

/// Writes every subscriber as CSV, in id order, reading 1000 at a time.
pub async fn export<W: Write>(db: &Db, out: W) -> Result<usize, SubscriberError> {
    let mut csv = csv::Writer::from_writer(out);
    let io = |e: csv::Error| SubscriberError::Invalid {
        field: "output",
        message: e.to_string(),
    };
    csv.write_record(HEADER).map_err(io)?;
    let mut conn = db.pool.acquire().await?;
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = store::page_after(&mut conn, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for s in &page {
            csv.write_record(record(s)).map_err(io)?;
        }
        count += page.len();
    }
    csv.flush().map_err(|e| io(e.into()))?;
    Ok(count)
}

fn record(s: &Subscriber) -> [String; 6] {
    [
        s.email.clone(),
        s.name.clone(),
        s.categories.join(";"),
        s.editions.join(";"),
        s.status.as_str().to_owned(),
        s.timezone.clone().unwrap_or_default(),
    ]
    .map(escape_cell)
}

/// First characters that make Excel, LibreOffice or Google Sheets evaluate a cell.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Prefixes a cell a spreadsheet would evaluate with `'`, which makes it text.
pub fn escape_cell(cell: String) -> String {
    if cell.starts_with(FORMULA_START) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// Undoes [`escape_cell`]: a `'` followed by a formula character is dropped.
fn unescape_cell(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_START) => rest,
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_escape_and_round_trip() {
        for cell in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            let escaped = escape_cell(cell.to_owned());
            assert_eq!(escaped, format!("'{cell}"));
            assert_eq!(unescape_cell(&escaped), cell);
        }
        for cell in ["Ada", "", "'quoted'", "O'Brien", "a=b"] {
            assert_eq!(escape_cell(cell.to_owned()), cell);
            assert_eq!(unescape_cell(cell), cell);
        }
    }
}
