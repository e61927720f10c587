//! Getting a master key back without its key file: a recovery sheet to print and type back,
//! and Shamir shares (any k of n open the key). The text formats are in docs/format.md,
//! section 9 ("Recovery sheet", "Key shares"); the choice of crate in docs/decisions.md.
//!
//! Both write bytes as lines of at most 8 bytes in hex, each line with its own 2-byte check
//! (`LABEL N  hhhh hhhh hhhh hhhh  check cccc`), so that a mistyped line is named, and end to
//! end the key's fingerprint is checked: a sheet or a set of shares that gives another key is
//! refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use zeroize::Zeroize;

use crate::crypto::{KEY_FILE_MAGIC, KEY_LEN, MasterKey};
use crate::error::{Error, ErrorKind, Result};
use crate::keyfile::PassphraseSource;

/// Derivation context of the line checks (part of the format).
pub const CHECK_CONTEXT: &str = "puce 2026-12-07 recovery line check";
/// First line of a recovery sheet.
pub const SHEET_TITLE: &str = "puce recovery sheet (format 1)";
/// First words of a key share.
pub const SHARE_TITLE: &str = "puce key share (format 1)";
/// The marked place of a recovery sheet where the node part lists the holders.
pub const HOLDERS_HEADING: &str = "Holders of this node's spaces (from node.toml):";
/// Most shares of one split (GF(256) has 255 usable points).
pub const MAX_SHARES: u8 = 255;

/// Bytes per line.
const LINE: usize = 8;
/// Length of a share's payload: set id (4), fingerprint prefix (4), threshold, count, x, y.
const SHARE_LEN: usize = 4 + 4 + 3 + KEY_LEN;

fn check(label: &str, n: usize, bytes: &[u8]) -> [u8; 2] {
    let mut h = blake3::Hasher::new_derive_key(CHECK_CONTEXT);
    h.update(label.as_bytes());
    h.update(&(n as u32).to_le_bytes());
    h.update(bytes);
    let mut out = [0u8; 2];
    out.copy_from_slice(&h.finalize().as_bytes()[..2]);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `payload` as lines `LABEL N  hhhh hhhh hhhh hhhh  check cccc`, N from 1.
fn code_lines(label: &str, payload: &[u8]) -> Vec<String> {
    payload
        .chunks(LINE)
        .enumerate()
        .map(|(i, line)| {
            let groups: Vec<String> = line.chunks(2).map(hex).collect();
            format!(
                "{label} {}  {:<19}  check {}",
                i + 1,
                groups.join(" "),
                hex(&check(label, i + 1, line))
            )
        })
        .collect()
}

/// The payload of the `LABEL N` lines of `text` (other lines ignored), `len` bytes.
fn parse_code(label: &str, text: &str, len: usize, what: &str) -> Result<Vec<u8>> {
    let mut lines: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    for raw in text.lines() {
        let mut words = raw.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case(label)) {
            continue;
        }
        let Some(n) = words
            .next()
            .and_then(|w| w.trim_end_matches(':').parse().ok())
        else {
            continue;
        };
        let bad = |why: &str| {
            Error::new(
                ErrorKind::Key,
                format!("{what}, line '{label} {n}': {why}: compare it with the paper again"),
            )
        };
        let mut digits = String::new();
        let mut sum = None;
        while let Some(w) = words.next() {
            if w.eq_ignore_ascii_case("check") {
                sum = words.next();
                break;
            }
            digits.push_str(w);
        }
        let bytes = unhex(&digits).ok_or_else(|| bad("it is not hex digits"))?;
        let sum = sum
            .and_then(unhex)
            .ok_or_else(|| bad("its check (4 hex digits after 'check') is missing"))?;
        if bytes.is_empty() || bytes.len() > LINE || sum != check(label, n, &bytes) {
            return Err(bad("it does not match its check (a digit is mistyped)"));
        }
        if lines.insert(n, bytes).is_some() {
            return Err(bad("it is there twice"));
        }
    }
    let want = len.div_ceil(LINE);
    for n in 1..=want {
        if !lines.contains_key(&n) {
            return Err(Error::new(
                ErrorKind::Key,
                format!("{what}: line '{label} {n}' is missing ({want} lines are needed)"),
            ));
        }
    }
    let out: Vec<u8> = lines.into_values().flatten().collect();
    if out.len() != len {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "{what}: its '{label}' lines hold {} bytes, {len} expected",
                out.len()
            ),
        ));
    }
    Ok(out)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The recovery sheet of `master` for the repository `repo_id` (hex): the key as lines to type
/// back, its fingerprint, and `holders` (lines, under [`HOLDERS_HEADING`]; none: says so).
pub fn paper_sheet(master: &MasterKey, repo_id: &str, holders: &[String]) -> String {
    let mut s = String::new();
    s.push_str(SHEET_TITLE);
    s.push_str("\n\nKeep this sheet where you keep your most important papers. Whoever has it\n");
    s.push_str("can read every snapshot of the association. To get the key back, type the\n");
    s.push_str("'key' lines (and the fingerprint line) into a file, then run\n");
    s.push_str(
        "`puce key import FILE` (repository exists) or `puce init --encrypt --key-from FILE`.\n\n",
    );
    s.push_str(&format!("repository   {repo_id}\n"));
    s.push_str(&format!("fingerprint  {}\n\n", master.fingerprint()));
    for l in code_lines("key", master.as_bytes()) {
        s.push_str(&l);
        s.push('\n');
    }
    s.push('\n');
    s.push_str(HOLDERS_HEADING);
    s.push('\n');
    if holders.is_empty() {
        s.push_str("  none\n");
    }
    for h in holders {
        s.push_str(&format!("  {h}\n"));
    }
    s
}

/// The key typed back from a recovery sheet (its `key` lines; its fingerprint line, if
/// present, must match).
pub fn read_paper(text: &str) -> Result<MasterKey> {
    let mut bytes = parse_code("key", text, KEY_LEN, "recovery sheet")?;
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&bytes);
    bytes.zeroize();
    let master = MasterKey::from_bytes(key);
    key.zeroize();
    let printed = text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("fingerprint")).then(|| w.next().unwrap_or("").to_string())
    });
    if let Some(fp) = printed
        && fp != master.fingerprint().to_string()
    {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "recovery sheet: its key lines give key {}, its fingerprint line says {fp}: a \
                 line was mistyped in a way its check did not catch, or the lines come from two \
                 sheets",
                master.fingerprint()
            ),
        ));
    }
    Ok(master)
}

/// Split `master` into `count` shares, any `threshold` of which open it (2 <= threshold <=
/// count <= 255). Each share's text carries the set id, the threshold and count, and a check
/// per line.
pub fn split(master: &MasterKey, threshold: u8, count: u8) -> Result<Vec<String>> {
    if threshold < 2 || threshold > count {
        return Err(Error::invalid(format!(
            "cannot split a key into {count} shares with threshold {threshold}: give 2 <= \
             --threshold <= --shares <= {MAX_SHARES}"
        )));
    }
    let mut set = [0u8; 4];
    getrandom::fill(&mut set).map_err(|e| Error::other(format!("no random source: {e}")))?;
    let fp = master.fingerprint();
    let dealer = blahaj::Sharks(threshold).dealer(master.as_bytes());
    let mut out = Vec::with_capacity(count.into());
    for share in dealer.take(count.into()) {
        let mut raw: Vec<u8> = Vec::from(&share);
        let mut payload = Vec::with_capacity(SHARE_LEN);
        payload.extend_from_slice(&set);
        payload.extend_from_slice(&fp.0[..4]);
        payload.extend_from_slice(&[threshold, count]);
        payload.extend_from_slice(&raw);
        raw.zeroize();
        out.push(share_text(&payload));
        payload.zeroize();
    }
    Ok(out)
}

fn share_text(payload: &[u8]) -> String {
    let (set, fp, k, n, x) = (
        &payload[..4],
        &payload[4..8],
        payload[8],
        payload[9],
        payload[10],
    );
    let mut s = format!(
        "{SHARE_TITLE}: share {x} of {n}, any {k} of them open the key\n\
         set {}   key fingerprint {}...\n\n",
        hex(set),
        hex(fp)
    );
    for l in code_lines("share", payload) {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// One share read back.
struct Share {
    set: [u8; 4],
    fp: [u8; 4],
    threshold: u8,
    count: u8,
    raw: Vec<u8>,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.raw.zeroize();
    }
}

fn read_share(text: &str, what: &str) -> Result<Share> {
    let p = parse_code("share", text, SHARE_LEN, what)?;
    let mut set = [0u8; 4];
    set.copy_from_slice(&p[..4]);
    let mut fp = [0u8; 4];
    fp.copy_from_slice(&p[4..8]);
    let (threshold, count, x) = (p[8], p[9], p[10]);
    if threshold < 2 || threshold > count || x == 0 || x > count {
        return Err(Error::new(
            ErrorKind::Key,
            format!("{what} is not a valid share (share {x} of {count}, threshold {threshold})"),
        ));
    }
    Ok(Share {
        set,
        fp,
        threshold,
        count,
        raw: p[10..].to_vec(),
    })
}

/// The key from shares (`(name, text)` each: a name to show in errors). Shares of another set,
/// too few shares, or shares that do not give the key they were made from are refused.
pub fn combine(shares: &[(String, String)]) -> Result<MasterKey> {
    let mut read = Vec::new();
    for (name, text) in shares {
        read.push((name.as_str(), read_share(text, name)?));
    }
    let Some((first_name, first)) = read.first() else {
        return Err(Error::invalid("no share given"));
    };
    let mut by_x: BTreeMap<u8, &Share> = BTreeMap::new();
    for (name, s) in &read {
        if s.set != first.set || s.threshold != first.threshold || s.count != first.count {
            return Err(Error::new(
                ErrorKind::Key,
                format!(
                    "{name} is a share of another set (set {}, {} of {}) than {first_name} (set \
                     {}, {} of {}): use shares of one split only",
                    hex(&s.set),
                    s.threshold,
                    s.count,
                    hex(&first.set),
                    first.threshold,
                    first.count
                ),
            ));
        }
        by_x.insert(s.raw[0], s);
    }
    if by_x.len() < first.threshold.into() {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "{} different share(s) of set {} given, {} are needed",
                by_x.len(),
                hex(&first.set),
                first.threshold
            ),
        ));
    }
    let parsed: Vec<blahaj::Share> = by_x
        .values()
        .map(|s| blahaj::Share::try_from(s.raw.as_slice()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::new(ErrorKind::Key, format!("bad share: {e}")))?;
    let mut secret = blahaj::Sharks(first.threshold)
        .recover(&parsed)
        .map_err(|e| Error::new(ErrorKind::Key, format!("cannot combine the shares: {e}")))?;
    let mut key = [0u8; KEY_LEN];
    if secret.len() == KEY_LEN {
        key.copy_from_slice(&secret);
    }
    secret.zeroize();
    let master = MasterKey::from_bytes(key);
    key.zeroize();
    if master.fingerprint().0[..4] != first.fp {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "the shares of set {} do not give the key they were made from (fingerprint {}...): \
                 one of them was altered in a way its checks did not catch",
                hex(&first.set),
                hex(&first.fp)
            ),
        ));
    }
    Ok(master)
}

/// The master key from `files`: one key file (asking `passphrase` if it is protected), one
/// recovery sheet, or enough shares of one split.
pub fn read_key_from(
    files: &[PathBuf],
    passphrase: Option<&PassphraseSource>,
) -> Result<MasterKey> {
    let max = crate::keyfile::MAX_KEY_FILE;
    let mut texts = Vec::new();
    for f in files {
        let bytes = crate::keyfile::read_bounded(f, max, "key file, recovery sheet or share")?;
        if bytes.starts_with(KEY_FILE_MAGIC) {
            if files.len() > 1 {
                return Err(Error::invalid(format!(
                    "{} is a key file: give it alone (several files are shares)",
                    f.display()
                )));
            }
            return crate::keyfile::read_master_with(f, passphrase);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        texts.push((f.display().to_string(), text));
    }
    let is_share = |t: &str| t.lines().any(|l| l.trim_start().starts_with("share "));
    match texts.as_slice() {
        [(name, text)] if !is_share(text) => read_paper(text).map_err(|e| e.context(name.clone())),
        _ => combine(&texts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        MasterKey::from_bytes(k)
    }

    #[test]
    fn golden_paper_sheet() {
        let sheet = paper_sheet(&master(), "00112233445566778899aabbccddeeff", &[]);
        let key: Vec<&str> = sheet.lines().filter(|l| l.starts_with("key ")).collect();
        assert_eq!(
            key,
            [
                "key 1  0001 0203 0405 0607  check ad1d",
                "key 2  0809 0a0b 0c0d 0e0f  check 5bbf",
                "key 3  1011 1213 1415 1617  check b0f4",
                "key 4  1819 1a1b 1c1d 1e1f  check 9e1e",
            ],
            "{sheet}"
        );
        assert!(sheet.contains("fingerprint  47263c8e-8b3e5763-7ad0eba7-dceafaa8"));
        assert!(sheet.contains(&format!("{HOLDERS_HEADING}\n  none\n")));
        assert_eq!(read_paper(&sheet).unwrap().as_bytes(), master().as_bytes());
    }

    #[test]
    fn a_mistyped_sheet_names_the_line() {
        let sheet = paper_sheet(&master(), "00", &["lyon".into()]);
        let typo = sheet.replace("1011 1213", "1011 1218");
        let e = read_paper(&typo).unwrap_err();
        assert!(e.to_string().contains("line 'key 3'"), "{e}");
        let missing: String = sheet
            .lines()
            .filter(|l| !l.starts_with("key 2"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = read_paper(&missing).unwrap_err();
        assert!(e.to_string().contains("'key 2' is missing"), "{e}");
        // Typed loosely: other spacing, upper case, no header.
        let loose: String = sheet
            .lines()
            .filter(|l| l.starts_with("key "))
            .map(|l| format!("KEY {}\n", l[4..].replace(' ', "  ").to_uppercase()))
            .collect();
        assert_eq!(read_paper(&loose).unwrap().as_bytes(), master().as_bytes());
        let other = sheet.replace("47263c8e", "47263c8f");
        assert!(
            read_paper(&other)
                .unwrap_err()
                .to_string()
                .contains("fingerprint line")
        );
    }

    /// Shares made once by `split(&master(), 2, 3)`: pinned, so that a change to the encoding,
    /// the checks or the crate's arithmetic is seen (shares written today must combine later).
    const GOLDEN_SHARES: [&str; 3] = [
        "share 1  cd6e 0ae2 4726 3c8e  check ac5a\nshare 2  0203 0169 4e41 0778  check a6ac\n\
         share 3  e286 bf68 241c e98f  check c8fd\nshare 4  2350 be33 8d24 c518  check 71e0\n\
         share 5  b498 6e98 bab1 0c16  check aa44\nshare 6  c4f3 f9              check aad0\n",
        "share 1  cd6e 0ae2 4726 3c8e  check ac5a\nshare 2  0203 02d2 9f84 0bfc  check 9d57\n\
         share 3  d61b 6ac8 5326 d217  check 9587\nshare 4  51b2 7056 347e a20c  check 6132\n\
         share 5  4a17 e505 4251 3508  check 20ae\nshare 6  b2d9 ce              check a5c8\n",
        "share 1  cd6e 0ae2 4726 3c8e  check ac5a\nshare 2  0203 03bb d0c7 0f80  check e689\n\
         share 3  319b d2a8 7e30 3094  check 757b\nshare 4  7fec c175 a848 7400  check 47a4\n\
         share 5  eb99 9c85 e1fa 2202  check 7898\nshare 6  6b34 28              check 1698\n",
    ];

    #[test]
    fn golden_shares() {
        for pair in [[0, 1], [1, 2], [2, 0]] {
            let given: Vec<(String, String)> = pair
                .iter()
                .map(|&i| (format!("share{i}"), GOLDEN_SHARES[i].to_string()))
                .collect();
            assert_eq!(combine(&given).unwrap().as_bytes(), master().as_bytes());
        }
        // The text `split` writes for a share: header, then the lines `combine` reads.
        let made = split(&master(), 2, 3).unwrap();
        assert!(made[1].starts_with(
            "puce key share (format 1): share 2 of 3, any 2 of them open the key\nset "
        ));
        assert!(made[1].contains("   key fingerprint 47263c8e...\n\nshare 1  "));
        assert_eq!(
            made[0].lines().filter(|l| l.starts_with("share ")).count(),
            6
        );
    }

    proptest::proptest! {
        /// Whatever is typed back, reading it returns an error or a key, never panics: lines
        /// made of the words a sheet or a share uses, in any order, with any numbers.
        #[test]
        fn reading_any_text_never_panics(
            lines in proptest::collection::vec(
                (0usize..4, 0u64..u64::MAX, "[0-9a-fA-F ]{0,24}", "[0-9a-f]{0,5}"),
                0..12,
            )
        ) {
            let text: String = lines
                .iter()
                .map(|(w, n, hexes, sum)| {
                    let word = ["key", "share", "fingerprint", "KEY"][*w];
                    format!("{word} {} {hexes} check {sum}\n", n % 9)
                })
                .collect();
            let _ = read_paper(&text);
            let _ = combine(&[("a".into(), text.clone()), ("b".into(), text)]);
        }
    }

    #[test]
    fn any_k_shares_open_the_key_and_foreign_or_too_few_shares_are_refused() {
        let m = master();
        let shares = split(&m, 3, 5).unwrap();
        assert_eq!(shares.len(), 5);
        let named = |idx: &[usize], set: &[String]| -> Vec<(String, String)> {
            idx.iter()
                .map(|&i| (format!("share{i}"), set[i].clone()))
                .collect()
        };
        for idx in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            assert_eq!(
                combine(&named(&idx, &shares)).unwrap().as_bytes(),
                m.as_bytes()
            );
        }
        let e = combine(&named(&[0, 1, 1], &shares)).unwrap_err();
        assert!(e.to_string().contains("2 different share(s)"), "{e}");
        let other = split(&m, 3, 5).unwrap();
        let mut mixed = named(&[0, 1], &shares);
        mixed.push(("foreign".into(), other[2].clone()));
        let e = combine(&mixed).unwrap_err();
        assert!(
            e.to_string().contains("foreign is a share of another set"),
            "{e}"
        );
        let typo = shares[1].replacen("share 3  ", "share 3  f", 1);
        let e = combine(&[("a".into(), shares[0].clone()), ("b".into(), typo)]).unwrap_err();
        assert!(e.to_string().contains("b, line 'share 3'"), "{e}");
        assert!(split(&m, 1, 3).is_err());
        assert!(split(&m, 4, 3).is_err());
    }
}
