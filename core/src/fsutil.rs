//! File-system helpers: durable publication and small conveniences.
//!
//! Every file and directory a repository writes is private to its owner: files are created
//! with mode [`FILE_MODE`], directories with [`DIR_MODE`] (the umask can only remove bits).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Mode of the files puce creates in a repository, its caches and its write-back area.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the directories puce creates there.
pub const DIR_MODE: u32 = 0o700;

/// Options that create files with mode [`FILE_MODE`]; set the access mode and creation flags
/// as with [`OpenOptions::new`].
pub fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Create one directory with mode [`DIR_MODE`] (its parent must exist).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(dir)
}

/// Create a directory and its missing parents with mode [`DIR_MODE`], without fsync (for
/// caches; [`create_dir_durable`] for repository directories).
pub fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// fsync a directory, making the creation, rename or removal of its entries durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .io_ctx("cannot fsync directory", dir)
}

/// A random name for a temporary file.
pub fn temp_name(prefix: &str) -> String {
    let mut b = [0u8; 12];
    // A failure of the OS random source leaves zeros; the pid and time keep names apart.
    let _ = getrandom::fill(&mut b);
    let r: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{}-{r}.tmp", std::process::id())
}

/// Write `data` to `path` durably and atomically: write a temporary file in `tmp_dir`, fsync
/// it, rename it over `path`, fsync the directory of `path`.
pub fn write_atomic(path: &Path, tmp_dir: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_dir.join(temp_name("w"));
    let mut f = private_file()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .io_ctx("cannot create temporary file", &tmp)?;
    let res = f
        .write_all(data)
        .and_then(|_| f.sync_all())
        .io_ctx("cannot write", &tmp);
    drop(f);
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    publish(&tmp, path)
}

/// Rename a finished, fsynced temporary file to `path` and fsync the target directory.
pub fn publish(tmp: &Path, path: &Path) -> Result<()> {
    let dir = parent(path);
    if let Err(e) = fs::rename(tmp, path) {
        if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() {
            create_dir_durable(&dir)?;
            fs::rename(tmp, path).io_ctx("cannot publish", path)?;
        } else {
            let _ = fs::remove_file(tmp);
            return Err(crate::Error::io("cannot publish", path, e));
        }
    }
    sync_dir(&dir)
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Create a directory and its parents (mode [`DIR_MODE`]), fsyncing each created level's
/// parent.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let p = parent(dir);
    if !p.is_dir() {
        create_dir_durable(&p)?;
    }
    match create_private_dir(dir) {
        Ok(()) => sync_dir(&p),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(crate::Error::io("cannot create directory", dir, e)),
    }
}
