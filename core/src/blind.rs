//! What a node holds blind for the nodes of other associations: `REPO/holds/<owner id>/`, a
//! namespace of its own per owner (docs/design.md, "Blind holders").
//!
//! ```text
//! holds/<owner id hex>/manifest              the newest signed manifest kept (format/manifest.rs)
//! holds/<owner id hex>/files/packs/<hex>     the files it lists, as the owner stores them
//! holds/<owner id hex>/files/snapshots/<hex>
//! holds/<owner id hex>/files/spaces/<hex>
//! holds/<owner id hex>/tmp/                  files still arriving
//! ```
//!
//! A file arrives in `tmp/`, appended range by range (made durable at checkpoints, so that an
//! interrupted transfer resumes where it stopped), then is verified against the BLAKE3 of the
//! manifest, fsynced and renamed into `files/`. The manifest is published (written atomically)
//! only once every file it lists is there; then the files it does not list are freed. Nothing
//! here is read with a key: the holder has none.

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
        ] {
            fsutil::create_dir_durable(&d)?;
        }
        for k in [FileKind::Pack, FileKind::Snapshot, FileKind::Space] {
            fsutil::create_dir_durable(&dir.join("files").join(k.dir()))?;
        }
        Ok(Holds { dir })
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

    /// Free the files `keep` does not list, and the arrivals of files it does not list.
    /// Returns the files and bytes freed.
    pub fn free(&self, keep: &Manifest) -> Result<(u64, u64)> {
        let listed: std::collections::HashSet<(String, String)> = keep
            .files
            .iter()
            .map(|f| (f.file_kind().dir().to_string(), Hash(f.name).to_hex()))
            .collect();
        let (mut files, mut bytes) = (0, 0);
        for k in [FileKind::Pack, FileKind::Snapshot, FileKind::Space] {
            let d = self.dir.join("files").join(k.dir());
            for e in fs::read_dir(&d).io_ctx("cannot list", &d)? {
                let e = e.io_ctx("cannot list", &d)?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !listed.contains(&(k.dir().to_string(), name)) {
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
            let listed = name
                .split_once('-')
                .is_some_and(|(k, n)| listed.contains(&(k.to_string(), n.to_string())));
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

    /// Read every file the manifest lists and check it (length and BLAKE3): the problems
    /// found, for people (`puce check --read-data`).
    pub fn verify(&self, m: &Manifest) -> Vec<String> {
        let mut problems = Vec::new();
        for f in &m.files {
            match hash_file(&self.path(f)) {
                Ok(got) if got == (f.len, f.hash) => {}
                Ok(_) => problems.push(format!(
                    "{} held for node {} is damaged (it does not match the owner's manifest)",
                    f.describe(),
                    Hash(m.owner).to_hex()
                )),
                Err(e) => problems.push(format!(
                    "{} held for node {} is missing or unreadable: {e}",
                    f.describe(),
                    Hash(m.owner).to_hex()
                )),
            }
        }
        problems
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
        match h.manifest() {
            Ok(Some((m, _))) => problems.extend(h.verify(&m)),
            Ok(None) => {}
            Err(err) => problems.push(format!(
                "the manifest held for node {} cannot be read: {err:#}; the next sync with \
                 that node fetches it again",
                owner.to_hex()
            )),
        }
    }
    Ok(problems)
}

/// If `spec` names (by id or id prefix) a snapshot held here blind for another node, why it
/// cannot be read here, for people.
pub fn held_refusal(root: &Path, spec: &str) -> Option<String> {
    let prefix = spec.trim().to_ascii_lowercase();
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (_, m) in all(root).ok()? {
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
        assert!(h.verify(&m).is_empty());
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

        // A newer manifest without the pack: the pack is freed.
        let m2 = manifest(vec![snap.clone()], vec![snap.name]);
        assert_eq!(h.free(&m2).unwrap(), (1, 10_000));
        assert!(!h.path(&f).exists() && h.has(&snap));
    }
}
