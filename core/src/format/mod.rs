//! Every persisted type, in one place, with no I/O. A change here is a format change: see
//! `docs/format.md`, which is normative, and the golden tests beside each type.

pub mod config;
pub mod envelope;
pub mod forget;
pub mod hold;
pub mod lineage;
pub mod manifest;
pub mod pack;
pub mod policy;
pub mod receipt;
pub mod snapshot;
pub mod space;
pub mod tree;

/// `s` with its control characters escaped (`\n`, `\u{1b}`, ...), for printing names that
/// come from snapshots or peers to a terminal or a log: a name cannot move the cursor, clear
/// the screen or forge a line of output.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Raw bytes (a file name, a path) for printing: lossy UTF-8, control characters escaped.
pub fn printable_bytes(b: &[u8]) -> String {
    printable(&String::from_utf8_lossy(b)).into_owned()
}

/// Lowercase hex of `bytes`, for golden tests and diagnostics.
pub fn hexdump(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_printing() {
        assert_eq!(printable("plain é"), "plain é");
        assert_eq!(printable("a\nb\u{1b}[2Jc\r"), "a\\nb\\u{1b}[2Jc\\r");
        assert_eq!(printable_bytes(b"x\x07\xff"), "x\\u{7}\u{fffd}");
    }
}
