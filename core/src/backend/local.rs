//! The local directory backend, the default.
//!
//! Layout under the repository directory: `config`, `packs/XX/<id>` (XX: first two hex digits),
//! `snapshots/<id>`, `spaces/<name>`, and `tmp/` for files being written. A file is written in
//! `tmp/`, fsynced, renamed into place and its directory fsynced before the write returns.
//! Files are created with mode 0600 and directories with 0700 ([`fsutil::FILE_MODE`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Backend, FileKind, ObjectWriter};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;

/// How many pack files are kept open for reading.
const OPEN_FILES: usize = 64;
/// Largest range of one read-ahead hint to the kernel (see `will_need`).
const HINT_PIECE: u64 = 1 << 20;

/// Files in a local directory.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    open: Mutex<OpenFiles>,
}

#[derive(Debug, Default)]
struct OpenFiles {
    tick: u64,
    files: HashMap<PathBuf, (Arc<File>, u64)>,
}

impl LocalBackend {
    /// A backend over `root`, creating its subdirectories if needed.
    pub fn open(root: &Path) -> Result<LocalBackend> {
        for d in ["packs", "snapshots", "spaces", "receipts", "forgets", "tmp"] {
            fsutil::create_dir_durable(&root.join(d))?;
        }
        Ok(LocalBackend {
            root: root.to_path_buf(),
            open: Mutex::new(OpenFiles::default()),
        })
    }

    /// The path of a file.
    pub fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        file_path(&self.root, kind, name)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn handle(&self, path: &Path) -> Result<Arc<File>> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| Error::other("file cache lock poisoned"))?;
        open.tick += 1;
        let tick = open.tick;
        if let Some((f, t)) = open.files.get_mut(path) {
            *t = tick;
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(path).io_ctx("cannot open", path)?);
        if open.files.len() >= OPEN_FILES
            && let Some(old) = open
                .files
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(p, _)| p.clone())
        {
            open.files.remove(&old);
        }
        open.files.insert(path.to_path_buf(), (f.clone(), tick));
        Ok(f)
    }

    fn forget_handle(&self, path: &Path) {
        if let Ok(mut open) = self.open.lock() {
            open.files.remove(path);
        }
    }
}

/// The path of a file of `kind` named `name` under `root`.
fn file_path(root: &Path, kind: FileKind, name: &str) -> PathBuf {
    match kind {
        FileKind::Config => root.join("config"),
        FileKind::Pack => {
            let sub = name.get(..2).unwrap_or("00");
            root.join("packs").join(sub).join(name)
        }
        k => root.join(k.dir()).join(name),
    }
}

/// A repository file's name is one path component ([`crate::paths::check_name`]).
fn check_name(name: &str) -> Result<()> {
    crate::paths::check_name(name.as_bytes())
        .map_err(|_| Error::invalid(format!("invalid file name {name:?}")))
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        check_name(name)?;
        let p = self.path(kind, name);
        fs::read(&p).io_ctx("cannot read", &p)
    }

    fn read_at(&self, kind: FileKind, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_name(name)?;
        let p = self.path(kind, name);
        let f = self.handle(&p)?;
        match f.read_exact_at(buf, offset) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.forget_handle(&p);
                let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::corrupt(format!(
                        "{} is shorter than expected: cannot read {} bytes at offset {offset} \
                         (truncated file)",
                        p.display(),
                        buf.len()
                    ))
                } else {
                    Error::io("cannot read", &p, e)
                };
                Err(e)
            }
        }
    }

    fn read_vec(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        check_name(name)?;
        let p = self.path(kind, name);
        let f = self.handle(&p)?;
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = offset + buf.len() as u64;
            // Fills the spare capacity (exactly `len - buf.len()` bytes for a fresh buffer).
            match rustix::io::pread(&*f, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => {
                    self.forget_handle(&p);
                    return Err(Error::corrupt(format!(
                        "{} is shorter than expected: cannot read {len} bytes at offset {offset} \
                         (truncated file)",
                        p.display()
                    )));
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    self.forget_handle(&p);
                    return Err(Error::io("cannot read", &p, io::Error::from(e)));
                }
            }
        }
        buf.truncate(len);
        Ok(buf)
    }

    fn read_ranges_into(
        &self,
        kind: FileKind,
        name: &str,
        ranges: &[(u64, usize)],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        check_name(name)?;
        let p = self.path(kind, name);
        // A file of its own: its position is this call's (the cached handles are shared).
        let mut f = File::open(&p).io_ctx("cannot open", &p)?;
        out.reserve(ranges.iter().map(|r| r.1).sum());
        for &(offset, len) in ranges {
            f.seek(io::SeekFrom::Start(offset))
                .io_ctx("cannot read", &p)?;
            // `read_to_end` fills the spare capacity directly; `take` stops it at `len`.
            let n = (&mut f)
                .take(len as u64)
                .read_to_end(out)
                .io_ctx("cannot read", &p)?;
            if n != len {
                return Err(Error::corrupt(format!(
                    "{} is shorter than expected: cannot read {len} bytes at offset {offset} \
                     (truncated file)",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    fn will_need(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) {
        if check_name(name).is_err() {
            return;
        }
        let Ok(f) = self.handle(&self.path(kind, name)) else {
            return;
        };
        for &(offset, len) in ranges {
            // The kernel starts reading and returns; pages already cached cost nothing. It
            // reads at most the device's read-ahead or I/O size per call (128 KiB to a few
            // MiB): long ranges are asked for in pieces.
            let end = offset.saturating_add(len as u64);
            let mut at = offset;
            while at < end {
                let n = (end - at).min(HINT_PIECE);
                let _ = rustix::fs::fadvise(
                    &*f,
                    at,
                    std::num::NonZeroU64::new(n),
                    rustix::fs::Advice::WillNeed,
                );
                at += n;
            }
        }
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        check_name(name)?;
        let p = self.path(kind, name);
        fs::metadata(&p).map(|m| m.len()).io_ctx("cannot stat", &p)
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        check_name(name)?;
        let p = self.path(kind, name);
        fsutil::write_atomic(&p, &self.tmp_dir(), data)
    }

    fn create(&self, kind: FileKind) -> Result<Box<dyn ObjectWriter>> {
        let tmp = self.tmp_dir().join(fsutil::temp_name("p"));
        let f = fsutil::private_file()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .io_ctx("cannot create temporary file", &tmp)?;
        Ok(Box::new(LocalWriter {
            file: Some(BufWriter::with_capacity(1 << 20, f)),
            tmp,
            kind,
            backend_root: self.root.clone(),
        }))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let dir = self.root.join(kind.dir());
        if kind == FileKind::Config {
            let p = self.path(kind, "config");
            if let Ok(m) = fs::metadata(&p) {
                out.push(("config".to_string(), m.len()));
            }
            return Ok(out);
        }
        let mut dirs = vec![dir.clone()];
        if kind == FileKind::Pack {
            dirs.clear();
            match fs::read_dir(&dir) {
                Ok(rd) => {
                    for e in rd {
                        let e = e.io_ctx("cannot list", &dir)?;
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            dirs.push(e.path());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("cannot list", &dir, e)),
            }
        }
        for d in dirs {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("cannot list", &d, e)),
            };
            for e in rd {
                let e = e.io_ctx("cannot list", &d)?;
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                if name.ends_with(".tmp") {
                    continue;
                }
                let md = e.metadata().io_ctx("cannot stat", &e.path())?;
                if md.is_file() {
                    out.push((name, md.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        check_name(name)?;
        let p = self.path(kind, name);
        self.forget_handle(&p);
        match fs::remove_file(&p) {
            Ok(()) => {
                if let Some(d) = p.parent() {
                    fsutil::sync_dir(d)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot remove", &p, e)),
        }
    }
}

struct LocalWriter {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    kind: FileKind,
    backend_root: PathBuf,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("writer already finished")),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.write_all(buf),
            None => Err(io::Error::other("writer already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl ObjectWriter for LocalWriter {
    fn finish(mut self: Box<Self>, name: &str) -> Result<()> {
        check_name(name)?;
        let Some(w) = self.file.take() else {
            return Err(Error::other("writer already finished"));
        };
        let res = w
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .io_ctx("cannot write", &self.tmp);
        if let Err(e) = res {
            let _ = fs::remove_file(&self.tmp);
            return Err(e);
        }
        let dest = file_path(&self.backend_root, self.kind, name);
        fsutil::publish(&self.tmp, &dest)
    }

    fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Bytes of `p` in the page cache, from util-linux's `fincore` (`None` without it).
    fn resident(p: &Path) -> Option<u64> {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(p)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    }

    /// A hint has the kernel read the hinted ranges of a pack into its page cache, and only
    /// them; a hint naming a missing file or a bad name is dropped quietly.
    #[test]
    fn will_need_reads_the_ranges_into_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::open(dir.path()).unwrap();
        let name = "ab".repeat(32);
        b.write(FileKind::Pack, &name, &vec![7u8; 8 << 20]).unwrap();
        let p = b.path(FileKind::Pack, &name);
        // Written durably, so clean: the kernel can drop its pages.
        rustix::fs::fadvise(
            File::open(&p).unwrap(),
            0,
            None,
            rustix::fs::Advice::DontNeed,
        )
        .unwrap();
        let Some(before) = resident(&p) else {
            eprintln!("no fincore: skipped");
            return;
        };
        if before > 1 << 20 {
            eprintln!("this file system keeps files in memory (tmpfs?): skipped");
            return;
        }
        b.will_need(
            FileKind::Pack,
            &name,
            &[(1 << 20, 3 << 20), (6 << 20, 1 << 20)],
        );
        let mut res = 0;
        for _ in 0..100 {
            res = resident(&p).unwrap();
            if res >= 4 << 20 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            (4 << 20..8 << 20).contains(&res),
            "{res} bytes in the page cache after hinting 4 MiB of 8 (from {before})"
        );
        b.will_need(FileKind::Pack, &"cd".repeat(32), &[(0, 10)]);
        b.will_need(FileKind::Pack, "../x", &[(0, 10)]);
    }
}
