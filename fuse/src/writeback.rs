//! The write-back area: where changes made through the mount wait to be committed.
//!
//! Layout, under `REPO/writeback/` (see `docs/fuse-semantics.md`):
//! - `lock`: held with `flock` by the one read-write mount of the repository;
//!   `owner` says which process and mount point hold it.
//! - `data/<16 hex digits>`: the content of a changed file (a *local* file of the space's
//!   edit tree), written in place by `write(2)` through the mount.
//! - `journals/<hex of the space name>`: the edits of one space since its last commit.
//!
//! Everything here is private to the owner (files 0600, directories 0700), whatever the mode
//! of the file in the mount: a local file's mode is metadata in the edit tree.
//!
//! Journal format (little-endian): a header `"PUCEJRNL"`, version `1`, the base snapshot id
//! (32 bytes, all zero for a space with no snapshot yet), the space name (`u16` length, UTF-8
//! bytes); then records, each `len: u32`, `check: u32` (the first four bytes of the BLAKE3
//! hash of the payload, little-endian), and `len` bytes of payload: one
//! [`puce_core::snapshot::edit::Edit`] in postcard. A torn or damaged tail (a crash during an
//! append) ends the journal: the records before it are kept.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use puce_core::hash::Hash;
use puce_core::snapshot::edit::Edit;
use puce_core::{Error, Result, SnapshotId};
use rustix::fs::FlockOperation;

/// Magic at the start of a journal.
pub const MAGIC: &[u8; 8] = b"PUCEJRNL";
/// Journal format version.
pub const VERSION: u8 = 1;
/// Largest record accepted when reading (an edit is small; this bounds memory on garbage).
const MAX_RECORD: u32 = 1 << 20;

fn io(action: &str, p: &Path, e: std::io::Error) -> Error {
    Error::io(action, p, e)
}

/// How many empty local files are kept ready for `create` (see [`Writeback::start_spares`]).
const SPARES: usize = 64;
/// Below this many, the spare-file thread makes more.
const SPARES_LOW: usize = SPARES / 2;

/// Local files a sweep must not delete, and the spare files.
#[derive(Debug, Default)]
struct Pool {
    /// Local files created (or taken from the spares) since the last
    /// [`Writeback::begin_sweep`]: a sweep never deletes them (they may belong to an operation
    /// that ran after the sweep looked at the spaces).
    created: HashSet<u64>,
    /// Spare files, being created or ready; a sweep never deletes them.
    reserved: HashSet<u64>,
    /// Ready spare files: empty, open for reading and writing.
    spares: Vec<(u64, File)>,
    /// The write-back area is closing: the spare-file thread ends.
    stop: bool,
}

/// What the write-back area shares with its spare-file thread.
#[derive(Debug)]
struct Shared {
    data: PathBuf,
    pool: Mutex<Pool>,
    /// Wakes the spare-file thread.
    low: Condvar,
}

impl Shared {
    fn data_path(&self, id: u64) -> PathBuf {
        self.data.join(format!("{id:016x}"))
    }
}

fn random_id() -> Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::other(format!("no random source: {e}")))?;
    Ok(u64::from_le_bytes(b) >> 1)
}

fn create_new(p: &Path) -> std::io::Result<File> {
    puce_core::fsutil::private_file()
        .read(true)
        .write(true)
        .create_new(true)
        .open(p)
}

/// The write-back area of a repository, locked for this process.
#[derive(Debug)]
pub struct Writeback {
    dir: PathBuf,
    _lock: File,
    shared: Arc<Shared>,
}

impl Writeback {
    /// Open (creating) `REPO/writeback` and lock it. Fails with a clear message if another
    /// read-write mount holds it.
    pub fn open(repo_root: &Path, mountpoint: &Path) -> Result<Writeback> {
        let dir = repo_root.join("writeback");
        for d in [dir.clone(), dir.join("data"), dir.join("journals")] {
            puce_core::fsutil::create_dir_durable(&d)?;
        }
        let lock_path = dir.join("lock");
        let lock = puce_core::fsutil::private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot create", &lock_path, e))?;
        if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            let owner = fs::read_to_string(dir.join("owner")).unwrap_or_default();
            return Err(Error::new(
                puce_core::ErrorKind::Busy,
                format!(
                    "another read-write puce mount of this repository is running ({}): stop it \
                     first, or mount with --read-only",
                    owner.trim()
                ),
            ));
        }
        let owner = format!("pid {} at {}\n", std::process::id(), mountpoint.display());
        let _ = puce_core::fsutil::private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("owner"))
            .and_then(|mut f| f.write_all(owner.as_bytes()));
        Ok(Writeback {
            shared: Arc::new(Shared {
                data: dir.join("data"),
                pool: Mutex::new(Pool::default()),
                low: Condvar::new(),
            }),
            dir,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the content of local file `id` is.
    pub fn data_path(&self, id: u64) -> PathBuf {
        self.shared.data_path(id)
    }

    /// A new, empty local file: its number and the open file. Taken from the spare files when
    /// there is one (its modification time is then when it was made: set it), else created.
    pub fn new_local(&self) -> Result<(u64, File)> {
        if let Ok(mut p) = self.shared.pool.lock() {
            let spare = p.spares.pop();
            if p.spares.len() < SPARES_LOW {
                self.shared.low.notify_one();
            }
            if let Some((id, f)) = spare {
                // Young from now on, before it stops being reserved: no sweep can miss it.
                p.created.insert(id);
                p.reserved.remove(&id);
                return Ok((id, f));
            }
        }
        loop {
            let id = random_id()?;
            // Noted before the file exists, so that a sweep listing the directory now keeps it.
            if let Ok(mut p) = self.shared.pool.lock() {
                p.created.insert(id);
            }
            let p = self.data_path(id);
            match create_new(&p) {
                Ok(f) => return Ok((id, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("cannot create", &p, e)),
            }
        }
    }

    /// Start the thread that keeps spare local files ready, so that `create` through the mount
    /// does not wait for the write-back disk to create a file (it ends when `self` is dropped).
    pub fn start_spares(&self) -> Result<()> {
        let sh = self.shared.clone();
        std::thread::Builder::new()
            .name("puce-spares".into())
            .spawn(move || spares_loop(&sh))
            .map(|_| ())
            .map_err(|e| Error::other("cannot start a thread").with_source(e))
    }

    /// Open local file `id` for reading and writing.
    pub fn open_local(&self, id: u64) -> Result<File> {
        let p = self.data_path(id);
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| io("cannot open", &p, e))
    }

    /// The journal file of `space`.
    pub fn journal_path(&self, space: &str) -> PathBuf {
        let hex: String = space.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join("journals").join(hex)
    }

    /// Every journal left in the area: `(path, contents)`.
    pub fn journals(&self) -> Result<Vec<(PathBuf, JournalContents)>> {
        let d = self.dir.join("journals");
        let mut out = Vec::new();
        for e in fs::read_dir(&d).map_err(|e| io("cannot list", &d, e))? {
            let e = e.map_err(|e| io("cannot list", &d, e))?;
            let p = e.path();
            if p.extension().is_some() {
                continue; // temporary files
            }
            match read_journal(&p) {
                Ok(c) => out.push((p, c)),
                Err(err) => tracing::error!("{err:#}"),
            }
        }
        Ok(out)
    }

    /// Start a sweep: call this before collecting the ids to keep, then [`Writeback::sweep`].
    /// Files created from now on are kept by that sweep whatever `keep` says.
    pub fn begin_sweep(&self) {
        if let Ok(mut p) = self.shared.pool.lock() {
            p.created.clear();
        }
    }

    /// Delete the local files neither in `keep` nor created since [`Writeback::begin_sweep`]
    /// (nor spare).
    pub fn sweep(&self, keep: &HashSet<u64>) {
        let d = &self.shared.data;
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| u64::from_str_radix(n, 16).ok()) else {
                continue;
            };
            let young = self
                .shared
                .pool
                .lock()
                .map(|p| p.created.contains(&id) || p.reserved.contains(&id))
                .unwrap_or(true);
            if !keep.contains(&id) && !young {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        let spares = match self.shared.pool.lock() {
            Ok(mut p) => {
                p.stop = true;
                std::mem::take(&mut p.spares)
            }
            Err(_) => Vec::new(),
        };
        self.shared.low.notify_all();
        for (id, _) in spares {
            let _ = fs::remove_file(self.shared.data_path(id));
        }
    }
}

/// The spare-file thread: whenever fewer than [`SPARES_LOW`] spare files are ready, make
/// [`SPARES`] of them.
fn spares_loop(sh: &Shared) {
    let Ok(mut p) = sh.pool.lock() else { return };
    loop {
        while !p.stop && p.spares.len() >= SPARES_LOW {
            p = match sh.low.wait(p) {
                Ok(p) => p,
                Err(_) => return,
            };
        }
        while !p.stop && p.spares.len() < SPARES {
            let Ok(id) = random_id() else { return };
            if p.created.contains(&id) || !p.reserved.insert(id) {
                continue;
            }
            drop(p);
            let path = sh.data_path(id);
            let made = create_new(&path);
            p = match sh.pool.lock() {
                Ok(p) => p,
                Err(_) => return,
            };
            match made {
                Ok(f) if !p.stop => p.spares.push((id, f)),
                Ok(_) => {
                    p.reserved.remove(&id);
                    let _ = fs::remove_file(&path);
                }
                Err(e) => {
                    p.reserved.remove(&id);
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        // `create` makes its files itself meanwhile, and reports the error.
                        tracing::debug!("cannot create spare file {}: {e}", path.display());
                        break;
                    }
                }
            }
        }
        if p.stop {
            return;
        }
        if p.spares.len() < SPARES_LOW {
            // Creation failed: try again later, not in a loop.
            drop(p);
            std::thread::sleep(std::time::Duration::from_secs(1));
            p = match sh.pool.lock() {
                Ok(p) => p,
                Err(_) => return,
            };
        }
    }
}

/// What a journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalContents {
    /// The space.
    pub space: String,
    /// The snapshot the edits apply to (`None`: a new space).
    pub base: Option<SnapshotId>,
    /// The edits, in order.
    pub edits: Vec<Edit>,
    /// Whether a damaged tail was dropped.
    pub torn: bool,
}

/// The header bytes of a journal.
pub fn encode_header(space: &str, base: Option<&SnapshotId>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend_from_slice(base.map(|b| b.0.0).unwrap_or([0u8; 32]).as_slice());
    let name = space.as_bytes();
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
    out
}

/// One record's bytes.
pub fn encode_record(edit: &Edit) -> Result<Vec<u8>> {
    let payload = postcard::to_stdvec(edit)
        .map_err(|e| Error::other("cannot encode a journal record").with_source(e))?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&Hash::of(&payload).0[..4]);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Parse a journal's bytes.
pub fn decode_journal(bytes: &[u8], what: &Path) -> Result<JournalContents> {
    let bad = |m: &str| Error::corrupt(format!("journal {}: {m}", what.display()));
    if bytes.len() < 43 || &bytes[..8] != MAGIC {
        return Err(bad("not a puce journal (bad magic)"));
    }
    if bytes[8] != VERSION {
        return Err(if bytes[8] > VERSION {
            Error::new(
                puce_core::ErrorKind::UnsupportedVersion,
                format!(
                    "journal {} has version {}, this puce reads {VERSION}: upgrade puce",
                    what.display(),
                    bytes[8]
                ),
            )
        } else {
            bad("invalid version")
        });
    }
    let mut base = [0u8; 32];
    base.copy_from_slice(&bytes[9..41]);
    let base = (base != [0u8; 32]).then_some(SnapshotId(Hash(base)));
    let nlen = u16::from_le_bytes([bytes[41], bytes[42]]) as usize;
    let Some(name) = bytes.get(43..43 + nlen) else {
        return Err(bad("truncated header"));
    };
    let space = String::from_utf8(name.to_vec()).map_err(|_| bad("space name is not UTF-8"))?;
    let mut pos = 43 + nlen;
    let mut edits = Vec::new();
    let mut torn = false;
    while pos < bytes.len() {
        let Some(h) = bytes.get(pos..pos + 8) else {
            torn = true;
            break;
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let Some(payload) = bytes.get(pos + 8..pos + 8 + len as usize) else {
            torn = true;
            break;
        };
        if len > MAX_RECORD || Hash::of(payload).0[..4] != h[4..8] {
            torn = true;
            break;
        }
        match postcard::from_bytes::<Edit>(payload) {
            Ok(e) => edits.push(e),
            Err(_) => {
                torn = true;
                break;
            }
        }
        pos += 8 + len as usize;
    }
    Ok(JournalContents {
        space,
        base,
        edits,
        torn,
    })
}

/// Read a journal file.
pub fn read_journal(path: &Path) -> Result<JournalContents> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io("cannot read", path, e))?;
    decode_journal(&bytes, path)
}

/// An open journal, appended to as edits happen.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Write a new journal durably (temporary file, fsync, rename, fsync the directory),
    /// replacing any previous one.
    pub fn create(
        path: &Path,
        space: &str,
        base: Option<&SnapshotId>,
        edits: &[Edit],
    ) -> Result<Journal> {
        let tmp = path.with_extension("tmp");
        let mut bytes = encode_header(space, base);
        for e in edits {
            bytes.extend(encode_record(e)?);
        }
        let mut f = puce_core::fsutil::private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io("cannot create", &tmp, e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io("cannot write", &tmp, e))?;
        drop(f);
        puce_core::fsutil::publish(&tmp, path)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io("cannot open", path, e))?;
        Ok(Journal {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Append one edit (one `write(2)`; durable against a crash of this process at once, and
    /// against power loss after [`Journal::sync`]).
    pub fn append(&mut self, edit: &Edit) -> Result<()> {
        let rec = encode_record(edit)?;
        self.file
            .write_all(&rec)
            .map_err(|e| io("cannot append to", &self.path, e))
    }

    /// fsync.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| io("cannot fsync", &self.path, e))
    }

    /// Delete the journal (everything in it is committed).
    pub fn remove(self) -> Result<()> {
        let dir = self.path.parent().map(Path::to_path_buf);
        fs::remove_file(&self.path).map_err(|e| io("cannot remove", &self.path, e))?;
        if let Some(d) = dir {
            puce_core::fsutil::sync_dir(&d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use puce_core::format::hexdump;
    use puce_core::snapshot::edit::Meta;

    fn sample() -> Edit {
        Edit::Remove {
            path: b"a".to_vec(),
            dir: false,
            time_ns: 2,
        }
    }

    /// Golden: a journal with a base, one space name and one record, annotated.
    #[test]
    fn golden_journal() {
        let base = SnapshotId(Hash([0xab; 32]));
        let mut bytes = encode_header("d", Some(&base));
        bytes.extend(encode_record(&sample()).unwrap());
        let expect = [
            "505543454a524e",                                            // "PUCEJRN"
            "4c",                                                        // "L"
            "01",                                                        // version 1
            &"ab".repeat(32),                                            // base snapshot id
            "0100",                                                      // space name length 1
            "64",                                                        // "d"
            "05000000",                                                  // record: payload length 5
            &hexdump(&Hash::of(&[0x04, 0x01, 0x61, 0x00, 0x04]).0[..4]), // check
            "04",                                                        // Edit::Remove
            "0161",                                                      // path "a"
            "00",                                                        // dir: false
            "04",                                                        // time 2 (zigzag)
        ]
        .concat();
        assert_eq!(hexdump(&bytes), expect);
        let c = decode_journal(&bytes, Path::new("j")).unwrap();
        assert_eq!(c.space, "d");
        assert_eq!(c.base, Some(base));
        assert_eq!(c.edits, vec![sample()]);
        assert!(!c.torn);
    }

    #[test]
    fn torn_tail_keeps_the_good_records() {
        let mut bytes = encode_header("s", None);
        let m = Meta {
            mode: 0o755,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
        };
        let e1 = Edit::Mkdir {
            path: b"x".to_vec(),
            meta: m,
            time_ns: 1,
        };
        bytes.extend(encode_record(&e1).unwrap());
        let good = bytes.len();
        bytes.extend(encode_record(&sample()).unwrap());
        for cut in good..bytes.len() {
            let c = decode_journal(&bytes[..cut], Path::new("j")).unwrap();
            assert_eq!(c.edits, vec![e1.clone()]);
            assert_eq!(c.torn, cut > good);
            assert_eq!(c.base, None);
        }
        // A flipped byte in the last record drops that record only.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert_eq!(
            decode_journal(&bad, Path::new("j")).unwrap().edits,
            vec![e1]
        );
        // Garbage and newer versions are errors, not panics.
        assert!(decode_journal(b"junk", Path::new("j")).is_err());
        let mut newer = bytes.clone();
        newer[8] = 9;
        assert_eq!(
            decode_journal(&newer, Path::new("j")).unwrap_err().kind(),
            puce_core::ErrorKind::UnsupportedVersion
        );
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let a = Writeback::open(d.path(), Path::new("/mnt/a")).unwrap();
        let err = Writeback::open(d.path(), Path::new("/mnt/b")).unwrap_err();
        assert!(format!("{err}").contains("/mnt/a"), "{err}");
        drop(a);
        Writeback::open(d.path(), Path::new("/mnt/b")).unwrap();
    }

    /// Spare files are made ahead, handed out by `new_local`, never swept while spare, and
    /// deleted when the area is closed.
    #[test]
    fn spare_files_are_kept_then_removed() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("writeback/data");
        let count = || fs::read_dir(&data).unwrap().count();
        let wb = Writeback::open(d.path(), Path::new("/mnt/a")).unwrap();
        wb.start_spares().unwrap();
        let t = std::time::Instant::now();
        while count() < SPARES && t.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(count(), SPARES);
        wb.begin_sweep();
        let (id, mut f) = wb.new_local().unwrap();
        f.write_all(b"x").unwrap();
        wb.sweep(&HashSet::new());
        assert!(count() >= SPARES, "a sweep deleted spare files");
        assert!(wb.data_path(id).exists());
        drop(wb);
        // Only the file in use is left.
        let left: Vec<_> = fs::read_dir(&data).unwrap().flatten().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].path(), data.join(format!("{id:016x}")));
    }

    /// Regression: a commit's sweep collected the ids to keep, then `cp -a` created a file,
    /// then the sweep listed `data/` and deleted that new file (its commit then failed with
    /// "cannot read writeback/data/...: No such file" until the mount was restarted).
    #[test]
    fn sweep_keeps_files_created_after_it_began() {
        let d = tempfile::tempdir().unwrap();
        let wb = Writeback::open(d.path(), Path::new("/mnt/a")).unwrap();
        let (old, _) = wb.new_local().unwrap();
        wb.begin_sweep();
        let (young, _) = wb.new_local().unwrap();
        wb.sweep(&HashSet::new());
        assert!(!wb.data_path(old).exists(), "unreferenced file kept");
        assert!(
            wb.data_path(young).exists(),
            "file created during the sweep deleted"
        );
        // The next sweep no longer protects it.
        wb.begin_sweep();
        wb.sweep(&HashSet::new());
        assert!(!wb.data_path(young).exists());
    }
}
