//! Where an encrypted repository's key comes from: the key file written at init, and the
//! search for it when the repository is opened.
//!
//! The key file is kept outside the repository (by the command line, in the user's config
//! directory), named `<repository id>.key`, mode 0600: whoever takes the repository's disk, or
//! holds its packs in a bucket, does not get the key with it.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::crypto::{Fingerprint, KeyFile, Keys, MasterKey};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::format::config::{Config, Encryption};
use crate::repo::OpenOptions;

/// The file name of a repository's key file in a key directory.
pub fn file_name(config: &Config) -> String {
    format!("{}.key", config.repo_id_hex())
}

/// Write the key file of the repository of `config` into `dir` durably (created 0700 if
/// missing), refusing to replace one: with `master` (the association's key, for a second
/// site), or a new random key. Returns the file and the key's fingerprint.
pub fn create(
    dir: &Path,
    config: &Config,
    master: Option<MasterKey>,
) -> Result<(PathBuf, Fingerprint)> {
    crate::fsutil::create_dir_durable(dir)?;
    let path = dir.join(file_name(config));
    if path.exists() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("a key file already exists at {}", path.display()),
        ));
    }
    let master = match master {
        Some(m) => m,
        None => MasterKey::generate()?,
    };
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let file = KeyFile::plain(config.repo_id, &master, &host, "default");
    crate::fsutil::write_atomic(&path, dir, &file.encode()?)?;
    Ok((path, master.fingerprint()))
}

/// The largest key file read: a real one is a few hundred bytes, and whatever path is given
/// (`/dev/zero`, a huge file) must not make puce allocate without bound.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The master key in the key file at `path` (a key file of any repository of the association).
pub fn read_master(path: &Path) -> Result<MasterKey> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes))
        .io_ctx("cannot read the key file", path)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "{} is not a key file: larger than {MAX_KEY_FILE} bytes",
                path.display()
            ),
        ));
    }
    let file = KeyFile::decode(&bytes).map_err(|err| err.context(path.display().to_string()))?;
    file.open(None)
        .map_err(|err| err.context(path.display().to_string()))
}

/// Read the key file at `path` for the repository encrypted as `e` (any key file holding the
/// association's key will do: the key is the association's, not one repository's).
pub fn read(path: &Path, e: &Encryption) -> Result<MasterKey> {
    let master = read_master(path)?;
    if master.fingerprint() != e.fingerprint {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "{} is the key of another repository (key {}, this repository needs key {})",
                path.display(),
                master.fingerprint(),
                e.fingerprint
            ),
        ));
    }
    Ok(master)
}

/// The keys of the encrypted repository of `config`: from the first of `opts.key_files`, else
/// from `opts.key_dir`.
pub fn find(config: &Config, e: &Encryption, opts: &OpenOptions) -> Result<Keys> {
    let mut tried = Vec::new();
    let candidates = opts
        .key_files
        .iter()
        .cloned()
        .chain(opts.key_dir.iter().map(|d| d.join(file_name(config))));
    for path in candidates {
        if opts.key_files.contains(&path) || path.is_file() {
            return read(&path, e).map(|m| Keys::derive(&m));
        }
        tried.push(path.display().to_string());
    }
    Err(Error::new(
        ErrorKind::Key,
        format!(
            "the repository is encrypted and its key (fingerprint {}) was not found{}: give its \
             key file with --key-file or PUCE_KEY_FILE (the copy you kept when the repository \
             was made, or a recovery sheet)",
            e.fingerprint,
            if tried.is_empty() {
                String::new()
            } else {
                format!(" (looked for {})", tried.join(", "))
            }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_or_huge_file_given_as_key_is_refused_without_reading_it_all() {
        // Before the bound: the whole of /dev/zero was read into memory ("out of memory").
        let e = read_master(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Key, "{e}");
        assert!(e.to_string().contains("not a key file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.key");
        std::fs::write(&big, vec![0u8; 1 << 20]).unwrap();
        assert!(
            read_master(&big)
                .unwrap_err()
                .to_string()
                .contains("not a key file")
        );
    }
}
