//! Human and JSON output helpers.

use comfy_table::{Cell, CellAlignment, Table, presets};
use serde::Serialize;

/// `1.2 GiB`.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// A local date and time, to the second: `2024-03-01 03:00:00`.
pub fn time(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(t) => t
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => format!("@{ns}"),
    }
}

/// RFC 3339 in UTC, for JSON.
/// Parse the RFC 3339 time given to `flag` (e.g. `--time`) into nanoseconds since the epoch;
/// times a 64-bit count of nanoseconds cannot hold (before 1677 or after 2262) are refused.
pub fn parse_time(flag: &str, text: &str) -> Result<i64, puce_core::Error> {
    let bad = |why: String| {
        puce_core::Error::invalid(format!(
            "bad {flag} '{text}': {why} (use e.g. 2026-12-01T00:00:00Z)"
        ))
    };
    let ts: jiff::Timestamp = text.parse().map_err(|e| bad(format!("{e}")))?;
    i64::try_from(ts.as_nanosecond()).map_err(|_| bad("out of the range 1678 to 2262".into()))
}

pub fn time_utc(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(t) => t.to_string(),
        Err(_) => ns.to_string(),
    }
}

/// Print a value as pretty JSON on stdout.
pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A plain table with a header row; columns listed in `right` are right-aligned.
pub fn table(header: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(Cell::new));
    for &c in right {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Print a table without trailing spaces.
pub fn print_table(t: &Table) {
    for line in t.lines() {
        println!("{}", line.trim_end());
    }
}

/// Bytes per second, humanised.
pub fn rate(bytes: u64, ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    format!("{}/s", size(bytes.saturating_mul(1000) / ms))
}
