//! A repository: its config, backend and index, and reading objects and snapshots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::backend::local::LocalBackend;
use crate::backend::{Backend, FileKind};
use crate::chunking::ChunkerParams;
use crate::error::{Error, ErrorKind, Result};
use crate::format::config::{Compression, Config};
use crate::format::snapshot::{Snapshot, SnapshotEntry};
use crate::format::space::SpaceSettings;
use crate::format::tree::Tree;
use crate::hash::{ObjectId, PackId, SnapshotId, is_hex_prefix};
use crate::index::{Index, IndexReader, Location, StatCache, now_ns};

/// Options of `puce init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunking parameters.
    pub chunker: ChunkerParams,
    /// Compression settings.
    pub compression: Compression,
    /// Pack target size in bytes.
    pub pack_target_size: u64,
    /// How to open the new repository.
    pub open: OpenOptions,
    /// Encrypt the repository under a new random master key, whose key file is written into
    /// this directory as `<repository id>.key` (mode 0600) before the repository exists.
    /// `None` makes an unencrypted repository (the format before encryption).
    pub key_dir: Option<PathBuf>,
    /// With `key_dir`: the association's master key, when this repository joins an association
    /// that has one (a second site); `None` makes a new random key.
    pub key: Option<crate::crypto::MasterKey>,
    /// With `key_dir`: wrap the key file under this passphrase (`puce init --passphrase`).
    pub passphrase: Option<crate::keyfile::Passphrase>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::DEFAULT,
            compression: Compression::default(),
            pack_target_size: 32 << 20,
            open: OpenOptions::default(),
            key_dir: None,
            key: None,
            passphrase: None,
        }
    }
}

/// Options when opening a repository.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Page cache of the index, bytes.
    pub index_cache: usize,
    /// Directory for this machine's caches (the stat cache); a subdirectory named by the
    /// repository id is used. Default: `REPO/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Key files to try first for an encrypted repository.
    pub key_files: Vec<PathBuf>,
    /// Where an encrypted repository's key files `<repository id>[.<id>].key` are looked for
    /// next (docs/format.md, section 9).
    pub key_dir: Option<PathBuf>,
    /// Where the passphrase of a protected key comes from, if one can be asked for.
    pub passphrase: Option<crate::keyfile::PassphraseSource>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            index_cache: 64 << 20,
            cache_dir: None,
            key_files: Vec::new(),
            key_dir: None,
            passphrase: None,
        }
    }
}

/// An open repository.
pub struct Repo {
    root: PathBuf,
    backend: Arc<dyn Backend>,
    /// The files as stored (below the sealing of an encrypted repository): what a blind
    /// holder copies.
    stored: Arc<dyn Backend>,
    /// The keys of an encrypted repository.
    keys: Option<Arc<crate::crypto::Keys>>,
    config: Config,
    index: Index,
    pack_ids: RwLock<HashMap<u32, PackId>>,
    cache_dir: PathBuf,
    statcache: Mutex<Option<Arc<StatCache>>>,
    healed: Vec<String>,
    codec: crate::pack::codec::Codec,
    /// Receipts read so far, by file name (a receipt is written once and never changes):
    /// [`crate::reach::receipts`] reads only the new ones.
    pub(crate) receipts: Mutex<HashMap<String, crate::format::receipt::Receipt>>,
    /// Where this machine keeps its key files ([`OpenOptions::key_dir`]).
    key_dir: Option<PathBuf>,
}

/// The index file in a repository's local directory.
const INDEX_FILE: &str = "index.redb";

/// How a config that could not be read went wrong, for people.
fn config_fault(e: &Error) -> &'static str {
    if e.kind() == ErrorKind::NotFound {
        "was missing"
    } else {
        "was damaged"
    }
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repo({})", self.root.display())
    }
}

impl Repo {
    /// Create a new repository in the local directory `path`.
    pub fn init(path: &Path, opts: &InitOptions) -> Result<Repo> {
        if path.join("config").exists() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a repository already exists at {}", path.display()),
            ));
        }
        if path.join(INDEX_FILE).exists() {
            // A repository whose config is lost: a new config would give its data another
            // identity and maybe other parameters. Opening it restores the config instead.
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "a repository already exists at {} (its config is missing; any command \
                     that opens it restores the config from the copy in the index)",
                    path.display()
                ),
            ));
        }
        crate::fsutil::create_dir_durable(path)?;
        let backend = Arc::new(LocalBackend::open(path)?);
        Repo::init_with_backend(path, backend, opts)
    }

    /// Create a new repository whose files live in `backend`, with the index kept under the
    /// local directory `local`.
    pub fn init_with_backend(
        local: &Path,
        backend: Arc<dyn Backend>,
        opts: &InitOptions,
    ) -> Result<Repo> {
        opts.chunker.validate()?;
        if !(0..=22).contains(&opts.compression.zstd_level) {
            return Err(Error::invalid("zstd level must be between 0 and 22"));
        }
        if !(1 << 20..=1 << 30).contains(&opts.pack_target_size) {
            return Err(Error::invalid(
                "pack target size must be between 1 MiB and 1 GiB",
            ));
        }
        if local.join(INDEX_FILE).is_file() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} already holds the index of a repository: use another directory, or \
                     open that repository (its config is restored from the index's copy)",
                    local.display()
                ),
            ));
        }
        if backend.exists(FileKind::Config, "config")? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a repository already exists at {}", backend.location()),
            ));
        }
        let mut repo_id = [0u8; 16];
        getrandom::fill(&mut repo_id)
            .map_err(|e| Error::other(format!("no random source for the repository id: {e}")))?;
        let mut config = Config {
            repo_id,
            created_ns: now_ns(),
            chunker: opts.chunker,
            compression: opts.compression,
            pack_target_size: opts.pack_target_size,
            encryption: None,
        };
        let mut open = opts.open.clone();
        if let Some(dir) = &opts.key_dir {
            let file = crate::keyfile::create_protected(
                dir,
                &config,
                opts.key.clone(),
                opts.passphrase.as_ref(),
            )?;
            config.encryption = Some(crate::format::config::Encryption {
                scheme: crate::crypto::SCHEME_VERSION,
                fingerprint: file.1,
            });
            open.key_files.insert(0, file.0);
            if let Some(p) = &opts.passphrase {
                open.passphrase = Some(crate::keyfile::PassphraseSource::fixed(p.clone()));
            }
        }
        crate::fsutil::create_dir_durable(local)?;
        backend.write(FileKind::Config, "config", &config.encode()?)?;
        Repo::open_with_backend(local, backend, &open)
    }

    /// Whether the key of this encrypted repository was ever exported from this machine (a
    /// recovery sheet printed or shares made: [`crate::keyfile::exported`]); `true` for an
    /// unencrypted repository, which has no key to lose.
    pub fn key_exported(&self) -> bool {
        self.config.encryption.is_none()
            || self
                .key_dir
                .as_deref()
                .is_some_and(|d| crate::keyfile::exported(d, &self.config))
    }

    /// Open the repository in the local directory `path`.
    pub fn open(path: &Path) -> Result<Repo> {
        Repo::open_with(path, &OpenOptions::default())
    }

    /// Open the repository in the local directory `path` with options.
    pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Repo> {
        if !path.join("config").is_file() && !path.join(INDEX_FILE).is_file() {
            return Err(Error::not_found(format!(
                "no repository at {}: create one with `puce init --repo {}`, or set PUCE_REPO",
                path.display(),
                path.display()
            )));
        }
        let backend = Arc::new(LocalBackend::open(path)?);
        Repo::open_with_backend(path, backend, opts)
    }

    /// Open a repository whose files live in `backend`, index under `local`.
    pub fn open_with_backend(
        local: &Path,
        backend: Arc<dyn Backend>,
        opts: &OpenOptions,
    ) -> Result<Repo> {
        let index_path = local.join(INDEX_FILE);
        let read = backend
            .read(FileKind::Config, "config")
            .and_then(|bytes| Ok((Config::decode(&bytes)?, bytes)));
        // A damaged or missing config is restored from the index's copy, when there is an
        // index: without one, a missing config means there is no repository here.
        let read = match read {
            Err(e) if e.kind() == ErrorKind::NotFound && !index_path.is_file() => {
                return Err(Error::not_found(format!(
                    "no repository at {}",
                    backend.location()
                )));
            }
            Err(e) if !matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                return Err(e);
            }
            r => r,
        };
        let index = Index::open(&index_path, opts.index_cache).map_err(|ie| match &read {
            Err(e) => Error::new(
                e.kind(),
                format!(
                    "{e}; the index, which keeps a copy of the config, cannot be opened \
                     either ({ie}): restore {}/config from a backup of this server",
                    backend.location()
                ),
            ),
            Ok(_) => ie,
        })?;
        let (config, damage) = match read {
            Ok((config, bytes)) => {
                // Keep the copy current. Best effort: a read-only open must still work.
                if index.config_copy().ok().flatten().as_deref() != Some(bytes.as_slice()) {
                    let _ = index.set_config_copy(&bytes);
                }
                (config, None)
            }
            Err(e) => {
                let copy = index
                    .config_copy()
                    .ok()
                    .flatten()
                    .and_then(|b| Config::decode(&b).ok());
                let Some(config) = copy else {
                    return Err(Error::new(
                        e.kind(),
                        format!(
                            "{e}; the index holds no undamaged copy of it: restore {}/config \
                             from a backup of this server",
                            backend.location()
                        ),
                    ));
                };
                (config, Some(e))
            }
        };
        config.chunker.validate()?;
        let stored = backend.clone();
        let (backend, codec, keys) = match &config.encryption {
            None => (backend, crate::pack::codec::Codec::plain(), None),
            Some(e) => {
                let keys = Arc::new(crate::keyfile::find(&config, e, opts)?);
                let sealed: Arc<dyn Backend> = Arc::new(
                    crate::backend::sealed::SealedBackend::new(backend, keys.clone()),
                );
                (
                    sealed,
                    crate::pack::codec::Codec::sealed(keys.clone()),
                    Some(keys),
                )
            }
        };
        let cache_dir = opts
            .cache_dir
            .clone()
            .unwrap_or_else(|| local.join("cache"))
            .join(config.repo_id_hex());
        let mut repo = Repo {
            root: local.to_path_buf(),
            backend,
            stored,
            keys,
            config,
            index,
            pack_ids: RwLock::new(HashMap::new()),
            cache_dir,
            statcache: Mutex::new(None),
            healed: Vec::new(),
            codec,
            receipts: Mutex::new(HashMap::new()),
            key_dir: opts.key_dir.clone(),
        };
        if let Some(e) = damage {
            // Written back as `check` does it. Nothing to say if another process just did.
            match repo.heal_config() {
                Ok(note) => repo.healed.extend(note),
                Err(we) => repo.healed.push(format!(
                    "the repository config {} ({e}): using the copy kept in the index, but \
                     could not write it back ({we})",
                    config_fault(&e)
                )),
            }
        }
        Ok(repo)
    }

    /// What opening the repository repaired (a damaged config restored from the index's
    /// copy), for people: callers report it, since a damaged file is a sign of a failing disk.
    pub fn healed(&self) -> &[String] {
        &self.healed
    }

    /// Check the config file as it is now and, if it is damaged or missing, write it back from
    /// the config this repository was opened with (the index's copy, or the same record encoded
    /// again). Returns what was repaired, for people.
    pub fn heal_config(&self) -> Result<Option<String>> {
        let err = match self
            .backend
            .read(FileKind::Config, "config")
            .and_then(|b| Config::decode(&b))
        {
            Ok(c) if c == self.config => return Ok(None),
            Ok(_) => Error::corrupt("it differs from the config this repository was opened with"),
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => e,
            Err(e) => return Err(e),
        };
        let (bytes, copied) = match self.index.config_copy()? {
            Some(b) if Config::decode(&b).ok().as_ref() == Some(&self.config) => (b, true),
            _ => (self.config.encode()?, false),
        };
        self.backend.write(FileKind::Config, "config", &bytes)?;
        if !copied {
            let _ = self.index.set_config_copy(&bytes);
        }
        Ok(Some(format!(
            "the repository config {} ({err}): restored it from the copy kept in the index",
            config_fault(&err)
        )))
    }

    /// The local directory (index and locks).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The files as stored, below the sealing of an encrypted repository (the same backend
    /// for an unencrypted one): for what copies them opaque, a blind holder's copy.
    pub fn stored_backend(&self) -> &Arc<dyn Backend> {
        &self.stored
    }

    /// The label of `space` in an encrypted repository: the keyed hash of its name, which
    /// names its settings file (`spaces/<label in hex>`) and stands for it in blind-holding
    /// manifests. None for an unencrypted repository.
    pub fn space_label(&self, space: &str) -> Option<crate::hash::Hash> {
        self.keys.as_ref().map(|k| k.name_id(space))
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// How this repository names and stores objects (plain or encrypted).
    pub fn codec(&self) -> &crate::pack::codec::Codec {
        &self.codec
    }

    /// The id of an object with this plaintext in this repository.
    pub fn object_id(&self, plain: &[u8]) -> ObjectId {
        self.codec.id_of(plain)
    }

    /// This machine's stat cache for the repository (opened on first use).
    pub fn statcache(&self) -> Result<Arc<StatCache>> {
        let mut g = self
            .statcache
            .lock()
            .map_err(|_| Error::other("stat cache lock poisoned"))?;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(StatCache::open(&self.cache_dir.join("files.redb"))?);
        *g = Some(c.clone());
        Ok(c)
    }

    /// The id of pack number `no`.
    pub fn pack_id(&self, reader: &IndexReader, no: u32) -> Result<PackId> {
        if let Some(id) = self.pack_ids.read().ok().and_then(|m| m.get(&no).copied()) {
            return Ok(id);
        }
        let info = reader.pack(no)?.ok_or_else(|| {
            Error::corrupt(format!(
                "the index names pack number {no}, which it does not list: run `puce repair index`"
            ))
        })?;
        if let Ok(mut m) = self.pack_ids.write() {
            m.insert(no, info.id);
        }
        Ok(info.id)
    }

    /// Read an object's plaintext, verifying its hash.
    pub fn read_object(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let r = self.index.reader()?;
        self.read_object_with(&r, id)
    }

    /// Read an object through an existing index view.
    pub fn read_object_with(&self, reader: &IndexReader, id: &ObjectId) -> Result<Vec<u8>> {
        let loc = reader.get(id)?.ok_or_else(|| {
            Error::not_found(format!(
                "object {id} is not in the index: the repository is missing data \
                 (run `puce check`)"
            ))
        })?;
        match self.read_location(reader, id, &loc) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // The pack may have been rewritten by a concurrent gc: look again once.
                let fresh = self.index.reader()?;
                match fresh.get(id)? {
                    Some(l2) if l2 != loc => self.read_location(&fresh, id, &l2),
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    /// Read the stored bytes of an object (compressed as in the pack) without decoding them.
    pub fn read_stored(&self, reader: &IndexReader, loc: &Location) -> Result<Vec<u8>> {
        let pack = self.pack_id(reader, loc.pack)?;
        self.backend.read_vec(
            FileKind::Pack,
            &pack.to_hex(),
            u64::from(loc.offset),
            loc.stored_len as usize,
        )
    }

    /// Read and verify the object at `loc`.
    pub fn read_location(
        &self,
        reader: &IndexReader,
        id: &ObjectId,
        loc: &Location,
    ) -> Result<Vec<u8>> {
        let stored = self.read_stored(reader, loc)?;
        let pack = self.pack_id(reader, loc.pack)?;
        self.codec
            .decode_object_vec(id, loc.kind, loc.flags, loc.raw_len, stored)
            .map_err(|e| e.context(format!("pack {}", pack.short(16))))
    }

    /// Read and decode a tree.
    pub fn read_tree(&self, id: &ObjectId) -> Result<Tree> {
        let bytes = self.read_object(id)?;
        Tree::decode(&bytes).map_err(|e| e.context(format!("tree {}", id.short(16))))
    }

    /// Read and decode a tree through an existing index view. With a remote backend, trees are
    /// kept in a local cache (content-addressed, so always valid; checked against their id when
    /// read back): a snapshot reads its parent's trees without a round trip each.
    pub fn read_tree_with(&self, reader: &IndexReader, id: &ObjectId) -> Result<Tree> {
        let cached = self.tree_cache_path(id).and_then(|p| {
            // Only for objects the index knows, so a missing object is still reported.
            reader.get(id).ok().flatten()?;
            std::fs::read(&p).ok().filter(|b| self.object_id(b) == *id)
        });
        let bytes = match cached {
            Some(b) => b,
            None => {
                let b = self.read_object_with(reader, id)?;
                self.cache_tree(id, &b);
                b
            }
        };
        Tree::decode(&bytes).map_err(|e| e.context(format!("tree {}", id.short(16))))
    }

    fn tree_cache_path(&self, id: &ObjectId) -> Option<PathBuf> {
        if !self.backend.is_remote() {
            return None;
        }
        let hex = id.to_hex();
        Some(self.cache_dir.join("trees").join(&hex[..2]).join(hex))
    }

    /// Keep a copy of a tree in the local tree cache (remote backends only; best effort).
    pub fn cache_tree(&self, id: &ObjectId, bytes: &[u8]) {
        let Some(p) = self.tree_cache_path(id) else {
            return;
        };
        if p.exists() {
            return;
        }
        if let Some(dir) = p.parent() {
            let _ = crate::fsutil::create_private_dirs(dir);
            let tmp = dir.join(crate::fsutil::temp_name("t"));
            let written = crate::fsutil::private_file()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, bytes));
            if written.is_ok() {
                let _ = std::fs::rename(&tmp, &p);
            } else {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }

    /// All snapshots, oldest first. The snapshot files are the truth; the index caches them.
    /// A damaged or unreadable snapshot file is left out (with a warning in the log); `check`
    /// reports it.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let files = self.backend.list(FileKind::Snapshot)?;
        let cached: HashMap<SnapshotId, Vec<u8>> = self.index.snapshots()?.into_iter().collect();
        let mut out = Vec::with_capacity(files.len());
        let mut to_cache = Vec::new();
        let mut present = std::collections::HashSet::new();
        for (name, _) in files {
            let Ok(id) = SnapshotId::from_hex(&name) else {
                continue;
            };
            present.insert(id);
            let decoded = match cached.get(&id) {
                Some(b) => Snapshot::decode(b, Some(&id)),
                None => self.backend.read(FileKind::Snapshot, &name).and_then(|b| {
                    let s = Snapshot::decode(&b, Some(&id))?;
                    to_cache.push((id, b));
                    Ok(s)
                }),
            };
            match decoded {
                Ok(snapshot) => out.push(SnapshotEntry { id, snapshot }),
                Err(e)
                    if e.kind() == ErrorKind::Corrupt
                        || e.kind() == ErrorKind::UnsupportedVersion =>
                {
                    tracing::warn!(
                        "snapshot {} is left out: {e:#} (run `puce check`)",
                        id.short(12)
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let stale: Vec<SnapshotId> = cached
            .keys()
            .filter(|k| !present.contains(k))
            .copied()
            .collect();
        if !to_cache.is_empty() {
            self.index.put_snapshots(&to_cache)?;
        }
        if !stale.is_empty() {
            self.index.remove_snapshots(&stale)?;
        }
        out.sort_by_key(|a| (a.snapshot.time_ns, a.id));
        Ok(out)
    }

    /// The latest snapshot of a space: the newest of its heads (see [`crate::history`]). With
    /// a linear history this is the newest snapshot; it differs when a snapshot was taken on a
    /// node whose clock is behind the one that took its parent.
    pub fn latest(&self, space: &str) -> Result<Option<SnapshotEntry>> {
        let all = self.snapshots()?;
        let lineage = crate::forgotten::lineage(self, &all)?;
        Ok(crate::history::latest(&all, &lineage, space).cloned())
    }

    /// Find a snapshot by `SPACE@latest`, `SPACE@latest~N` or a unique id prefix.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<SnapshotEntry> {
        let all = self.snapshots()?;
        resolve_in(&all, spec).map_err(|e| {
            match (e.kind(), crate::blind::held_refusal(&self.root, spec)) {
                (ErrorKind::NotFound, Some(why)) => Error::new(ErrorKind::NotFound, why),
                _ => e,
            }
        })
    }

    /// Write a snapshot file durably and cache it. Returns its id.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        let bytes = snapshot.encode()?;
        let id = Snapshot::id_of(&bytes);
        self.backend
            .write(FileKind::Snapshot, &id.to_hex(), &bytes)?;
        self.index.put_snapshots(&[(id, bytes)])?;
        self.reach_new_snapshot(&id, snapshot);
        Ok(id)
    }

    /// Add a committed snapshot to its space's reach scope ([`crate::reach`]). Best effort: the
    /// snapshot is committed whatever happens here, and [`crate::reach::update`] catches up
    /// before the next transfer (until then, its objects are only sent again, never leaked).
    fn reach_new_snapshot(&self, id: &SnapshotId, snapshot: &Snapshot) {
        if let Err(e) = crate::reach::add_snapshot(self, id, &snapshot.space, &snapshot.root) {
            tracing::debug!("reach scope of snapshot {id} not updated: {e:#}");
        }
    }

    /// Store an already-encoded snapshot file (from a peer), checking its id.
    pub fn save_snapshot_bytes(&self, id: &SnapshotId, bytes: &[u8]) -> Result<Snapshot> {
        let snap = Snapshot::decode(bytes, Some(id))?;
        self.backend
            .write(FileKind::Snapshot, &id.to_hex(), bytes)?;
        self.index.put_snapshots(&[(*id, bytes.to_vec())])?;
        self.reach_new_snapshot(id, &snap);
        Ok(snap)
    }
}

impl Repo {
    /// The settings of a space, if any were stored.
    pub fn space_settings(&self, space: &str) -> Result<Option<SpaceSettings>> {
        crate::format::snapshot::check_space_name(space)?;
        match self.backend.read(FileKind::Space, space) {
            Ok(b) => Ok(Some(SpaceSettings::decode(&b)?)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Store the settings of a space durably.
    pub fn put_space_settings(&self, space: &str, s: &SpaceSettings) -> Result<()> {
        crate::format::snapshot::check_space_name(space)?;
        self.backend.write(FileKind::Space, space, &s.encode()?)
    }

    /// Remove the settings of a space.
    pub fn remove_space_settings(&self, space: &str) -> Result<()> {
        crate::format::snapshot::check_space_name(space)?;
        self.backend.remove(FileKind::Space, space)
    }

    /// All stored space settings, by space name (an encrypted repository lists its settings
    /// files in the order of their keyed names).
    pub fn all_space_settings(&self) -> Result<Vec<(String, SpaceSettings)>> {
        let mut out = Vec::new();
        for (name, _) in self.backend.list(FileKind::Space)? {
            let b = self.backend.read(FileKind::Space, &name)?;
            out.push((name, SpaceSettings::decode(&b)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// Find a snapshot in `all` (sorted oldest first) by spec.
pub fn resolve_in(all: &[SnapshotEntry], spec: &str) -> Result<SnapshotEntry> {
    if let Some((space, rev)) = spec.rsplit_once('@') {
        let back: usize = if rev == "latest" {
            0
        } else if let Some(n) = rev.strip_prefix("latest~") {
            n.parse().map_err(|_| {
                Error::invalid(format!("bad revision '{rev}': use latest or latest~N"))
            })?
        } else {
            return Err(Error::invalid(format!(
                "bad revision '{rev}' in '{spec}': use SPACE@latest or SPACE@latest~N"
            )));
        };
        let in_space: Vec<&SnapshotEntry> =
            all.iter().filter(|s| s.snapshot.space == space).collect();
        if in_space.is_empty() {
            return Err(Error::not_found(format!(
                "space '{space}' has no snapshots (see `puce snapshots`)"
            )));
        }
        return in_space
            .len()
            .checked_sub(back + 1)
            .map(|i| in_space[i].clone())
            .ok_or_else(|| {
                Error::not_found(format!(
                    "space '{space}' has only {} snapshots",
                    in_space.len()
                ))
            });
    }
    let prefix = spec.to_ascii_lowercase();
    if !is_hex_prefix(&prefix) || prefix.len() < 4 {
        return Err(Error::invalid(format!(
            "'{spec}' is not a snapshot: give at least 4 hex digits of an id, or SPACE@latest"
        )));
    }
    let mut found = all.iter().filter(|s| s.id.to_hex().starts_with(&prefix));
    match (found.next(), found.next()) {
        (Some(s), None) => Ok(s.clone()),
        (None, _) => Err(Error::not_found(format!(
            "no snapshot id starts with '{spec}' (see `puce snapshots`)"
        ))),
        (Some(_), Some(_)) => Err(Error::invalid(format!(
            "'{spec}' matches several snapshots: give more digits"
        ))),
    }
}

#[cfg(test)]
mod config_copy_tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        let repo = Repo::init(&path, &InitOptions::default()).unwrap();
        let bytes = std::fs::read(path.join("config")).unwrap();
        assert_eq!(repo.index().config_copy().unwrap(), Some(bytes.clone()));
        assert!(repo.healed().is_empty());
        drop(repo);
        (dir, path, bytes)
    }

    #[test]
    fn a_damaged_config_is_restored_from_the_index_copy_on_open() {
        let (_dir, path, pristine) = fresh();
        let mut flipped = pristine.clone();
        flipped[20] ^= 0x10;
        let faults: Vec<Option<Vec<u8>>> = vec![
            Some(flipped),
            Some(pristine[..pristine.len() / 2].to_vec()),
            Some(Vec::new()),
            None,
        ];
        for fault in faults {
            match &fault {
                Some(b) => std::fs::write(path.join("config"), b).unwrap(),
                None => std::fs::remove_file(path.join("config")).unwrap(),
            }
            let repo = Repo::open(&path).unwrap();
            assert_eq!(repo.healed().len(), 1, "{:?}", repo.healed());
            let what = if fault.is_some() {
                "was damaged"
            } else {
                "was missing"
            };
            assert!(repo.healed()[0].contains(what), "{}", repo.healed()[0]);
            assert_eq!(std::fs::read(path.join("config")).unwrap(), pristine);
            drop(repo);
            assert!(Repo::open(&path).unwrap().healed().is_empty());
        }
    }

    #[test]
    fn a_config_damaged_while_open_is_healed_by_heal_config() {
        let (_dir, path, pristine) = fresh();
        let repo = Repo::open(&path).unwrap();
        assert_eq!(repo.heal_config().unwrap(), None);
        std::fs::write(path.join("config"), b"PUCECFG\0garbage").unwrap();
        let note = repo.heal_config().unwrap().unwrap();
        assert!(note.contains("was damaged"), "{note}");
        assert_eq!(std::fs::read(path.join("config")).unwrap(), pristine);
        assert_eq!(repo.heal_config().unwrap(), None);
    }

    #[test]
    fn without_a_good_copy_a_damaged_config_is_a_clear_error() {
        let (_dir, path, pristine) = fresh();
        // An index without the copy (as written by an older puce), and a damaged config.
        {
            let index = Index::open(&path.join(INDEX_FILE), 1 << 20).unwrap();
            index.set_config_copy(b"not a config").unwrap();
        }
        let mut flipped = pristine.clone();
        flipped[30] ^= 1;
        std::fs::write(path.join("config"), &flipped).unwrap();
        let e = Repo::open(&path).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("from a backup"), "{e}");
        // Nothing was written over the damaged file.
        assert_eq!(std::fs::read(path.join("config")).unwrap(), flipped);
        // A good config refreshes the copy on the next open.
        std::fs::write(path.join("config"), &pristine).unwrap();
        let repo = Repo::open(&path).unwrap();
        assert_eq!(repo.index().config_copy().unwrap(), Some(pristine));
    }

    #[test]
    fn init_refuses_a_directory_whose_config_is_missing() {
        let (_dir, path, _) = fresh();
        std::fs::remove_file(path.join("config")).unwrap();
        let e = Repo::init(&path, &InitOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        // And the directory without config or index is no repository.
        let empty = path.parent().unwrap().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(Repo::open(&empty).unwrap_err().kind(), ErrorKind::NotFound);
    }
}
