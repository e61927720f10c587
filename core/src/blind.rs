//! What a node holds blind for the nodes of other associations: `REPO/holds/<owner id>/`, a
//! namespace of its own per owner (docs/design.md, "Blind holders").
//!
//! ```text
//! holds/<owner id hex>/manifest              the newest signed manifest kept (format/manifest.rs)
//! holds/<owner id hex>/kept/<seq>-<until ns>  older manifests a protection period still keeps
//! holds/<owner id hex>/files/packs/<hex>     the files it lists, as the owner stores them
//! holds/<owner id hex>/files/snapshots/<hex>
//! holds/<owner id hex>/files/spaces/<hex>
//! holds/<owner id hex>/tmp/                  files still arriving
//! ```
//!
//! A file arrives in `tmp/`, appended range by range (made durable at checkpoints, so that an
//! interrupted transfer resumes where it stopped), then is verified against the BLAKE3 of the
//! manifest, fsynced and renamed into `files/`. The manifest is published (written atomically)
//! only once every file it lists is there; then the files no manifest kept lists are freed.
//! With a protection period (`keep_min` of the owner's peer entry), the manifest replaced is
//! kept in `kept/` until the period has passed since it was replaced, if it lists a file the new
//! one does not: what a compromised owner drops stays here, and is served back, that long.
//! Nothing here is read with a key: the holder has none.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{FileKind, HeldFile, Manifest};
use crate::fsutil;
use crate::hash::Hash;

/// The directory of the holds, in the holder's repository.
pub const HOLDS_DIR: &str = "holds";
const MANIFEST: &str = "manifest";
const KEPT: &str = "kept";

/// Most older manifests kept by a protection period for one owner: a newer manifest that
/// would make one more is refused (the copy stays as it was, nothing is shortened). Only a
/// manifest that drops a file makes one, and one whose files later manifests list is let go.
pub const MAX_KEPT_MANIFESTS: usize = 256;

/// A file's key in a manifest: its kind's directory and its name (hex), as in `files/`.
type FileKey = (&'static str, String);

fn key(f: &HeldFile) -> FileKey {
    (f.file_kind().dir(), Hash(f.name).to_hex())
}

/// An older manifest a protection period keeps.
#[derive(Debug, Clone)]
pub struct Kept {
    /// The manifest.
    pub manifest: Manifest,
    /// Its bytes, as the owner signed them.
    pub bytes: Vec<u8>,
    /// Kept until, ns since the epoch (the holder's clock).
    pub until_ns: i64,
    path: PathBuf,
}

/// What accepting a newer manifest did ([`Holds::accept`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The sequence number of the manifest replaced, if there was one.
    pub prev_seq: Option<u64>,
    /// Its stored bytes.
    pub prev_bytes: u64,
    /// The bytes of its files the new manifest no longer lists.
    pub dropped_bytes: u64,
    /// Until when the manifest replaced is kept (a protection period), if it is.
    pub kept_until: Option<i64>,
    /// Files freed (no manifest kept lists them any more).
    pub freed_files: u64,
    /// Their bytes.
    pub freed_bytes: u64,
}

impl Accepted {
    /// Whether the new manifest drops [`crate::history::MASS_DELETION_SHARE`] or more of the
    /// replaced one's stored bytes (a mass removal, flagged).
    pub fn mass_removal(&self) -> bool {
        self.prev_bytes > 0
            && self.dropped_bytes as f64
                >= crate::history::MASS_DELETION_SHARE * self.prev_bytes as f64
    }
}

/// The files listed by `manifests` (newest first), each once: where several list one name,
/// the newest's entry (the holder keeps one file per name, the newest that listed it).
pub fn union(manifests: &[&Manifest]) -> Vec<HeldFile> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in manifests {
        for f in &m.files {
            if seen.insert((f.kind, f.name)) {
                out.push(f.clone());
            }
        }
    }
    out
}

/// What one node holds for one owner.
#[derive(Debug, Clone)]
pub struct Holds {
    dir: PathBuf,
}

/// One owner's holds, for listings (`puce snapshots`, `puce node status`): opaque.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HeldSummary {
    /// The owner's node id (hex).
    pub owner: String,
    /// The manifest's sequence number.
    pub seq: u64,
    /// When the manifest kept arrived, ns since the epoch.
    pub arrived_ns: i64,
    /// The spaces, by label (hex), with their snapshot counts.
    pub spaces: Vec<(String, usize)>,
    /// Bytes of the files the manifest lists.
    pub stored_bytes: u64,
    /// Older manifests a protection period keeps (newest first).
    pub protected: Vec<ProtectedSummary>,
}

/// An older manifest kept by a protection period, for listings.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProtectedSummary {
    /// Its sequence number.
    pub seq: u64,
    /// Kept until, ns since the epoch.
    pub until_ns: i64,
    /// Bytes of the files it lists.
    pub stored_bytes: u64,
    /// Snapshots it lists.
    pub snapshots: usize,
}

impl Holds {
    /// The holds of `owner` in the repository whose local directory is `root`, creating its
    /// directories (private to the repository's owner).
    pub fn open(root: &Path, owner: &[u8; 32]) -> Result<Holds> {
        let dir = root.join(HOLDS_DIR).join(Hash(*owner).to_hex());
        for d in [
            root.join(HOLDS_DIR),
            dir.clone(),
            dir.join("tmp"),
            dir.join("files"),
            dir.join(KEPT),
        ] {
            fsutil::create_dir_durable(&d)?;
        }
        for k in [FileKind::Pack, FileKind::Snapshot, FileKind::Space] {
            fsutil::create_dir_durable(&dir.join("files").join(k.dir()))?;
        }
        Ok(Holds { dir })
    }

    /// The holds of `owner` in the repository at `root`, if this node holds anything for it
    /// (nothing is created).
    pub fn existing(root: &Path, owner: &[u8; 32]) -> Option<Holds> {
        let dir = root.join(HOLDS_DIR).join(Hash(*owner).to_hex());
        dir.join(MANIFEST).is_file().then_some(Holds { dir })
    }

    /// The manifest kept, if any, with its bytes.
    pub fn manifest(&self) -> Result<Option<(Manifest, Vec<u8>)>> {
        let p = self.dir.join(MANIFEST);
        match fs::read(&p) {
            Ok(b) => Ok(Some((Manifest::decode(&b)?, b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).io_ctx("cannot read", &p),
        }
    }

    /// Where a held file lives once complete.
    pub fn path(&self, f: &HeldFile) -> PathBuf {
        self.dir
            .join("files")
            .join(f.file_kind().dir())
            .join(Hash(f.name).to_hex())
    }

    fn partial(&self, f: &HeldFile) -> PathBuf {
        self.dir
            .join("tmp")
            .join(format!("{}-{}", f.file_kind().dir(), Hash(f.name).to_hex()))
    }

    /// Whether the file is here, complete (it was verified when it arrived; `verify` reads it
    /// again).
    pub fn has(&self, f: &HeldFile) -> bool {
        fs::metadata(self.path(f)).is_ok_and(|m| m.len() == f.len)
    }

    /// Bytes of `f` received so far (a transfer resumes from there).
    pub fn received(&self, f: &HeldFile) -> u64 {
        match fs::metadata(self.partial(f)) {
            Ok(m) if m.len() <= f.len => m.len(),
            Ok(_) => {
                // Longer than the manifest says: not this file. Start again.
                let _ = fs::remove_file(self.partial(f));
                0
            }
            Err(_) => 0,
        }
    }

    /// Append `data` at `offset` (which must be [`Holds::received`]) to the file arriving;
    /// `durable`: fsync it (a checkpoint).
    pub fn append(&self, f: &HeldFile, offset: u64, data: &[u8], durable: bool) -> Result<()> {
        let p = self.partial(f);
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= f.len)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{} bytes at {offset} go past the end of {} ({} bytes)",
                    data.len(),
                    f.describe(),
                    f.len
                ))
            })?;
        let mut file = fsutil::private_file()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .io_ctx("cannot open", &p)?;
        file.set_len(offset).io_ctx("cannot truncate", &p)?;
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.write_all(data))
            .io_ctx("cannot write", &p)?;
        if durable || end == f.len {
            file.sync_all().io_ctx("cannot fsync", &p)?;
        }
        Ok(())
    }

    /// The file has fully arrived: check it against the manifest (its BLAKE3), and move it
    /// into `files/` durably. A file that does not match is deleted, and that is an error.
    pub fn complete(&self, f: &HeldFile) -> Result<()> {
        let p = self.partial(f);
        let got = hash_file(&p)?;
        if got != (f.len, f.hash) {
            let _ = fs::remove_file(&p);
            return Err(Error::corrupt(format!(
                "{} as received does not match the owner's manifest ({} bytes, BLAKE3 {} \
                 instead of {} bytes, {}): discarded",
                f.describe(),
                got.0,
                Hash(got.1).to_hex(),
                f.len,
                Hash(f.hash).to_hex()
            )));
        }
        fsutil::publish(&p, &self.path(f))
    }

    /// Keep `bytes` (a manifest whose files are all here) as the newest manifest.
    pub fn publish(&self, bytes: &[u8]) -> Result<()> {
        fsutil::write_atomic(&self.dir.join(MANIFEST), &self.dir.join("tmp"), bytes)
    }

    /// The older manifests kept by a protection period (whether or not it has passed), newest
    /// first. A kept manifest that cannot be read is an error: nothing it protects is freed.
    pub fn kept(&self) -> Result<Vec<Kept>> {
        let d = self.dir.join(KEPT);
        let mut out = Vec::new();
        for e in fs::read_dir(&d).io_ctx("cannot list", &d)? {
            let e = e.io_ctx("cannot list", &d)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((seq, until)) = name
                .split_once('-')
                .and_then(|(s, u)| Some((s.parse::<u64>().ok()?, u.parse::<i64>().ok()?)))
            else {
                continue;
            };
            let bytes = fs::read(e.path()).io_ctx("cannot read", &e.path())?;
            let manifest = Manifest::decode(&bytes).map_err(|err| {
                err.context(format!("the manifest kept in {}", e.path().display()))
            })?;
            if manifest.seq != seq {
                return Err(Error::corrupt(format!(
                    "{} holds manifest {}, not {seq}",
                    e.path().display(),
                    manifest.seq
                )));
            }
            out.push(Kept {
                manifest,
                bytes,
                until_ns: until,
                path: e.path(),
            });
        }
        out.sort_by_key(|k| std::cmp::Reverse(k.manifest.seq));
        Ok(out)
    }

    /// The manifests served back to the owner at `now`: the newest, then those a protection
    /// period still keeps, newest first.
    pub fn served(&self, now: i64) -> Result<Vec<(Manifest, Vec<u8>)>> {
        let mut out: Vec<(Manifest, Vec<u8>)> = self.manifest()?.into_iter().collect();
        for k in self.kept()? {
            if k.until_ns > now {
                out.push((k.manifest, k.bytes));
            }
        }
        Ok(out)
    }

    /// The stored bytes held for the owner once `m` is accepted at `now` with the protection
    /// period `keep_ns`: the files of `m` and of every manifest the period keeps (the one `m`
    /// replaces included), each once. What the owner's quota on this node is compared with:
    /// what a protection period keeps counts, so a compromised owner cannot make room by
    /// dropping what it sent.
    pub fn bytes_after(&self, m: &Manifest, keep_ns: Option<i64>, now: i64) -> Result<u64> {
        let current = self.manifest()?.map(|(c, _)| c);
        let kept = self.kept()?;
        let mut all: Vec<&Manifest> = vec![m];
        if let (Some(c), Some(k)) = (&current, keep_ns)
            && self.kept_until(c, m, k, now).is_some()
        {
            all.push(c);
        }
        all.extend(
            kept.iter()
                .filter(|k| k.until_ns > now)
                .map(|k| &k.manifest),
        );
        Ok(union(&all).iter().map(|f| f.len).sum())
    }

    /// Until when the protection period `keep` keeps `prev` once `m` replaces it at `now`:
    /// `keep` after the newest arrival here (the file's modification time) of the files `m`
    /// drops, as a readable replica keeps a forgotten snapshot until it is `keep_min` old;
    /// `None` when `m` drops nothing or the period of everything it drops has passed.
    fn kept_until(&self, prev: &Manifest, m: &Manifest, keep: i64, now: i64) -> Option<i64> {
        let listed: HashSet<FileKey> = m.files.iter().map(key).collect();
        let arrived = prev
            .files
            .iter()
            .filter(|f| !listed.contains(&key(f)))
            .map(|f| {
                fs::metadata(self.path(f))
                    .and_then(|md| md.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(now, |d| i64::try_from(d.as_nanos()).unwrap_or(now))
            })
            .max()?;
        let until = arrived.saturating_add(keep);
        (keep > 0 && until > now).then_some(until)
    }

    /// Keep `bytes` (the manifest `m`, whose files are all here) as the newest manifest. If
    /// it drops files the one it replaces lists and `keep_ns` (the owner's protection period
    /// here) is set, the one replaced is kept first, until `keep_ns` after the newest arrival
    /// of what it drops ([`Holds::kept_until`]). Then free what no manifest kept lists
    /// ([`Holds::free`]).
    pub fn accept(
        &self,
        bytes: &[u8],
        m: &Manifest,
        keep_ns: Option<i64>,
        now: i64,
    ) -> Result<Accepted> {
        let mut a = Accepted::default();
        if let Some((prev, prev_bytes)) = self.manifest()? {
            let listed: HashSet<FileKey> = m.files.iter().map(key).collect();
            let dropped: Vec<&HeldFile> = prev
                .files
                .iter()
                .filter(|f| !listed.contains(&key(f)))
                .collect();
            a.prev_seq = Some(prev.seq);
            a.prev_bytes = prev.stored_bytes();
            a.dropped_bytes = dropped.iter().map(|f| f.len).sum();
            if let Some(until) = keep_ns.and_then(|k| self.kept_until(&prev, m, k, now)) {
                let live = self.kept()?.iter().filter(|k| k.until_ns > now).count();
                if live >= MAX_KEPT_MANIFESTS {
                    return Err(Error::invalid(format!(
                        "manifest {} of node {} drops files while {live} older manifests are \
                         already kept by the protection period (at most {MAX_KEPT_MANIFESTS}): \
                         refused, the copy held stays as it was; check that node for a \
                         break-in",
                        m.seq,
                        Hash(m.owner).to_hex()
                    )));
                }
                fsutil::write_atomic(
                    &self.dir.join(KEPT).join(format!("{}-{until}", prev.seq)),
                    &self.dir.join("tmp"),
                    &prev_bytes,
                )?;
                a.kept_until = Some(until);
            }
        }
        self.publish(bytes)?;
        (a.freed_files, a.freed_bytes) = self.free(now)?;
        Ok(a)
    }

    /// Let go of the kept manifests whose protection period has passed at `now`, and of those
    /// whose every file a manifest kept at least as long lists; then free the files no
    /// manifest kept lists, and the arrivals of such files. Returns the files and bytes freed.
    pub fn free(&self, now: i64) -> Result<(u64, u64)> {
        let Some((newest, _)) = self.manifest()? else {
            return Ok((0, 0));
        };
        let mut listed: HashSet<FileKey> = newest.files.iter().map(key).collect();
        let mut kept = self.kept()?;
        kept.sort_by_key(|k| std::cmp::Reverse((k.until_ns, k.manifest.seq)));
        let mut let_go = false;
        for k in kept {
            if k.until_ns > now && !k.manifest.files.iter().all(|f| listed.contains(&key(f))) {
                listed.extend(k.manifest.files.iter().map(key));
            } else {
                fs::remove_file(&k.path).io_ctx("cannot remove", &k.path)?;
                let_go = true;
            }
        }
        if let_go {
            fsutil::sync_dir(&self.dir.join(KEPT))?;
        }
        let (mut files, mut bytes) = (0, 0);
        for k in [FileKind::Pack, FileKind::Snapshot, FileKind::Space] {
            let d = self.dir.join("files").join(k.dir());
            for e in fs::read_dir(&d).io_ctx("cannot list", &d)? {
                let e = e.io_ctx("cannot list", &d)?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !listed.contains(&(k.dir(), name)) {
                    bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                    files += 1;
                    fs::remove_file(e.path()).io_ctx("cannot remove", &e.path())?;
                }
            }
            fsutil::sync_dir(&d)?;
        }
        let tmp = self.dir.join("tmp");
        for e in fs::read_dir(&tmp).io_ctx("cannot list", &tmp)? {
            let e = e.io_ctx("cannot list", &tmp)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let listed = name.split_once('-').is_some_and(|(k, n)| {
                [FileKind::Pack, FileKind::Snapshot, FileKind::Space]
                    .iter()
                    .any(|kind| kind.dir() == k && listed.contains(&(kind.dir(), n.to_string())))
            });
            if !listed {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok((files, bytes))
    }

    /// `len` bytes of a held file from `offset` (serving it back to its owner).
    pub fn read_range(&self, f: &HeldFile, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.path(f);
        let mut file = File::open(&p).io_ctx("cannot open", &p)?;
        let mut buf = vec![0u8; len];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .io_ctx("cannot read", &p)?;
        Ok(buf)
    }

    /// Read every file the manifests served at `now` list ([`Holds::served`]) and check it
    /// (length and BLAKE3): the problems found, for people (`puce check --read-data`).
    pub fn verify(&self, now: i64) -> Result<Vec<String>> {
        let served = self.served(now)?;
        let Some((newest, _)) = served.first() else {
            return Ok(Vec::new());
        };
        let owner = Hash(newest.owner).to_hex();
        let mut problems = Vec::new();
        for f in union(&served.iter().map(|(m, _)| m).collect::<Vec<_>>()) {
            match hash_file(&self.path(&f)) {
                Ok(got) if got == (f.len, f.hash) => {}
                Ok(_) => problems.push(format!(
                    "{} held for node {owner} is damaged (it does not match the owner's \
                     manifest): remove it, the next sync with that node or with another holder \
                     admitted for its copy fetches it again",
                    f.describe(),
                )),
                Err(e) => problems.push(format!(
                    "{} held for node {owner} is missing or unreadable: {e}",
                    f.describe(),
                )),
            }
        }
        Ok(problems)
    }
}

/// Length and BLAKE3 of a file, read in a stream.
fn hash_file(p: &Path) -> Result<(u64, [u8; 32])> {
    let mut file = File::open(p).io_ctx("cannot open", p)?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut file, &mut h).io_ctx("cannot read", p)?;
    Ok((n, *h.finalize().as_bytes()))
}

/// The owners something is held for in the repository at `root`, with their directories
/// (none when there is no `holds/`; entries that are not an owner's id are skipped).
fn owner_dirs(root: &Path) -> Result<Vec<(Hash, PathBuf)>> {
    let d = root.join(HOLDS_DIR);
    let entries = match fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).io_ctx("cannot list", &d),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.io_ctx("cannot list", &d)?;
        if let Ok(owner) = Hash::from_hex(&e.file_name().to_string_lossy()) {
            out.push((owner, e.path()));
        }
    }
    Ok(out)
}

/// The holds of every owner in the repository at `root`, with the manifests kept.
pub fn all(root: &Path) -> Result<Vec<(Holds, Manifest)>> {
    let mut out = Vec::new();
    for (owner, _) in owner_dirs(root)? {
        let h = Holds::open(root, &owner.0)?;
        if let Some((m, _)) = h.manifest()? {
            out.push((h, m));
        }
    }
    Ok(out)
}

/// Read every file held for every owner and check it against the manifest kept (`puce check
/// --read-data` on a holder): the problems found, for people. A manifest that cannot be read
/// is a problem too.
pub fn verify_all(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (owner, dir) in owner_dirs(root)? {
        let h = Holds { dir };
        match h.verify(crate::forgotten::hold_now()) {
            Ok(p) => problems.extend(p),
            Err(err) => problems.push(format!(
                "a manifest held for node {} cannot be read: {err:#}; the next sync with \
                 that node fetches the newest again",
                owner.to_hex()
            )),
        }
    }
    Ok(problems)
}

/// Move aside (to `holds/<owner>/damaged/`) every held file that does not match the manifest
/// listing it, so that the next sync with its owner, or with another holder of the owner's
/// copy, fetches it again (the daemon's scheduled check with `repair = true`). What was moved,
/// for people. A damaged file is useless as it is; it is kept aside for the admin, not deleted.
pub fn set_aside_damaged(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (owner, dir) in owner_dirs(root)? {
        let h = Holds { dir };
        let served = h.served(crate::forgotten::hold_now())?;
        for f in union(&served.iter().map(|(m, _)| m).collect::<Vec<_>>()) {
            let p = h.path(&f);
            match hash_file(&p) {
                Ok(got) if got != (f.len, f.hash) => {}
                _ => continue,
            }
            let aside = h.dir.join("damaged");
            fs::create_dir_all(&aside).io_ctx("cannot create", &aside)?;
            let to = aside.join(format!("{}-{}", f.file_kind().dir(), Hash(f.name).to_hex()));
            fs::rename(&p, &to).io_ctx("cannot move aside", &p)?;
            fsutil::sync_dir(&aside)?;
            out.push(format!(
                "{} held for node {} was damaged: moved to {}; the next sync with that node or \
                 with another holder of its copy fetches it again",
                f.describe(),
                owner.to_hex(),
                to.display()
            ));
        }
    }
    Ok(out)
}

/// If `spec` names (by id or id prefix) a snapshot held here blind for another node, why it
/// cannot be read here, for people.
pub fn held_refusal(root: &Path, spec: &str) -> Option<String> {
    let prefix = spec.trim().to_ascii_lowercase();
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let now = crate::forgotten::hold_now();
    let served = all(root)
        .ok()?
        .into_iter()
        .flat_map(|(h, _)| h.served(now).unwrap_or_default());
    for (m, _) in served {
        for s in &m.spaces {
            if let Some(id) = s
                .snapshots
                .iter()
                .find(|id| Hash(**id).to_hex().starts_with(&prefix))
            {
                return Some(format!(
                    "snapshot {} is held here blind for node {} (space label {}): its data is \
                     encrypted with that association's key, which this node does not have, so \
                     it cannot be listed, restored or mounted here; restore it on a node of \
                     that association (docs/guide.md, \"Blind holders\")",
                    &Hash(*id).to_hex()[..12],
                    &Hash(m.owner).to_hex()[..16],
                    &Hash(s.label).to_hex()[..12]
                ));
            }
        }
    }
    None
}

/// What `root` holds blind for others, for listings.
pub fn summaries(root: &Path) -> Result<Vec<HeldSummary>> {
    let now = crate::forgotten::hold_now();
    let mut out = Vec::new();
    for (h, m) in all(root)? {
        let arrived_ns = fs::metadata(h.dir.join(MANIFEST))
            .and_then(|md| md.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        out.push(HeldSummary {
            owner: Hash(m.owner).to_hex(),
            seq: m.seq,
            arrived_ns,
            spaces: m
                .spaces
                .iter()
                .map(|s| (Hash(s.label).to_hex(), s.snapshots.len()))
                .collect(),
            stored_bytes: m.stored_bytes(),
            protected: h
                .kept()?
                .into_iter()
                .filter(|k| k.until_ns > now)
                .map(|k| ProtectedSummary {
                    seq: k.manifest.seq,
                    until_ns: k.until_ns,
                    stored_bytes: k.manifest.stored_bytes(),
                    snapshots: k.manifest.spaces.iter().map(|s| s.snapshots.len()).sum(),
                })
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::forget::{Signature, Signer, node_id_of_key};
    use crate::format::manifest::HeldSpace;

    fn manifest(files: Vec<HeldFile>, snapshots: Vec<[u8; 32]>) -> Manifest {
        let pk = [7u8; 32];
        Manifest {
            owner: node_id_of_key(&pk),
            repo_id: [1; 16],
            fingerprint: [2; 32],
            seq: 1,
            time_ns: 0,
            spaces: vec![HeldSpace {
                label: [3; 32],
                snapshots,
            }],
            files,
            signer: Some(Signer {
                node: node_id_of_key(&pk),
                public_key: pk,
                signature: Signature {
                    r: [0; 32],
                    s: [0; 32],
                },
            }),
        }
    }

    fn file(kind: FileKind, data: &[u8]) -> HeldFile {
        let hash = *blake3::hash(data).as_bytes();
        HeldFile {
            kind: kind.code(),
            name: hash,
            hash,
            len: data.len() as u64,
        }
    }

    /// A file arrives in ranges (resumed from what is there), is checked against the manifest
    /// when complete, a wrong one is discarded; unlisted files are freed; damage is found.
    #[test]
    fn files_arrive_resume_verify_and_are_freed() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![9u8; 10_000];
        let f = file(FileKind::Pack, &data);
        let snap = file(FileKind::Snapshot, b"sealed record");
        let m = manifest(vec![f.clone(), snap.clone()], vec![snap.name]);
        let h = Holds::open(dir.path(), &m.owner).unwrap();
        h.append(&f, 0, &data[..4000], true).unwrap();
        // Killed here: the next transfer resumes from what is durable.
        assert_eq!(h.received(&f), 4000);
        assert!(
            h.append(&f, 4000, &[0; 7000], false).is_err(),
            "past the end"
        );
        h.append(&f, 4000, &data[4000..], false).unwrap();
        h.complete(&f).unwrap();
        assert!(h.has(&f));
        // A file that does not match the manifest is discarded.
        h.append(&snap, 0, b"sealed recorX", false).unwrap();
        let e = h.complete(&snap).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert_eq!(h.received(&snap), 0);
        h.append(&snap, 0, b"sealed record", false).unwrap();
        h.complete(&snap).unwrap();
        h.publish(&m.encode().unwrap()).unwrap();
        assert_eq!(h.manifest().unwrap().unwrap().0, m);
        assert!(h.verify(0).unwrap().is_empty());
        assert_eq!(summaries(dir.path()).unwrap()[0].stored_bytes, 10_013);
        let id = Hash(snap.name).to_hex();
        assert!(
            held_refusal(dir.path(), &id[..8])
                .unwrap()
                .contains("held here blind")
        );
        assert!(held_refusal(dir.path(), "zz").is_none());

        // Damage is found without any key.
        let mut b = fs::read(h.path(&f)).unwrap();
        b[5000] ^= 1;
        fs::write(h.path(&f), &b).unwrap();
        let problems = verify_all(dir.path()).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("damaged"), "{problems:?}");

        // A newer manifest without the pack, no protection period: the pack is freed at once.
        let mut m2 = manifest(vec![snap.clone()], vec![snap.name]);
        m2.seq = 2;
        let a = h.accept(&m2.encode().unwrap(), &m2, None, 0).unwrap();
        assert_eq!((a.freed_files, a.freed_bytes), (1, 10_000));
        assert!(a.mass_removal() && a.kept_until.is_none(), "{a:?}");
        assert!(!h.path(&f).exists() && h.has(&snap));
    }

    /// Put `data` in `h` as a complete file.
    fn arrive(h: &Holds, f: &HeldFile, data: &[u8]) {
        h.append(f, 0, data, false).unwrap();
        h.complete(f).unwrap();
    }

    /// Put `data` in `h` as a complete file that arrived at `t` (ns).
    fn arrive_at(h: &Holds, f: &HeldFile, data: &[u8], t: i64) {
        arrive(h, f, data);
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(t as u64);
        fs::File::options()
            .write(true)
            .open(h.path(f))
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    /// With a protection period, a manifest that drops files keeps the one it replaces (served
    /// back with it) until the period has passed since the newest of those files arrived;
    /// one whose files a later manifest kept as long lists is let go; then the files are
    /// freed.
    #[test]
    fn a_protection_period_keeps_what_a_newer_manifest_drops() {
        let dir = tempfile::tempdir().unwrap();
        let data = |n: u8, len: usize| vec![n; len];
        let (a, b, c, junk) = (data(1, 7000), data(2, 3000), data(4, 500), data(3, 10));
        let (fa, fb, fc, fj) = (
            file(FileKind::Pack, &a),
            file(FileKind::Pack, &b),
            file(FileKind::Pack, &c),
            file(FileKind::Snapshot, &junk),
        );
        let with = |seq, files: Vec<HeldFile>| {
            let mut m = manifest(files, vec![]);
            m.seq = seq;
            (m.encode().unwrap(), m)
        };
        // Times in minutes from now (summaries read the clock).
        let t0 = crate::forgotten::hold_now();
        let at = |min: i64| t0 + min * 60_000_000_000;
        let keep = Some(at(100) - t0);
        let (b1, m1) = with(1, vec![fa.clone(), fb.clone()]);
        let h = Holds::open(dir.path(), &m1.owner).unwrap();
        arrive_at(&h, &fa, &a, at(0));
        arrive_at(&h, &fb, &b, at(5));
        let acc = h.accept(&b1, &m1, keep, at(5)).unwrap();
        assert_eq!(
            acc,
            Accepted::default(),
            "the first manifest replaces nothing"
        );
        // A manifest listing only junk: 100 % dropped, flagged; m1 kept until b's arrival
        // (5) + 100.
        let (b2, m2) = with(2, vec![fj.clone()]);
        arrive_at(&h, &fj, &junk, at(10));
        // A quota compares what m2 and the protection period would hold together.
        assert_eq!(h.bytes_after(&m2, keep, at(10)).unwrap(), 10_010);
        assert_eq!(h.bytes_after(&m2, keep, at(106)).unwrap(), 10);
        assert_eq!(h.bytes_after(&m2, None, at(10)).unwrap(), 10);
        let acc = h.accept(&b2, &m2, keep, at(10)).unwrap();
        assert!(acc.mass_removal(), "{acc:?}");
        assert_eq!(
            (
                acc.prev_seq,
                acc.dropped_bytes,
                acc.kept_until,
                acc.freed_files
            ),
            (Some(1), 10_000, Some(at(105)), 0)
        );
        assert_eq!(h.bytes_after(&m2, keep, at(50)).unwrap(), 10_010);
        let served = h.served(at(50)).unwrap();
        assert_eq!(
            served.iter().map(|(m, _)| m.seq).collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(served[1].1, b1, "served as signed");
        let refs: Vec<&Manifest> = served.iter().map(|(m, _)| m).collect();
        assert_eq!(union(&refs).len(), 3);
        assert!(h.verify(at(50)).unwrap().is_empty());
        assert_eq!(summaries(dir.path()).unwrap()[0].protected.len(), 1);
        // A third manifest dropping nothing keeps nothing new.
        let (b3, m3) = with(3, vec![fj.clone(), fc.clone()]);
        arrive_at(&h, &fc, &c, at(25));
        let acc = h.accept(&b3, &m3, keep, at(25)).unwrap();
        assert_eq!((acc.kept_until, acc.freed_files), (None, 0));
        assert!(!acc.mass_removal() && acc.dropped_bytes == 0, "{acc:?}");
        // A fourth dropping c: m3 kept until 125, m1 still until 105 (it alone lists a, b).
        let (b4, m4) = with(4, vec![fj.clone()]);
        let acc = h.accept(&b4, &m4, keep, at(30)).unwrap();
        assert_eq!(acc.kept_until, Some(at(125)));
        assert!(acc.mass_removal(), "500 of 510 bytes dropped: {acc:?}");
        assert_eq!(h.kept().unwrap().len(), 2);
        // At 105 m1 expires: a and b are freed, c kept (m3 until 125).
        assert_eq!(h.free(at(105)).unwrap(), (2, 10_000));
        assert!(h.has(&fc) && !h.path(&fa).exists() && !h.path(&fb).exists());
        assert_eq!(h.free(at(125)).unwrap(), (1, 500));
        assert!(h.kept().unwrap().is_empty() && h.has(&fj));
        // Dropping what arrived longer ago than the period keeps nothing.
        let (b5, m5) = with(5, vec![]);
        let acc = h.accept(&b5, &m5, keep, at(200)).unwrap();
        assert_eq!((acc.kept_until, acc.freed_files), (None, 1));
        // A kept manifest whose files a later one kept as long lists is let go at once.
        let (x, y) = (data(5, 100), data(6, 100));
        let (fx, fy) = (file(FileKind::Pack, &x), file(FileKind::Pack, &y));
        arrive_at(&h, &fx, &x, at(300));
        arrive_at(&h, &fy, &y, at(305));
        let (b6, m6) = with(6, vec![fx.clone(), fy.clone()]);
        h.accept(&b6, &m6, keep, at(305)).unwrap();
        let (b7, m7) = with(7, vec![fx.clone()]);
        h.accept(&b7, &m7, keep, at(310)).unwrap();
        let (b8, m8) = with(8, vec![fx.clone(), fy.clone()]);
        h.accept(&b8, &m8, keep, at(320)).unwrap();
        let (b9, m9) = with(9, vec![fx.clone()]);
        h.accept(&b9, &m9, keep, at(330)).unwrap();
        let kept: Vec<u64> = h.kept().unwrap().iter().map(|k| k.manifest.seq).collect();
        assert_eq!(kept, [8], "m6 lists nothing m8 does not");
    }
}
