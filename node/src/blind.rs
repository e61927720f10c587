//! Blind holding (docs/design.md, "Blind holders"; docs/protocol.md, revisions 5 and 6): a node of
//! another association keeps a copy of an encrypted repository's spaces without its key.
//!
//! The owner signs, with its node key, a manifest of the files the held spaces need (packs,
//! sealed snapshot records, sealed space settings: `puce_core::format::manifest`). The holder
//! asks for it (`GetManifest`, `held: false`), checks the signature against the owner's pinned
//! id and that its sequence number does not go back, fetches the files it lacks by ranges
//! (`GetFile`), verifies each against the manifest, then keeps the manifest and frees what no
//! manifest kept lists ([`puce_core::blind::Holds::accept`]: with the owner's `keep_min`, the
//! manifest replaced is kept that long if it lists more). Rollbacks and mass removals are
//! flagged in the node state. The owner's nodes, and only they, get the copy back
//! (`GetManifest`, `held: true`: the newest manifest and the kept ones): a node whose files
//! are missing (a new node after a disaster, admitted by the holder with `owner` in its
//! `node.toml`) fetches them, verifies them, and indexes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use puce_core::Repo;
use puce_core::backend::FileKind as RepoKind;
use puce_core::blind::Holds;
use puce_core::format::forget::{Signature, Signer, node_id_of_key};
use puce_core::format::manifest::{FileKind, HeldFile, HeldSpace, Manifest};
use puce_core::hash::Hash;

use crate::error::{Error, ErrorKind, Result};
use crate::identity::{Identity, NodeId};
use crate::protocol::{self, Code, End, FileData, GetFile, GetManifest, ManifestBytes, Message};
use crate::session::serve::{Failure, blocking, write};
use crate::session::{Conn, NodeCtx};
use crate::state::{BlindFlag, NodeState};
use crate::transport::Sender;

/// The file in the node directory keeping the last sequence number signed.
const SEQ_FILE: &str = "blind-seq";

/// What this node offered on a connection: the files of the manifest it sent, and where they
/// are read from. Only they are served by `GetFile`.
pub struct Offer {
    files: HashMap<(u8, [u8; 32]), HeldFile>,
    from: Source,
}

enum Source {
    /// This node's own repository (it is the owner).
    Repo,
    /// What it holds for an owner.
    Held(Holds),
}

/// What a blind transfer did, for the sync report.
#[derive(Debug, Default, Clone)]
pub struct Moved {
    /// Files fetched.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files freed (holder) or already present (owner).
    pub freed: u64,
    /// What the sync report should warn about (holders that disagree).
    pub warnings: Vec<String>,
}

/// The file in the node directory keeping, per owner of a copy (node id) and per holder
/// (node id), the newest manifest of that copy the holder served (`recover`).
const SERVED_FILE: &str = "blind-served.json";

/// Compare the newest manifest `seq` of `owner`'s copy that holder `holder` serves with what
/// it and the other holders of that copy served before (kept in [`SERVED_FILE`]), record it,
/// and say what disagrees: a holder behind another (a restore from it alone would miss what
/// the other keeps), or a holder whose copy went backwards since it last served this node.
fn compare_holders(
    ctx: &NodeCtx,
    holder: &NodeId,
    owner: &NodeId,
    label: &str,
    seq: u64,
) -> Vec<String> {
    type Served = std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>;
    let path = ctx.dir.join(SERVED_FILE);
    let mut all: Served = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let served = all.entry(owner.to_string()).or_default();
    let name = |id: &str| {
        id.parse::<NodeId>()
            .ok()
            .and_then(|n| {
                ctx.config
                    .peer_by_id(&n)
                    .map(|p| format!("peer '{}'", p.name))
            })
            .unwrap_or_else(|| format!("node {id}"))
    };
    let me = holder.to_string();
    let mut out = Vec::new();
    if let Some(before) = served.get(&me).copied().filter(|b| *b > seq) {
        out.push(format!(
            "{label} serves manifest {seq} of this node's copy, but served manifest {before} \
             before: its copy went backwards (a rollback, or a restore of that node); check it"
        ));
    }
    if let Some((other, max)) = served
        .iter()
        .filter(|(id, _)| **id != me)
        .max_by_key(|(_, s)| **s)
        .filter(|(_, s)| **s > seq)
    {
        out.push(format!(
            "holders disagree: {label} serves manifest {seq} of this node's copy, {} served \
             manifest {max}: {label} is behind (it has not synced since) or was rolled back; \
             what only the newer copy keeps comes from {}",
            name(other),
            name(other)
        ));
    }
    served.insert(me, seq);
    if let Ok(b) = serde_json::to_vec(&all)
        && let Err(e) = puce_core::fsutil::write_atomic(&path, &ctx.dir, &b)
    {
        tracing::warn!("cannot record what {label} served: {e:#}");
    }
    for w in &out {
        tracing::warn!("{w}");
    }
    out
}

/// Sign `m` with the node key.
pub(crate) fn sign(identity: &Identity, mut m: Manifest) -> Result<Vec<u8>> {
    m.signer = None;
    let msg = m.signed_message()?;
    let (public_key, sig) = identity.sign(&msg)?;
    m.signer = Some(Signer {
        node: identity.id().0,
        public_key,
        signature: Signature::from_bytes(&sig)?,
    });
    Ok(m.encode()?)
}

/// Decode a manifest and check its signature: by the key of `owner` (if given), else by the
/// key of the owner it names.
pub fn verify(bytes: &[u8], owner: Option<&NodeId>) -> Result<Manifest> {
    let m =
        Manifest::decode(bytes).map_err(|e| Error::new(ErrorKind::BadObject, format!("{e:#}")))?;
    let s = m
        .signer
        .as_ref()
        .ok_or_else(|| Error::new(ErrorKind::BadObject, "the manifest is not signed"))?;
    if let Some(o) = owner
        && (node_id_of_key(&s.public_key) != o.0 || m.owner != o.0)
    {
        return Err(Error::new(
            ErrorKind::BadObject,
            format!(
                "the manifest is signed by node {}, not by the owner {o}",
                Hash(m.owner).to_hex()
            ),
        ));
    }
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &s.public_key)
        .verify(&m.signed_message()?, &s.signature.to_bytes())
        .map_err(|_| Error::new(ErrorKind::BadObject, "the manifest's signature is wrong"))?;
    Ok(m)
}

/// The manifest of what `holder` keeps of this node's spaces, signed (the owner's side).
fn build(ctx: &NodeCtx, spaces: &[String]) -> Result<Vec<u8>> {
    let repo = &ctx.repo;
    let Some(enc) = &repo.config().encryption else {
        return Err(Error::new(
            ErrorKind::NotAllowed,
            "this repository is not encrypted: its spaces cannot be held blind (a holder would \
             read them); make an encrypted one with `puce init --encrypt` and sync into it",
        ));
    };
    let held = |s: &str| spaces.iter().any(|h| h == s || h == "*");
    let stored = repo.stored_backend();
    let mut files = Vec::new();
    for (name, len) in stored.list(RepoKind::Pack)? {
        // A pack's name is the BLAKE3 of its bytes.
        if let Ok(h) = Hash::from_hex(&name) {
            files.push(HeldFile {
                kind: FileKind::Pack.code(),
                name: h.0,
                hash: h.0,
                len,
            });
        }
    }
    let mut by_space: std::collections::BTreeMap<[u8; 32], Vec<[u8; 32]>> = Default::default();
    let mut add = |kind: FileKind, name: [u8; 32]| -> Result<()> {
        let bytes = stored.read(kind.repo_kind(), &Hash(name).to_hex())?;
        files.push(HeldFile {
            kind: kind.code(),
            name,
            hash: *blake3::hash(&bytes).as_bytes(),
            len: bytes.len() as u64,
        });
        Ok(())
    };
    for s in repo.snapshots()? {
        if !held(&s.snapshot.space) {
            continue;
        }
        let label = repo
            .space_label(&s.snapshot.space)
            .map(|h| h.0)
            .unwrap_or_default();
        if !by_space.contains_key(&label)
            && stored.exists(RepoKind::Space, &Hash(label).to_hex())?
        {
            add(FileKind::Space, label)?;
        }
        add(FileKind::Snapshot, s.id.0.0)?;
        by_space.entry(label).or_default().push(s.id.0.0);
    }
    let now = now_ns();
    let seq_path = ctx.dir.join(SEQ_FILE);
    let seq = last_seq(&ctx.dir).saturating_add(1).max(now as u64);
    puce_core::fsutil::write_atomic(&seq_path, &ctx.dir, seq.to_string().as_bytes())?;
    let m = Manifest {
        owner: ctx.identity.id().0,
        repo_id: repo.config().repo_id,
        fingerprint: enc.fingerprint.0,
        seq,
        time_ns: now,
        spaces: by_space
            .into_iter()
            .map(|(label, snapshots)| HeldSpace { label, snapshots })
            .collect(),
        files,
        signer: None,
    };
    sign(&ctx.identity, m)
}

/// The last sequence number this node signed (0: none).
fn last_seq(dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(dir.join(SEQ_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Serve `GetManifest`.
pub(crate) async fn serve_manifest(
    conn: &Arc<Conn>,
    send: &mut Sender,
    r: GetManifest,
) -> Result<(), Failure> {
    let ctx = conn.ctx.clone();
    let (all, offer) = if r.held {
        let Some(owner) = conn.peer.held_owner else {
            return Err(Failure::Refuse(
                Code::NotAllowed,
                format!("this node holds nothing blind for {}", conn.label),
            ));
        };
        let root = ctx.repo.root().to_path_buf();
        let several = conn.version() >= protocol::KEPT_MANIFESTS_VERSION;
        blocking(move || {
            let h = Holds::open(&root, &owner.0)?;
            let mut served = h.served(puce_core::forgotten::hold_now())?;
            if served.is_empty() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("this node holds no copy of node {owner} yet"),
                ));
            }
            // The newest first: what does not fit in one answer is the oldest (logged).
            let mut total = 0usize;
            let fit = served
                .iter()
                .take_while(|(_, b)| {
                    total += b.len();
                    total <= protocol::MAX_HELD_MANIFESTS_BYTES
                })
                .count()
                .clamp(1, puce_core::blind::MAX_KEPT_MANIFESTS + 1);
            let fit = if several { fit } else { 1 };
            if fit < served.len() && several {
                tracing::warn!(
                    "{} of the manifests kept for node {owner} do not fit in one answer: the \
                     oldest are not sent",
                    served.len() - fit
                );
            }
            served.truncate(fit);
            let ms: Vec<&Manifest> = served.iter().map(|(m, _)| m).collect();
            let offer = offer(&puce_core::blind::union(&ms), Source::Held(h));
            let all: Vec<Vec<u8>> = served.into_iter().map(|(_, b)| b).collect();
            Ok((all, offer))
        })
        .await?
    } else {
        if conn.peer.holds_blind.is_empty() {
            return Err(Failure::Refuse(
                Code::NotAllowed,
                format!(
                    "node.toml does not make {} a blind holder of this node's spaces (add \
                     holds_blind to its [[peer]] section)",
                    conn.label
                ),
            ));
        }
        if !ctx.repo.key_exported() {
            let why = format!(
                "this node's key was never exported: a copy held blind is of no use if the key is \
                 lost with this server; run `puce key export --paper` or `puce key split` on {} \
                 first",
                ctx.config.name
            );
            tracing::warn!("refused to give {} a blind copy: {why}", conn.label);
            return Err(Failure::Refuse(Code::NotAllowed, why));
        }
        let spaces = conn.peer.holds_blind.clone();
        blocking(move || {
            let bytes = build(&ctx, &spaces)?;
            let m = Manifest::decode(&bytes)?;
            Ok((vec![bytes], offer(&m.files, Source::Repo)))
        })
        .await?
    };
    if let Ok(mut o) = conn.offer.lock() {
        *o = Some(Arc::new(offer));
    }
    let end = r.held && conn.version() >= protocol::KEPT_MANIFESTS_VERSION;
    let count = all.len() as u32;
    for bytes in all {
        write(conn, send, &Message::Manifest(ManifestBytes { bytes })).await?;
    }
    if end {
        write(conn, send, &Message::End(End { count })).await?;
    }
    Ok(())
}

fn offer(files: &[HeldFile], from: Source) -> Offer {
    Offer {
        files: files
            .iter()
            .map(|f| ((f.kind, f.name), f.clone()))
            .collect(),
        from,
    }
}

/// Serve `GetFile`: a range of a file of the manifest offered on this connection.
pub(crate) async fn serve_file(
    conn: &Arc<Conn>,
    send: &mut Sender,
    r: GetFile,
) -> Result<(), Failure> {
    let offer = conn.offer.lock().ok().and_then(|o| o.clone());
    let file = offer
        .as_ref()
        .and_then(|o| o.files.get(&(r.kind, r.name)).cloned());
    let (Some(offer), Some(file)) = (offer, file) else {
        return Err(Failure::Refuse(
            Code::NotFound,
            "no such file in the manifest sent on this connection".into(),
        ));
    };
    let end = r.offset.checked_add(u64::from(r.len));
    if r.len > protocol::MAX_FILE_RANGE || end.is_none_or(|e| e > file.len) {
        return Err(Failure::CutOff(
            Code::Protocol,
            format!(
                "it asked for {} bytes at {} of {} ({} bytes)",
                r.len,
                r.offset,
                file.describe(),
                file.len
            ),
        ));
    }
    let repo = conn.ctx.repo.clone();
    let data = blocking(move || match &offer.from {
        Source::Repo => Ok(repo.stored_backend().read_vec(
            file.file_kind().repo_kind(),
            &Hash(file.name).to_hex(),
            r.offset,
            r.len as usize,
        )?),
        Source::Held(h) => Ok(h.read_range(&file, r.offset, r.len as usize)?),
    })
    .await?;
    conn.ctx.send_limit.take(data.len() as u64).await;
    conn.counters
        .sent_bytes
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    write(conn, send, &Message::FileData(FileData { data })).await
}

/// Ask the peer for a manifest: the one to hold (`held` false), or the ones it holds for this
/// node (`held` true: the newest first, then, from a peer of revision 6, the older ones its
/// protection period keeps).
async fn ask_manifest(conn: &Arc<Conn>, held: bool) -> Result<Vec<Vec<u8>>> {
    if conn.version() < protocol::BLIND_VERSION {
        return Err(Error::new(
            ErrorKind::Incompatible,
            format!(
                "{} speaks protocol revision {}: blind holding needs revision {} (upgrade it)",
                conn.label,
                conn.version(),
                protocol::BLIND_VERSION
            ),
        ));
    }
    let several = held && conn.version() >= protocol::KEPT_MANIFESTS_VERSION;
    let mut recv = conn
        .request(&Message::GetManifest(GetManifest { held }))
        .await?;
    let mut out = Vec::new();
    let mut total = 0usize;
    loop {
        match conn.answer(&mut recv).await? {
            Message::Manifest(m)
                if out.len() <= puce_core::blind::MAX_KEPT_MANIFESTS
                    && total + m.bytes.len() <= protocol::MAX_HELD_MANIFESTS_BYTES =>
            {
                total += m.bytes.len();
                out.push(m.bytes);
                if !several {
                    return Ok(out);
                }
            }
            Message::End(e) if several && !out.is_empty() && e.count as usize == out.len() => {
                return Ok(out);
            }
            other => {
                let why = format!(
                    "it answered GetManifest with {} after {} manifests",
                    other.name(),
                    out.len()
                );
                conn.cut_off(Code::Protocol, &why);
                return Err(Error::protocol(format!("{}: {why}", conn.label)));
            }
        }
    }
}

/// Fetch `f` from `offset` to its end, handing each range to `put`.
async fn fetch(
    conn: &Arc<Conn>,
    f: &HeldFile,
    mut offset: u64,
    mut put: impl FnMut(u64, Vec<u8>) -> Result<()>,
) -> Result<u64> {
    let mut got = 0;
    while offset < f.len {
        let len = (f.len - offset).min(u64::from(protocol::MAX_FILE_RANGE)) as u32;
        let mut recv = conn
            .request(&Message::GetFile(GetFile {
                kind: f.kind,
                name: f.name,
                offset,
                len,
            }))
            .await?;
        let data = match conn.answer(&mut recv).await? {
            Message::FileData(d) if d.data.len() == len as usize => d.data,
            other => {
                let why = format!(
                    "it answered GetFile for {len} bytes of {} with {}",
                    f.describe(),
                    match other {
                        Message::FileData(d) => format!("{} bytes", d.data.len()),
                        o => o.name().to_string(),
                    }
                );
                conn.cut_off(Code::Protocol, &why);
                return Err(Error::protocol(format!("{}: {why}", conn.label)));
            }
        };
        conn.ctx.recv_limit.take(u64::from(len)).await;
        conn.counters
            .fetched_bytes
            .fetch_add(u64::from(len), Ordering::Relaxed);
        put(offset, data)?;
        offset += u64::from(len);
        got += u64::from(len);
    }
    Ok(got)
}

/// The holder's side: fetch the owner's manifest and the files it lacks, keep it, free the
/// rest (what it dropped only once the owner's protection period here has passed). A rollback
/// is refused and a mass removal accepted; both are flagged in the node state and logged.
pub async fn hold(conn: &Arc<Conn>) -> Result<Moved> {
    let bytes = ask_manifest(conn, false).await?.swap_remove(0);
    let owner = conn.peer.id;
    let m = verify(&bytes, Some(&owner)).map_err(|e| e.context(&conn.label))?;
    let root = conn.ctx.repo.root().to_path_buf();
    let h = tokio::task::spawn_blocking(move || Holds::open(&root, &owner.0))
        .await
        .map_err(|e| Error::internal(format!("{e}")))??;
    if let Some((kept, _)) = h.manifest()?
        && kept.seq > m.seq
    {
        let why = format!(
            "{} sent a manifest older than the one kept (sequence {} after {}): a rollback, \
             refused; the copy held stays as it was",
            conn.label, m.seq, kept.seq
        );
        tracing::warn!("{why}");
        flag(
            conn,
            BlindFlag {
                kind: "rollback".into(),
                at_ns: now_ns(),
                seq_before: kept.seq,
                seq_after: m.seq,
                bytes_before: kept.stored_bytes(),
                dropped_bytes: 0,
                kept_until_ns: None,
            },
        );
        return Err(Error::new(ErrorKind::BadObject, why));
    }
    let keep_ns = conn
        .peer
        .keep_min
        .map(|k| i64::try_from(k.as_nanos()).unwrap_or(i64::MAX));
    if let Some(q) = conn.peer.quota {
        let (h2, m2) = (h.clone(), m.clone());
        let after = tokio::task::spawn_blocking(move || {
            h2.bytes_after(&m2, keep_ns, puce_core::forgotten::hold_now())
        })
        .await
        .map_err(|e| Error::internal(format!("{e}")))??;
        if after > q {
            return Err(Error::new(
                ErrorKind::Quota,
                format!(
                    "quota exceeded: {} asks this node to hold {after} bytes blind (its new \
                     manifest, {} bytes, and what the protection period keeps here), over its \
                     quota of {q} bytes: nothing fetched (raise `quota` in its [[peer]] section \
                     and reload, let it hold fewer spaces here, or wait until keep_min has \
                     passed for what it dropped)",
                    conn.label,
                    m.stored_bytes()
                ),
            ));
        }
    }
    let mut moved = fetch_missing(conn, &h, m.files.iter()).await?;
    let (h2, m2) = (h.clone(), m.clone());
    let a = tokio::task::spawn_blocking(move || {
        h2.accept(&bytes, &m2, keep_ns, puce_core::forgotten::hold_now())
    })
    .await
    .map_err(|e| Error::internal(format!("{e}")))??;
    moved.freed = a.freed_files;
    if let (true, Some(seq_before)) = (a.mass_removal(), a.prev_seq) {
        tracing::warn!(
            "{} sent manifest {} that drops {} of the {} bytes of the one before ({seq_before}): \
             a mass removal, flagged; {}",
            conn.label,
            m.seq,
            a.dropped_bytes,
            a.prev_bytes,
            match a.kept_until {
                Some(t) => format!("what it dropped is kept here until {}", date(t)),
                None => "no protection period (keep_min) here: it is freed".into(),
            }
        );
        flag(
            conn,
            BlindFlag {
                kind: "mass_removal".into(),
                at_ns: now_ns(),
                seq_before,
                seq_after: m.seq,
                bytes_before: a.prev_bytes,
                dropped_bytes: a.dropped_bytes,
                kept_until_ns: a.kept_until,
            },
        );
    }
    tracing::info!(
        "holding {} blind: manifest {}, {} files fetched ({} bytes), {} freed ({} bytes){}",
        conn.label,
        m.seq,
        moved.files,
        moved.bytes,
        moved.freed,
        a.freed_bytes,
        match a.kept_until {
            Some(t) => format!(
                "; the manifest replaced is kept until {} (keep_min): {} bytes it lists are \
                 no longer listed",
                date(t),
                a.dropped_bytes
            ),
            None => String::new(),
        }
    );
    Ok(moved)
}

/// Fetch the `files` that `h` does not hold complete, each checked on arrival.
async fn fetch_missing(
    conn: &Arc<Conn>,
    h: &Holds,
    files: impl Iterator<Item = &HeldFile>,
) -> Result<Moved> {
    let checkpoint = conn.ctx.config.checkpoint;
    let mut moved = Moved::default();
    for f in files {
        if h.has(f) {
            continue;
        }
        let start = h.received(f);
        let mut since = 0u64;
        let got = fetch(conn, f, start, |offset, data| {
            since += data.len() as u64;
            let durable = since >= checkpoint;
            if durable {
                since = 0;
            }
            Ok(h.append(f, offset, &data, durable)?)
        })
        .await?;
        // Reads the whole file again: off the async threads.
        let (h2, f2) = (h.clone(), f.clone());
        tokio::task::spawn_blocking(move || h2.complete(&f2))
            .await
            .map_err(|e| Error::internal(format!("{e}")))?
            .map_err(|e| Error::from(e).context(&conn.label))?;
        moved.files += 1;
        moved.bytes += got;
    }
    Ok(moved)
}

/// A holder's side with another holder of `owner` (each admits the other for its copy with
/// `owner` in its `node.toml`): the files of the manifests kept here for `owner` that are
/// missing or incomplete here are fetched from the peer's copy, if its manifests (each
/// checked against the owner's signature) list them with the same length and hash; each is
/// checked on arrival. The owner may be offline. Nothing is asked while nothing is missing.
pub async fn heal(conn: &Arc<Conn>, owner: NodeId) -> Result<Moved> {
    let root = conn.ctx.repo.root().to_path_buf();
    let Some(h) = Holds::existing(&root, &owner.0) else {
        return Ok(Moved::default());
    };
    let (h2, now) = (h.clone(), puce_core::forgotten::hold_now());
    let ours = tokio::task::spawn_blocking(move || h2.served(now))
        .await
        .map_err(|e| Error::internal(format!("{e}")))??;
    let ours: Vec<&Manifest> = ours.iter().map(|(m, _)| m).collect();
    let missing: Vec<HeldFile> = puce_core::blind::union(&ours)
        .into_iter()
        .filter(|f| !h.has(f))
        .collect();
    if missing.is_empty() {
        return Ok(Moved::default());
    }
    let all = match ask_manifest(conn, true).await {
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Refused) => {
            tracing::info!(
                "{} files held for node {owner} are missing here; {} has no copy to heal them \
                 from: {e:#}",
                missing.len(),
                conn.label
            );
            return Ok(Moved::default());
        }
        r => r?,
    };
    let mut theirs = Vec::new();
    for b in &all {
        theirs.push(verify(b, Some(&owner)).map_err(|e| e.context(&conn.label))?);
    }
    let same = |f: &HeldFile| (f.kind, f.name, f.hash, f.len);
    let theirs: std::collections::HashSet<_> =
        puce_core::blind::union(&theirs.iter().collect::<Vec<_>>())
            .iter()
            .map(same)
            .collect();
    let healable = missing.iter().filter(|f| theirs.contains(&same(f)));
    let moved = fetch_missing(conn, &h, healable).await?;
    let left = missing.len() as u64 - moved.files;
    tracing::info!(
        "healed {} files ({} bytes) held for node {owner} from {}{}",
        moved.files,
        moved.bytes,
        conn.label,
        if left > 0 {
            format!("; {left} are not in its copy")
        } else {
            String::new()
        }
    );
    Ok(moved)
}

/// Record a blind-holding flag about the peer in the node state (a failure to is logged).
fn flag(conn: &Conn, f: BlindFlag) {
    let peer = &conn.peer;
    if let Err(e) = NodeState::update(&conn.ctx.dir, |st| {
        let p = st.peers.entry(peer.id.to_string()).or_default();
        p.name.clone_from(&peer.name);
        p.flag_blind(f);
    }) {
        tracing::warn!(
            "cannot record a flag about {} in the node state: {e:#}",
            conn.label
        );
    }
}

fn date(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ns.to_string())
}

/// The owner's side: fetch the copy the holder keeps for this node (or the owner it replaces):
/// the newest manifest and the older ones its protection period keeps, each checked against
/// the owner's signature, and take every file of those this node may take back that this
/// repository lacks: packs first (indexed), then space settings, then snapshot records, so
/// that a snapshot appears only once all it needs is here.
pub async fn recover(conn: &Arc<Conn>) -> Result<Moved> {
    let all = match ask_manifest(conn, true).await {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Moved::default()),
        r => r?,
    };
    let newest = verify(&all[0], None).map_err(|e| e.context(&conn.label))?;
    let owner = NodeId(newest.owner);
    let mut ms = vec![newest];
    for b in &all[1..] {
        ms.push(verify(b, Some(&owner)).map_err(|e| e.context(&conn.label))?);
    }
    let ours = conn.ctx.key().map(|k| k.0);
    if let Some(m) = ms.iter().find(|m| Some(m.fingerprint) != ours) {
        return Err(Error::new(
            ErrorKind::Incompatible,
            format!(
                "{} holds a copy made with the key of fingerprint {}, this repository's key \
                 differs: make this repository with `puce init --encrypt --key-from KEYFILE` \
                 (the key file of node {}'s repository) to restore from it",
                conn.label,
                puce_core::crypto::Fingerprint(m.fingerprint),
                Hash(m.owner).to_hex()
            ),
        ));
    }
    // Compared only now: a copy under another key is not this node's, and says nothing of
    // what the other holders keep.
    let warnings = compare_holders(&conn.ctx, &conn.peer.id, &owner, &conn.label, ms[0].seq);
    // A copy older than the newest manifest this node signed lists what it has since
    // forgotten and collected: taking it would bring that back. Only a copy at least as new
    // (damage or loss here), or any copy for a node that never signed one (a new node after a
    // disaster: every state the holder keeps), is taken.
    let last = last_seq(&conn.ctx.dir);
    ms.retain(|m| m.seq >= last);
    if ms.is_empty() {
        tracing::info!(
            "{} holds manifests of this node's spaces older than the last one signed ({last}): \
             nothing taken back from them; it catches up at its next sync",
            conn.label,
        );
        return Ok(Moved {
            warnings,
            ..Moved::default()
        });
    }
    let files = puce_core::blind::union(&ms.iter().collect::<Vec<_>>());
    let repo = conn.ctx.repo.clone();
    let mut moved = Moved {
        warnings,
        ..Moved::default()
    };
    for kind in [FileKind::Pack, FileKind::Space, FileKind::Snapshot] {
        if kind == FileKind::Space {
            let r = repo.clone();
            tokio::task::spawn_blocking(move || puce_core::orphans::index_orphan_packs(&r))
                .await
                .map_err(|e| Error::internal(format!("{e}")))??;
        }
        for f in files.iter().filter(|f| f.file_kind() == kind) {
            let name = Hash(f.name).to_hex();
            if repo.stored_backend().exists(kind.repo_kind(), &name)?
                || (kind == FileKind::Snapshot
                    && repo.stored_backend().exists(RepoKind::Forget, &name)?)
            {
                moved.freed += 1;
                continue;
            }
            moved.bytes += take_file(conn, &repo, f).await?;
            moved.files += 1;
        }
    }
    tracing::info!(
        "recovered from {}: {} files ({} bytes) of manifests {}",
        conn.label,
        moved.files,
        moved.bytes,
        ms.iter()
            .map(|m| m.seq.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(moved)
}

/// Fetch one file into the repository as stored, verified against the manifest before it is
/// published.
async fn take_file(conn: &Arc<Conn>, repo: &Arc<Repo>, f: &HeldFile) -> Result<u64> {
    let mut w = repo.stored_backend().create(f.file_kind().repo_kind())?;
    let mut hasher = blake3::Hasher::new();
    let r = fetch(conn, f, 0, |_, data| {
        hasher.update(&data);
        std::io::Write::write_all(&mut w, &data)
            .map_err(|e| Error::new(ErrorKind::Store, format!("cannot write: {e}")))
    })
    .await;
    let got = match r {
        Ok(n) => n,
        Err(e) => {
            w.abort();
            return Err(e);
        }
    };
    if *hasher.finalize().as_bytes() != f.hash {
        w.abort();
        return Err(Error::new(
            ErrorKind::BadObject,
            format!(
                "{}: {} does not match its manifest: not stored",
                conn.label,
                f.describe()
            ),
        ));
    }
    w.finish(&Hash(f.name).to_hex())?;
    Ok(got)
}
