//! Where an encrypted repository's keys are kept, and the search for one when the repository is
//! opened.
//!
//! The key files of a repository live in a key directory outside the repository (the command
//! line's is `$XDG_CONFIG_HOME/puce/keys`), mode 0600, never in the repository's storage and
//! never sent to peers: whoever takes the repository's disk, or holds its packs in a bucket, does
//! not get a key with it. A repository has one or more key files there, each holding the same
//! master key, as is or wrapped by a passphrase:
//!
//! - `<repository id>.key`: the one written by `puce init` (id `default`);
//! - `<repository id>.<id>.key`: the ones added by `puce key add` (id: 8 random hex digits);
//! - `<repository id>.exported`: the record that the key was exported (a recovery sheet or
//!   shares), which [`exported`] reads.
//!
//! Opening ([`find`]): a key file given by the caller first; else the plain key files in the
//! directory; else a passphrase is asked for once (through [`PassphraseSource`]) and tried on the
//! passphrase-protected ones. Every change is atomic: a temporary file is written and fsynced,
//! renamed into place, and the directory fsynced; a removal is fsynced too.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{Fingerprint, KdfParams, KeyFile, Keys, MasterKey};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::format::config::{Config, Encryption};
use crate::repo::OpenOptions;

/// The id of the key file `puce init` writes (`<repository id>.key`).
pub const DEFAULT_ID: &str = "default";

/// The file name of a repository's first key file in a key directory.
pub fn file_name(config: &Config) -> String {
    format!("{}.key", config.repo_id_hex())
}

/// The path of the key file `id` of the repository of `config` in `dir`.
pub fn path_of(dir: &Path, config: &Config, id: &str) -> PathBuf {
    if id == DEFAULT_ID {
        dir.join(file_name(config))
    } else {
        dir.join(format!("{}.{id}.key", config.repo_id_hex()))
    }
}

/// A passphrase: wiped from memory when dropped, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Passphrase(Vec<u8>);

impl Passphrase {
    /// A passphrase with these bytes; an empty one is refused (`what` names where it came from).
    pub fn new(bytes: Vec<u8>, what: &str) -> Result<Passphrase> {
        if bytes.is_empty() {
            return Err(Error::new(
                ErrorKind::Key,
                format!("the passphrase from {what} is empty"),
            ));
        }
        Ok(Passphrase(bytes))
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// Where the passphrase of a protected key comes from: the command line asks on the terminal,
/// reads a file or runs a command. Called at most once per open, with a prompt naming the
/// repository.
#[derive(Clone)]
pub struct PassphraseSource(Arc<Ask>);

/// What a [`PassphraseSource`] calls.
type Ask = dyn Fn(&str) -> Result<Passphrase> + Send + Sync;

impl PassphraseSource {
    /// A source calling `f`.
    pub fn new(f: impl Fn(&str) -> Result<Passphrase> + Send + Sync + 'static) -> Self {
        PassphraseSource(Arc::new(f))
    }

    /// A source that always gives `p`.
    pub fn fixed(p: Passphrase) -> Self {
        PassphraseSource::new(move |_| Ok(p.clone()))
    }

    /// Ask for the passphrase.
    pub fn get(&self, prompt: &str) -> Result<Passphrase> {
        (self.0)(prompt)
    }
}

impl fmt::Debug for PassphraseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PassphraseSource(..)")
    }
}

/// One key file of a repository in a key directory.
#[derive(Debug)]
pub struct KeyEntry {
    /// Its id: [`DEFAULT_ID`] or the part of its name between the repository id and `.key`.
    pub id: String,
    /// Its path.
    pub path: PathBuf,
    /// Its content, or why it cannot be read.
    pub file: Result<KeyFile>,
}

/// The key files of the repository of `config` in `dir`, the default one first, then by id.
pub fn list(dir: &Path, config: &Config) -> Result<Vec<KeyEntry>> {
    let prefix = format!("{}.", config.repo_id_hex());
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("cannot list the key directory", dir, e)),
    };
    for e in entries {
        let e = e.io_ctx("cannot list the key directory", dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix("key"))
        else {
            continue;
        };
        let id = match id.strip_suffix('.') {
            Some("") => continue,
            Some(id) => id.to_string(),
            None if id.is_empty() => DEFAULT_ID.to_string(),
            None => continue,
        };
        let path = e.path();
        let file = read_file(&path);
        out.push(KeyEntry { id, path, file });
    }
    out.sort_by(|a, b| (a.id != DEFAULT_ID, &a.id).cmp(&(b.id != DEFAULT_ID, &b.id)));
    Ok(out)
}

/// Write the first key file of the repository of `config` into `dir` durably (created 0700 if
/// missing), refusing to replace one: with `master` (the association's key, for a second
/// site), or a new random key. Returns the file and the key's fingerprint.
pub fn create(
    dir: &Path,
    config: &Config,
    master: Option<MasterKey>,
) -> Result<(PathBuf, Fingerprint)> {
    create_protected(dir, config, master, None)
}

/// [`create`], the key file wrapped by `passphrase` if given.
pub fn create_protected(
    dir: &Path,
    config: &Config,
    master: Option<MasterKey>,
    passphrase: Option<&Passphrase>,
) -> Result<(PathBuf, Fingerprint)> {
    let master = match master {
        Some(m) => m,
        None => MasterKey::generate()?,
    };
    let file = new_file(config, &master, passphrase, DEFAULT_ID)?;
    let path = path_of(dir, config, DEFAULT_ID);
    write_new(dir, &path, &file)?;
    Ok((path, master.fingerprint()))
}

/// A key file for the repository of `config` holding `master`, wrapped by `passphrase` if
/// given (Argon2id at RFC 9106's second recommended parameters), labelled `label`.
pub fn new_file(
    config: &Config,
    master: &MasterKey,
    passphrase: Option<&Passphrase>,
    label: &str,
) -> Result<KeyFile> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    match passphrase {
        None => Ok(KeyFile::plain(config.repo_id, master, &host, label)),
        Some(p) => KeyFile::with_passphrase(
            config.repo_id,
            master,
            p.as_bytes(),
            KdfParams::RFC9106_SECOND,
            &host,
            label,
        ),
    }
}

/// Add `file` to the key files of the repository of `config` in `dir`, under a new random id.
/// Returns the id and the path.
pub fn add(dir: &Path, config: &Config, file: &KeyFile) -> Result<(String, PathBuf)> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|e| Error::other(format!("no random source: {e}")))?;
    let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let path = path_of(dir, config, &id);
    write_new(dir, &path, file)?;
    Ok((id, path))
}

/// Replace the key file at `path` (in `dir`) with `file`, atomically: a crash leaves the old
/// file or the new one, never neither.
pub fn replace(dir: &Path, path: &Path, file: &KeyFile) -> Result<()> {
    write_key(dir, path, file)
}

/// Remove the key file `id` of the repository of `config` from `dir`, refusing when no other
/// key file there opens the key (it would be the last way to open the repository from here).
pub fn remove(dir: &Path, config: &Config, id: &str, e: &Encryption) -> Result<PathBuf> {
    let entries = list(dir, config)?;
    let Some(target) = entries.iter().find(|k| k.id == id) else {
        return Err(Error::not_found(format!(
            "no key '{id}' for this repository in {} (see `puce key list`)",
            dir.display()
        )));
    };
    let others = entries
        .iter()
        .filter(|k| k.id != id)
        .filter(|k| matches!(&k.file, Ok(f) if f.fingerprint == e.fingerprint))
        .count();
    if others == 0 {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "key '{id}' is the last key file of this repository in {}: removing it would \
                 lose the key. Add another first (`puce key add`), or export it (`puce key \
                 export --paper`) and keep the sheet",
                dir.display()
            ),
        ));
    }
    std::fs::remove_file(&target.path).io_ctx("cannot remove key file", &target.path)?;
    crate::fsutil::sync_dir(dir)?;
    Ok(target.path.clone())
}

fn write_new(dir: &Path, path: &Path, file: &KeyFile) -> Result<()> {
    crate::fsutil::create_dir_durable(dir)?;
    if path.exists() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("a key file already exists at {}", path.display()),
        ));
    }
    write_key(dir, path, file)
}

/// Write a key file: a temporary file in `dir`, written and fsynced, renamed to `path`, the
/// directory fsynced.
fn write_key(dir: &Path, path: &Path, file: &KeyFile) -> Result<()> {
    let tmp = dir.join(crate::fsutil::temp_name("key-"));
    let mut bytes = file.encode()?;
    let res = crate::fsutil::private_file()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_all()))
        .io_ctx("cannot write key file", &tmp);
    bytes.zeroize();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    pause_for_tests(&tmp)?;
    crate::fsutil::publish(&tmp, path)
}

/// Test hook, in debug builds only: with `PUCE_TEST_KEY_PAUSE=DIR`, a key change creates
/// `DIR/paused` once its new file is written and fsynced, before renaming it into place, and
/// waits (up to 10 minutes) for `DIR/resume`. The crash test kills the process there.
fn pause_for_tests(tmp: &Path) -> Result<()> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    let Some(dir) = std::env::var_os("PUCE_TEST_KEY_PAUSE") else {
        return Ok(());
    };
    let dir = PathBuf::from(dir);
    let paused = dir.join("paused");
    std::fs::write(&paused, tmp.as_os_str().as_encoded_bytes()).io_ctx("cannot create", &paused)?;
    let start = std::time::Instant::now();
    while !dir.join("resume").exists() {
        if start.elapsed() > std::time::Duration::from_secs(600) {
            return Err(Error::other(
                "test hook PUCE_TEST_KEY_PAUSE: no resume within 10 minutes",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// The largest key file read: a real one is a few hundred bytes, and whatever path is given
/// (`/dev/zero`, a huge file) must not make puce allocate without bound.
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// Read up to `max` bytes of the file at `path`; a larger file is refused, naming `what`.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .io_ctx(&format!("cannot read the {what}"), path)?;
    if bytes.len() as u64 > max {
        bytes.zeroize();
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "{} is not a {what}: larger than {max} bytes",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

/// Read and decode the key file at `path`, without opening it.
pub fn read_file(path: &Path) -> Result<KeyFile> {
    let mut bytes = read_bounded(path, MAX_KEY_FILE, "key file")?;
    let file = KeyFile::decode(&bytes).map_err(|err| err.context(path.display().to_string()));
    bytes.zeroize();
    file
}

/// The master key in the plain key file at `path` (a key file of any repository of the
/// association); a protected one is refused (see [`read_master_with`]).
pub fn read_master(path: &Path) -> Result<MasterKey> {
    read_master_with(path, None)
}

/// The master key in the key file at `path`, asking `passphrase` if the file is protected.
pub fn read_master_with(path: &Path, passphrase: Option<&PassphraseSource>) -> Result<MasterKey> {
    let file = read_file(path)?;
    open_file(&file, path, passphrase)
}

fn open_file(
    file: &KeyFile,
    path: &Path,
    passphrase: Option<&PassphraseSource>,
) -> Result<MasterKey> {
    let p = match (file.needs_passphrase(), passphrase) {
        (false, _) => None,
        (true, Some(source)) => Some(source.get(&format!(
            "passphrase of key '{}' ({})",
            file.label,
            path.display()
        ))?),
        (true, None) => {
            return Err(Error::new(
                ErrorKind::Key,
                format!(
                    "{}: key '{}' is protected by a passphrase, and none can be asked for here",
                    path.display(),
                    file.label
                ),
            ));
        }
    };
    file.open(p.as_ref().map(Passphrase::as_bytes))
        .map_err(|err| err.context(path.display().to_string()))
}

/// Read the key file at `path` for the repository encrypted as `e` (any key file holding the
/// association's key will do: the key is the association's, not one repository's).
pub fn read(
    path: &Path,
    e: &Encryption,
    passphrase: Option<&PassphraseSource>,
) -> Result<MasterKey> {
    check_fingerprint(read_master_with(path, passphrase)?, e, path)
}

fn check_fingerprint(master: MasterKey, e: &Encryption, path: &Path) -> Result<MasterKey> {
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

/// The keys of the encrypted repository of `config`: see [`find_master`].
pub fn find(config: &Config, e: &Encryption, opts: &OpenOptions) -> Result<Keys> {
    find_master(config, e, opts).map(|m| Keys::derive(&m))
}

/// The master key of the encrypted repository of `config`: from the first of `opts.key_files`,
/// else from a plain key file in `opts.key_dir`, else from a passphrase-protected one there,
/// with the passphrase asked once from `opts.passphrase`.
pub fn find_master(config: &Config, e: &Encryption, opts: &OpenOptions) -> Result<MasterKey> {
    let source = opts.passphrase.as_ref();
    if let Some(path) = opts.key_files.first() {
        return read(path, e, source);
    }
    let Some(dir) = &opts.key_dir else {
        return Err(not_found(e, &[]));
    };
    let entries = list(dir, config)?;
    let mut problems = Vec::new();
    let mut protected = Vec::new();
    for k in &entries {
        match &k.file {
            Err(err) => problems.push(err.to_string()),
            Ok(f) if f.fingerprint != e.fingerprint => problems.push(format!(
                "{} holds another key ({})",
                k.path.display(),
                f.fingerprint
            )),
            Ok(f) if f.needs_passphrase() => protected.push((k, f)),
            Ok(f) => match open_file(f, &k.path, None) {
                Ok(m) => return Ok(m),
                Err(err) => problems.push(err.to_string()),
            },
        }
    }
    if protected.is_empty() {
        let mut tried = problems;
        if entries.is_empty() {
            tried.push(format!(
                "no key file {} in {}",
                file_name(config),
                dir.display()
            ));
        }
        return Err(not_found(e, &tried));
    }
    let Some(source) = source else {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "the key of this repository is protected by a passphrase ({}), and none can be \
                 asked for here",
                dir.display()
            ),
        ));
    };
    let p = source.get(&format!(
        "passphrase of repository {} (key {})",
        config.repo_id_hex(),
        e.fingerprint
    ))?;
    for (k, f) in &protected {
        match f.open(Some(p.as_bytes())) {
            Ok(m) => return Ok(m),
            Err(err) if err.kind() == ErrorKind::Key => {}
            Err(err) => problems.push(format!("{}: {err}", k.path.display())),
        }
    }
    let ids: Vec<&str> = protected.iter().map(|(k, _)| k.id.as_str()).collect();
    let mut msg = format!(
        "wrong passphrase: it opens none of the {} passphrase-protected key(s) of this \
         repository in {} (ids: {})",
        protected.len(),
        dir.display(),
        ids.join(", ")
    );
    if !problems.is_empty() {
        msg.push_str(&format!("; also: {}", problems.join("; ")));
    }
    Err(Error::new(ErrorKind::Key, msg))
}

fn not_found(e: &Encryption, tried: &[String]) -> Error {
    Error::new(
        ErrorKind::Key,
        format!(
            "the repository is encrypted and its key (fingerprint {}) was not found{}: give its \
             key file with --key-file or PUCE_KEY_FILE (the copy you kept when the repository \
             was made), or bring it back from a recovery sheet or shares with `puce key import`",
            e.fingerprint,
            if tried.is_empty() {
                String::new()
            } else {
                format!(" ({})", tried.join("; "))
            }
        ),
    )
}

/// The file recording that the key of the repository of `config` was exported.
fn export_record(dir: &Path, config: &Config) -> PathBuf {
    dir.join(format!("{}.exported", config.repo_id_hex()))
}

/// Whether the key of the repository of `config` was exported at least once from this machine
/// (a recovery sheet printed or shares made), as recorded in the key directory `dir`. Blind
/// holders get nothing before: a key only this machine has would make their copies useless.
pub fn exported(dir: &Path, config: &Config) -> bool {
    export_record(dir, config).is_file()
}

/// Record in `dir` that the key of the repository of `config` was exported as `how` (one line
/// appended, with the time), durably.
pub fn record_export(dir: &Path, config: &Config, how: &str) -> Result<()> {
    let path = export_record(dir, config);
    let mut text = match std::fs::read(&path) {
        Ok(b) if b.len() < 64 * 1024 => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    let now = jiff::Timestamp::now();
    text.push_str(&format!("{} {how}\n", now.strftime("%Y-%m-%dT%H:%M:%SZ")));
    crate::fsutil::create_dir_durable(dir)?;
    crate::fsutil::write_atomic(&path, dir, text.as_bytes())
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
