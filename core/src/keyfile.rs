//! Where an encrypted repository's key comes from: the key file written at init, and the
//! search for it when the repository is opened.
//!
//! The key file is kept outside the repository (by the command line, in the user's config
//! directory), named `<repository id>.key`, mode 0600: whoever takes the repository's disk, or
//! holds its packs in a bucket, does not get the key with it.

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

/// The master key in the key file at `path` (a key file of any repository of the association).
pub fn read_master(path: &Path) -> Result<MasterKey> {
    let bytes = std::fs::read(path).io_ctx("cannot read the key file", path)?;
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
