//! Helpers of the fault and model tests: small trees written to and read from folders, a
//! repository over an in-memory, fault-injecting backend, and restoring a snapshot to compare
//! it with what it should hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::backend::FileKind;
use crate::backend::fault::FaultBackend;
use crate::backend::memory::MemoryBackend;
use crate::check::{CheckOptions, CheckReport, check};
use crate::error::Result;
use crate::heal::{FetchedObject, ObjectSource};
use crate::progress::NoProgress;
use crate::repo::{InitOptions, OpenOptions};
use crate::snapshot::{RestoreOptions, SnapshotOptions};
use crate::vfs::Resolved;
use crate::{ObjectId, Repo, SnapshotEntry, SnapshotId};

/// A folder's files: relative path (with `/`) to contents.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Replace the content of `dir` with `files` (folders made as needed).
pub fn write_files(dir: &Path, files: &Files) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    for (path, data) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
}

/// The files below `dir` (iteratively; folders themselves are not listed).
pub fn read_files(dir: &Path) -> Files {
    let mut out = Files::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Bytes that do not compress or deduplicate by accident (xorshift from a non-zero `s`).
pub fn noise(len: usize, mut s: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

/// Snapshot options for tests: one thread, a fixed host, time `time_ns`.
pub fn snap_opts(space: &str, time_ns: i64) -> SnapshotOptions {
    SnapshotOptions {
        space: Some(space.into()),
        host: Some("test".into()),
        time_ns: Some(time_ns),
        threads: 1,
        ..SnapshotOptions::default()
    }
}

/// Restore snapshot `id` of `repo` into `target` (emptied first) and return its files; panics
/// if any entry cannot be restored.
pub fn restore_files(repo: &Arc<Repo>, id: &SnapshotId, target: &Path) -> Files {
    let s: SnapshotEntry = repo.resolve_snapshot(&id.to_hex()).unwrap();
    if target.exists() {
        std::fs::remove_dir_all(target).unwrap();
    }
    let opts = RestoreOptions {
        threads: 1,
        ..RestoreOptions::default()
    };
    let stats = crate::snapshot::restore(
        repo,
        &Resolved::Root(s.snapshot.root),
        target,
        &opts,
        &NoProgress,
    )
    .unwrap_or_else(|e| panic!("snapshot {id} cannot be restored: {e:#}"));
    assert_eq!(stats.errors, 0, "snapshot {id}: {:?}", stats.messages);
    read_files(target)
}

/// A full check, reading every object.
pub fn check_data(repo: &Repo) -> CheckReport {
    let opts = CheckOptions {
        read_data: true,
        threads: 1,
        sample: None,
    };
    check(repo, &opts, &NoProgress).unwrap()
}

/// A repository whose files live in memory behind a fault-injecting wrapper (no limit yet);
/// its index lives in `local`.
pub struct FaultRepo {
    /// The wrapper: set its budget to inject a fault.
    pub backend: FaultBackend<MemoryBackend>,
    /// The local directory (index, locks, caches).
    pub local: std::path::PathBuf,
}

impl FaultRepo {
    /// Create the repository, with packs of 1 MiB (so that a few MiB make several).
    pub fn init(local: &Path) -> (FaultRepo, Arc<Repo>) {
        let backend = FaultBackend::new(MemoryBackend::new(), -1);
        let opts = InitOptions {
            pack_target_size: 1 << 20,
            ..InitOptions::default()
        };
        let repo = Repo::init_with_backend(local, Arc::new(backend.clone()), &opts).unwrap();
        let fr = FaultRepo {
            backend,
            local: local.to_path_buf(),
        };
        (fr, Arc::new(repo))
    }

    /// A copy of the repository as it is now, in `local`, without a fault wrapper (the
    /// repository must not be open).
    pub fn fork(&self, local: &Path) -> Arc<Repo> {
        let mut stack = vec![(self.local.clone(), local.to_path_buf())];
        while let Some((from, to)) = stack.pop() {
            std::fs::create_dir_all(&to).unwrap();
            for e in std::fs::read_dir(&from).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push((e.path(), to.join(e.file_name())));
                } else {
                    std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
                }
            }
        }
        let backend = Arc::new(self.backend.inner().fork().unwrap());
        Arc::new(Repo::open_with_backend(local, backend, &OpenOptions::default()).unwrap())
    }

    /// Open it again, as a new process would after a failure.
    pub fn reopen(&self) -> Arc<Repo> {
        let backend = Arc::new(self.backend.clone());
        Arc::new(Repo::open_with_backend(&self.local, backend, &OpenOptions::default()).unwrap())
    }
}

/// Another repository as a heal source; with `tamper`, every object it sends is damaged.
pub struct RepoSource {
    /// Its name in reports.
    pub name: String,
    /// The repository read.
    pub repo: Arc<Repo>,
    /// Flip a bit of every object sent.
    pub tamper: bool,
}

impl ObjectSource for RepoSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn fetch_objects(&mut self, ids: &[ObjectId]) -> Result<Vec<FetchedObject>> {
        let reader = self.repo.index().reader()?;
        let mut out = Vec::new();
        for id in ids {
            let Some(loc) = reader.get(id)? else { continue };
            let mut data = self.repo.read_stored(&reader, &loc)?;
            if self.tamper
                && let Some(b) = data.last_mut()
            {
                *b ^= 1;
            }
            out.push(FetchedObject {
                id: *id,
                kind: loc.kind,
                flags: loc.flags,
                raw_len: loc.raw_len,
                data,
            });
        }
        Ok(out)
    }
    fn fetch_snapshot(&mut self, id: &SnapshotId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .repo
            .backend()
            .read(FileKind::Snapshot, &id.to_hex())
            .ok())
    }
}
