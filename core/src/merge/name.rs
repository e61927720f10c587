//! The names of conflict copies: `stem.conflict-<node>-<YYYYMMDD-HHMMSS>[-<n>].ext`.

/// Marker separating the collision counter, kept out of band until names are settled.
const SEP: u8 = 0;

/// `conflict_name` with the collision counter `n` applied (1: none).
pub(super) fn wanted_with(wanted: &[u8], n: u32) -> Vec<u8> {
    let (stem, ext) = match wanted.iter().position(|b| *b == SEP) {
        Some(i) => (&wanted[..i], &wanted[i + 1..]),
        None => (wanted, &b""[..]),
    };
    let mut out = stem.to_vec();
    if n > 1 {
        out.extend_from_slice(format!("-{n}").as_bytes());
    }
    out.extend_from_slice(ext);
    out
}

/// The name of a conflict copy of `name` by `node` with modification time `mtime_ns`:
/// `stem.conflict-<node>-<YYYYMMDD-HHMMSS>.ext`. Node names are reduced to ASCII letters,
/// digits, `-` and `_`; the result fits in 255 bytes. When that name is taken, the merge
/// appends `-2`, `-3`, ... to the date.
pub fn conflict_copy_name(name: &[u8], node: &str, mtime_ns: i64) -> Vec<u8> {
    wanted_with(&conflict_name(name, node, mtime_ns), 1)
}

/// The wanted name of a conflict copy, with [`SEP`] where a collision counter goes.
pub(super) fn conflict_name(name: &[u8], node: &str, mtime_ns: i64) -> Vec<u8> {
    let node: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let date = jiff::Timestamp::from_nanosecond(i128::from(mtime_ns))
        .map(|t| t.strftime("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_else(|_| "00000000-000000".into());
    // The extension: from the last dot, unless the name starts with its only dot.
    let split = match name.iter().rposition(|b| *b == b'.') {
        Some(0) | None => name.len(),
        Some(i) => i,
    };
    let (stem, ext) = name.split_at(split);
    let middle = format!(".conflict-{node}-{date}");
    // Room for "-NN" collision counters too.
    let room = 255usize.saturating_sub(middle.len() + ext.len().min(32) + 4);
    let stem = &stem[..stem.len().min(room)];
    let ext = &ext[..ext.len().min(32)];
    let mut out = stem.to_vec();
    out.extend_from_slice(middle.as_bytes());
    out.push(SEP);
    out.extend_from_slice(ext);
    out
}
