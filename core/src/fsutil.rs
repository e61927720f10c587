//! File-system helpers: durable publication and small conveniences.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

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
    let mut f = OpenOptions::new()
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
            fs::create_dir_all(&dir).io_ctx("cannot create directory", &dir)?;
            sync_dir(&parent(&dir))?;
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

/// Create a directory and its parents, fsyncing each created level's parent.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let p = parent(dir);
    if !p.is_dir() {
        create_dir_durable(&p)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(&p),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(crate::Error::io("cannot create directory", dir, e)),
    }
}
