//! Paths inside snapshots: splitting, name checks and joins, in one place for every walk, the
//! edit overlay, the CLI and the mount.
//!
//! A path inside a snapshot is a byte string of names separated by `/`, relative to the
//! snapshot's root (the root itself is `""`). Names are bytes: they need not be UTF-8. The rules:
//!
//! 1. A stored name ([`check_name`], the format's rule, `docs/format.md` "Trees") is refused
//!    when it is empty, `.` or `..`, or contains `/` or NUL. Nothing else is refused: non-UTF-8
//!    bytes and long names are valid data, since other systems may write them.
//! 2. A name a user creates ([`check_new_name`], through the mount) follows rule 1 and is at
//!    most [`MAX_NAME_LEN`] bytes, the limit of Linux file systems.
//! 3. Splitting a path ([`split`]) skips empty components and `.` (`a//b/./c` is `a/b/c`, and `/`
//!    or `""` is the root), and refuses `..` and any component containing NUL: a path never
//!    leaves the snapshot, and names nothing that cannot be stored.
//! 4. [`join`] puts one `/` between a parent and a name, none after the root `""`;
//!    [`split_last`] is its inverse.
//! 5. [`path_depth`] is the depth of the directory a path names, to compare with
//!    [`MAX_TREE_DEPTH`](crate::format::tree::MAX_TREE_DEPTH).

use crate::error::{Error, ErrorKind, Result};

/// The longest name [`check_new_name`] accepts, in bytes (`NAME_MAX` on Linux).
pub const MAX_NAME_LEN: usize = 255;

/// Check that `name` is safe to use as one path component: not empty, `.` or `..`, and without
/// `/` or NUL (rule 1 of the module documentation; what a tree decoder accepts).
pub fn check_name(name: &[u8]) -> Result<()> {
    if is_unsafe(name) {
        return Err(Error::new(
            ErrorKind::UnsafePath,
            format!(
                "unsafe entry name {:?} in tree (empty, '.', '..', or containing '/' or NUL): \
                 refusing it",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    Ok(())
}

fn is_unsafe(name: &[u8]) -> bool {
    name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
}

/// Why [`check_new_name`] refused a name (the mount maps these to `ENAMETOOLONG` and `EINVAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Longer than [`MAX_NAME_LEN`] bytes.
    TooLong,
    /// Refused by [`check_name`].
    Unsafe,
}

/// Check a name a user creates or renames to: [`check_name`]'s rule, and at most
/// [`MAX_NAME_LEN`] bytes (rule 2 of the module documentation).
pub fn check_new_name(name: &[u8]) -> std::result::Result<(), NameError> {
    if name.len() > MAX_NAME_LEN {
        Err(NameError::TooLong)
    } else if is_unsafe(name) {
        Err(NameError::Unsafe)
    } else {
        Ok(())
    }
}

/// Split `path` into its names, skipping empty components and `.`; a component `..` or one
/// containing NUL is refused and returned as the error (rule 3 of the module documentation).
pub fn split(path: &[u8]) -> std::result::Result<Vec<&[u8]>, &[u8]> {
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            c if is_unsafe(c) => return Err(c),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `parent/name`, or `name` when `parent` is the root `""`.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The parent and the last name of `path`: the inverse of [`join`] (`a/b/c` is `(a/b, c)`, `c` is
/// `("", c)`).
pub fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    }
}

/// The depth of the directory at `path` (`/`-separated names below a snapshot's root; the
/// root, `""`, is at depth 0), to compare with
/// [`MAX_TREE_DEPTH`](crate::format::tree::MAX_TREE_DEPTH).
pub fn path_depth(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        path.iter().filter(|b| **b == b'/').count() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_refuse_empty_dots_slash_and_nul_only() {
        for bad in [&b""[..], b".", b"..", b"/", b"a/b", b"/etc", b"x\0y", b"\0"] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnsafePath, "{bad:?}");
        }
        let long = vec![b'x'; 1000];
        for good in [&b"a"[..], b"...", b".a", b"a..", b"\xff\xfe", b" ", &long] {
            check_name(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn new_names_are_also_at_most_255_bytes() {
        assert_eq!(check_new_name(&[b'x'; 255]), Ok(()));
        assert_eq!(check_new_name(&[b'x'; 256]), Err(NameError::TooLong));
        assert_eq!(check_new_name(b"\xff"), Ok(()));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert_eq!(check_new_name(bad), Err(NameError::Unsafe), "{bad:?}");
        }
    }

    #[test]
    fn split_skips_empty_and_dot_and_refuses_dotdot_and_nul() {
        let ok: &[(&[u8], &[&[u8]])] = &[
            (b"", &[]),
            (b"/", &[]),
            (b".", &[]),
            (b"a", &[b"a"]),
            (b"/a//b/./c/", &[b"a", b"b", b"c"]),
            (b"a/.../\xff", &[b"a", b"...", b"\xff"]),
        ];
        for (path, want) in ok {
            assert_eq!(split(path).unwrap(), *want, "{path:?}");
        }
        assert_eq!(split(b"a/../b"), Err(&b".."[..]));
        assert_eq!(split(b".."), Err(&b".."[..]));
        assert_eq!(split(b"a/x\0y"), Err(&b"x\0y"[..]));
    }

    #[test]
    fn join_and_split_last_are_inverse() {
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"a/b", b"c"), b"a/b/c");
        assert_eq!(split_last(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
        for (parent, name) in [(&b""[..], &b"x"[..]), (b"p/q", b"\xff")] {
            assert_eq!(split_last(&join(parent, name)), (parent, name));
        }
    }

    #[test]
    fn depth_counts_directories_below_the_root() {
        assert_eq!(path_depth(b""), 0);
        assert_eq!(path_depth(b"a"), 1);
        assert_eq!(path_depth(b"a/b/c"), 3);
    }
}
