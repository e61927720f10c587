//! puce-s3: keep a repository's packs and records in an S3-compatible object store (Garage,
//! MinIO, Ceph RGW, AWS S3), with the index staying in a local directory.
//!
//! Built on the `object_store` crate's S3 client. The core's storage trait is synchronous; this
//! backend owns a small tokio runtime and blocks on it, so `puce-core` stays free of async code
//! and network dependencies.
//!
//! - Writes of packs go to a local temporary file, then are uploaded whole (multipart above
//!   [`MULTIPART_ABOVE`], several parts in flight) when the pack is sealed; the upload has
//!   completed when [`ObjectWriter::finish`] returns. An S3 PUT is atomic: a reader never sees a
//!   partial object.
//! - Reads are ranged GETs of single entries, with a bounded in-memory cache of recent ranges.
//!   Ranges a reader will need soon ([`Backend::will_need`]: the mount's sequential readers)
//!   are fetched ahead, a few GETs in flight, into that cache.
//! - Transient errors (connection refused, timeouts, 5xx) are retried with exponential backoff
//!   up to [`S3Config::retry_timeout`]; then a clear error names the operation and the endpoint.
//! - Credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   optionally `AWS_SESSION_TOKEN`) or a credentials file; they are never written into the
//!   repository.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use puce_core::backend::{Backend, FileKind, ObjectWriter};
use puce_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

mod cache;
use cache::RangeCache;

/// Packs larger than this are uploaded in parts.
pub const MULTIPART_ABOVE: u64 = 16 << 20;
/// Part size of multipart uploads.
pub const PART_SIZE: usize = 8 << 20;
/// Parts uploaded at once.
pub const PARTS_IN_FLIGHT: usize = 4;
/// Reads of pack entries fetch this much around them (aligned), so that reading the objects of
/// a pack in order (a restore, a repack) costs one GET per window instead of one per object.
pub const READ_WINDOW: u64 = 4 << 20;

/// Name of the file, in the local repository directory, that says where the data lives.
pub const LOCAL_MARKER: &str = "backend.toml";

/// Where a repository's files are: written to `REPO/backend.toml` (no credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Location {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// Endpoint URL, e.g. `http://127.0.0.1:3900` for a local Garage.
    pub endpoint: Option<String>,
    /// Region name (Garage's default is `garage`).
    pub region: String,
}

impl S3Location {
    /// Split the URL into bucket and prefix.
    pub fn bucket_prefix(&self) -> Result<(String, String)> {
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| {
            Error::invalid(format!(
                "'{}' is not an s3:// URL (use s3://BUCKET/PREFIX)",
                self.url
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(format!("'{}' names no bucket", self.url)));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }

    /// Warnings about these settings: a plain `http://` endpoint on another machine sends the
    /// data and the access key id unencrypted over the network.
    pub fn warnings(&self) -> Vec<String> {
        let Some(ep) = &self.endpoint else {
            return Vec::new();
        };
        let Some(rest) = ep
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .and_then(|_| ep.get(7..))
        else {
            return Vec::new();
        };
        if is_loopback_host(rest) {
            return Vec::new();
        }
        vec![format!(
            "the S3 endpoint {ep} is plain http:// to another machine: the repository's data and \
             the access key id travel unencrypted, readable and changeable on the way; use an \
             https:// endpoint"
        )]
    }

    /// Read `REPO/backend.toml`, if the repository keeps its data in S3.
    pub fn load(repo_dir: &Path) -> Result<Option<S3Location>> {
        let p = repo_dir.join(LOCAL_MARKER);
        match std::fs::read_to_string(&p) {
            Ok(s) => toml::from_str(&s)
                .map(Some)
                .map_err(|e| Error::corrupt(format!("{} is not valid: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot read", &p, e)),
        }
    }

    /// Write `REPO/backend.toml`.
    pub fn save(&self, repo_dir: &Path) -> Result<()> {
        let body = toml::to_string(self)
            .map_err(|e| Error::other(format!("cannot encode the backend settings: {e}")))?;
        let text = format!(
            "# Where this repository's packs and records live. Credentials are not stored here:\n\
             # they come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a credentials file.\n{body}"
        );
        puce_core::fsutil::create_dir_durable(repo_dir)?;
        puce_core::fsutil::write_atomic(&repo_dir.join(LOCAL_MARKER), repo_dir, text.as_bytes())
    }
}

/// Whether the authority part of a URL (`host[:port][/...]`) names this machine.
fn is_loopback_host(authority: &str) -> bool {
    let auth = authority.split(['/', '?', '#']).next().unwrap_or("");
    let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Access keys. Their `Debug` form shows the access key id only.
#[derive(Clone, Deserialize)]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Optional session token.
    #[serde(default)]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// A warning if the credentials file `path` (mode `mode`) is open to other users.
fn credentials_file_warning(path: &Path, mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "the S3 credentials file {} can be read or changed by other users (mode {:04o}): \
             run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        )
    })
}

impl Credentials {
    /// From `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else from the TOML file named by
    /// `PUCE_S3_CREDENTIALS`, else from `$XDG_CONFIG_HOME/puce/s3-credentials.toml`; with
    /// warnings to show (a credentials file other users can read).
    pub fn discover(config_dir: Option<&Path>) -> Result<(Credentials, Vec<String>)> {
        if let (Ok(id), Ok(secret)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            let c = Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
            };
            return Ok((c, Vec::new()));
        }
        let file = std::env::var_os("PUCE_S3_CREDENTIALS")
            .map(PathBuf::from)
            .or_else(|| config_dir.map(|d| d.join("s3-credentials.toml")));
        if let Some(f) = file
            && let Ok(mut file) = File::open(&f)
        {
            let mut text = String::new();
            file.read_to_string(&mut text)
                .map_err(|e| Error::io("cannot read", &f, e))?;
            let c = toml::from_str(&text).map_err(|e| {
                Error::invalid(format!(
                    "{} is not a valid credentials file ({e}): it holds access_key_id and \
                     secret_access_key",
                    f.display()
                ))
            })?;
            let warnings = file
                .metadata()
                .ok()
                .and_then(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    credentials_file_warning(&f, m.permissions().mode())
                })
                .into_iter()
                .collect();
            return Ok((c, warnings));
        }
        Err(Error::invalid(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write \
             access_key_id and secret_access_key into the file named by PUCE_S3_CREDENTIALS \
             (default ~/.config/puce/s3-credentials.toml)",
        ))
    }
}

/// Settings of the S3 backend.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Where.
    pub location: S3Location,
    /// With what keys.
    pub credentials: Credentials,
    /// Give up on a request after retrying this long.
    pub retry_timeout: Duration,
    /// Bytes of recently read ranges kept in memory.
    pub cache_bytes: usize,
    /// Local directory for packs being written.
    pub tmp_dir: PathBuf,
}

/// A repository's files in an S3 bucket.
pub struct S3Backend {
    inner: Arc<Inner>,
    cache: Arc<Mutex<RangeCache>>,
    /// Pack windows being fetched (name, start), ahead or for a reader; readers of one wait
    /// for that fetch.
    ahead: Arc<Fetching>,
    sizes: Mutex<lru::LruCache<String, u64>>,
    tmp_dir: PathBuf,
}

/// What writers share with their backend.
struct Inner {
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
    prefix: String,
    describe: String,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Backend({})", self.inner.describe)
    }
}

/// Pack windows being fetched (name, start), and the signal that one ended.
type Fetching = (Mutex<HashSet<(String, u64)>>, Condvar);

fn map_err(op: &str, what: &str, describe: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => {
            Error::not_found(format!("{what} does not exist in {describe}"))
        }
        other => {
            let mut text = other.to_string();
            let mut cur: Option<&(dyn std::error::Error + 'static)> =
                std::error::Error::source(&other);
            while let Some(e) = cur {
                text.push_str(&e.to_string());
                cur = e.source();
            }
            let hint = if text.contains("onnect")
                || text.contains("timed out")
                || text.contains("error sending request")
            {
                " (the object store did not answer: is it running and reachable? puce retried \
                 with backoff before giving up)"
            } else if text.contains("403")
                || text.contains("AccessDenied")
                || text.contains("Forbidden")
            {
                " (access denied: check the credentials and the bucket's permissions)"
            } else {
                ""
            };
            Error::new(
                ErrorKind::Io,
                format!("{op} {what} in {describe} failed{hint}"),
            )
            .with_source(other)
        }
    }
}

impl S3Backend {
    /// Connect to the bucket (no request is made until the first operation).
    pub fn open(cfg: S3Config) -> Result<S3Backend> {
        // One TLS provider in the whole build: ring. Install it as the process default if
        // nothing did yet (rustls would pick it anyway, being the only one compiled in).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (bucket, prefix) = cfg.location.bucket_prefix()?;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region(&cfg.location.region)
            .with_access_key_id(&cfg.credentials.access_key_id)
            .with_secret_access_key(&cfg.credentials.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 8,
                retry_timeout: cfg.retry_timeout,
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(t) = &cfg.credentials.session_token {
            b = b.with_token(t);
        }
        if let Some(ep) = &cfg.location.endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"));
        }
        let store = b
            .build()
            .map_err(|e| Error::invalid(format!("bad S3 settings: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("puce-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::other(format!("cannot start the S3 client runtime: {e}")))?;
        puce_core::fsutil::create_private_dirs(&cfg.tmp_dir)
            .map_err(|e| Error::io("cannot create", &cfg.tmp_dir, e))?;
        let describe = format!(
            "{}{}",
            cfg.location.url,
            cfg.location
                .endpoint
                .as_ref()
                .map(|e| format!(" at {e}"))
                .unwrap_or_default()
        );
        Ok(S3Backend {
            inner: Arc::new(Inner {
                store,
                rt,
                prefix,
                describe,
            }),
            cache: Arc::new(Mutex::new(RangeCache::new(cfg.cache_bytes))),
            ahead: Arc::new((Mutex::new(HashSet::new()), Condvar::new())),
            sizes: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(4096).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            tmp_dir: cfg.tmp_dir,
        })
    }
}

impl Inner {
    fn key(&self, kind: FileKind, name: &str) -> Result<ObjPath> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::invalid(format!("invalid file name {name:?}")));
        }
        let rel = match kind {
            FileKind::Config => "config".to_string(),
            FileKind::Pack => format!("packs/{}/{name}", name.get(..2).unwrap_or("00")),
            k => format!("{}/{name}", k.dir()),
        };
        Ok(if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        })
    }

    fn dir_prefix(&self, kind: FileKind) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(kind.dir())
        } else {
            ObjPath::from(format!("{}/{}", self.prefix, kind.dir()))
        }
    }

    fn put_file(&self, key: &ObjPath, file: &mut File, len: u64) -> Result<()> {
        let what = key.to_string();
        if len <= MULTIPART_ABOVE {
            let mut data = Vec::with_capacity(len as usize);
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.read_to_end(&mut data))
                .map_err(|e| Error::io_op("cannot read the pack being uploaded", e))?;
            return self
                .rt
                .block_on(self.store.put(key, PutPayload::from(data)))
                .map(|_| ())
                .map_err(|e| map_err("upload of", &what, &self.describe, e));
        }
        self.rt.block_on(async {
            let upload = self
                .store
                .put_multipart(key)
                .await
                .map_err(|e| map_err("upload of", &what, &self.describe, e))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Error::io_op("cannot read the pack being uploaded", e))?;
            let mut buf = vec![0u8; PART_SIZE];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| Error::io_op("cannot read the pack being uploaded", e))?;
                if n == 0 {
                    break;
                }
                w.wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| map_err("upload of", &what, &self.describe, e))?;
                w.write(&buf[..n]);
            }
            w.finish()
                .await
                .map(|_| ())
                .map_err(|e| map_err("upload of", &what, &self.describe, e))
        })
    }
}

impl S3Backend {
    /// The size of a pack (remembered: packs never change).
    fn pack_size(&self, name: &str) -> Result<u64> {
        if let Some(n) = self
            .sizes
            .lock()
            .ok()
            .and_then(|mut c| c.get(name).copied())
        {
            return Ok(n);
        }
        let n = self.size(FileKind::Pack, name)?;
        if let Ok(mut c) = self.sizes.lock() {
            c.put(name.to_string(), n);
        }
        Ok(n)
    }

    /// GET bytes `start..end` of a file, checking the length.
    fn get_range(&self, kind: FileKind, name: &str, start: u64, end: u64) -> Result<Bytes> {
        let key = self.inner.key(kind, name)?;
        self.inner.rt.block_on(fetch_range(
            &self.inner.store,
            &key,
            &self.inner.describe,
            start,
            end,
        ))
    }

    /// Fill `buf` from `offset` of pack `name` out of the aligned windows it overlaps.
    fn read_windowed(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| Error::invalid("read range overflows"))?;
        let size = self.pack_size(name)?;
        if end > size {
            return Err(Error::corrupt(format!(
                "{name} in {} is shorter than expected: {end} > {size} bytes (truncated object)",
                self.inner.describe
            )));
        }
        for p in cache::pieces(offset, end, size) {
            let window = self.window(name, p.start, p.end)?;
            let bytes = window.get(p.from..p.from + p.len).ok_or_else(|| {
                Error::corrupt(format!(
                    "window {}..{} of {name} in {} is {} bytes (truncated object)",
                    p.start,
                    p.end,
                    self.inner.describe,
                    window.len()
                ))
            })?;
            buf[p.to..p.to + p.len].copy_from_slice(bytes);
        }
        Ok(())
    }

    /// Bytes `start..end` of pack `name` (an aligned window), from the cache, or fetched once:
    /// readers of a window being fetched (ahead, or for another reader) wait for that fetch.
    fn window(&self, name: &str, start: u64, end: u64) -> Result<Bytes> {
        let ck = (name.to_string(), start, (end - start) as usize);
        let claim = (name.to_string(), start);
        let cached = |ck| self.cache.lock().ok().and_then(|mut c| c.get(ck));
        let (set, cv) = &*self.ahead;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut claimed = false;
        loop {
            if let Some(w) = cached(&ck) {
                return Ok(w);
            }
            let Ok(mut g) = set.lock() else { break };
            if !g.contains(&claim) {
                claimed = g.insert(claim.clone());
                break;
            }
            // Another fetch of this window is on its way; a fetch that never reports is done
            // again here after a while.
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || cv.wait_timeout(g, left).is_err() {
                break;
            }
        }
        // The fetch that was on its way may have ended between the two looks.
        let r = match cached(&ck) {
            Some(w) => Ok(w),
            None => {
                let r = self.get_range(FileKind::Pack, name, start, end);
                if let Ok(w) = &r
                    && let Ok(mut c) = self.cache.lock()
                {
                    c.put(ck, w.clone());
                }
                r
            }
        };
        if claimed {
            release(&self.ahead, &claim);
        }
        r
    }
}

/// The fetch of window `claim` ended (in the cache, or failed): let its waiters look again.
fn release(ahead: &Fetching, claim: &(String, u64)) {
    if let Ok(mut set) = ahead.0.lock() {
        set.remove(claim);
    }
    ahead.1.notify_all();
}

/// Windows fetched ahead at most at once (each [`READ_WINDOW`] bytes).
const AHEAD_WINDOWS: usize = 8;

/// GET bytes `start..end` of object `key`, checking the length.
async fn fetch_range(
    store: &AmazonS3,
    key: &ObjPath,
    describe: &str,
    start: u64,
    end: u64,
) -> Result<Bytes> {
    let data = store
        .get_range(key, start..end)
        .await
        .map_err(|e| map_err("read of", key.as_ref(), describe, e))?;
    if data.len() as u64 != end - start {
        return Err(Error::corrupt(format!(
            "{key} in {describe} is shorter than expected: got {} bytes at offset {start}, \
             wanted {} (truncated object)",
            data.len(),
            end - start
        )));
    }
    Ok(data)
}

impl Backend for S3Backend {
    fn is_remote(&self) -> bool {
        true
    }

    fn location(&self) -> String {
        self.inner.describe.clone()
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let key = self.inner.key(kind, name)?;
        self.inner
            .rt
            .block_on(async {
                let r = self.inner.store.get(&key).await?;
                r.bytes().await
            })
            .map(|b| b.to_vec())
            .map_err(|e| map_err("read of", key.as_ref(), &self.inner.describe, e))
    }

    fn read_at(&self, kind: FileKind, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| Error::invalid("read range overflows"))?;
        // A range inside one aligned window of a pack: served from (or fetched with) the
        // window. Others (a restore's coalesced ranges) are GETs of their own.
        if kind == FileKind::Pack && cache::in_one_window(offset, end) {
            return self.read_windowed(name, offset, buf);
        }
        let data = self.get_range(kind, name, offset, end)?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn read_ranges_into(
        &self,
        kind: FileKind,
        name: &str,
        ranges: &[(u64, usize)],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        for &(offset, len) in ranges {
            let start = out.len();
            out.resize(start + len, 0);
            // The entries of a read through the mount: from the windows around them, also
            // when one straddles two (it would otherwise be a GET of its own, for bytes the
            // windows on either side bring anyway).
            if kind == FileKind::Pack && len as u64 <= READ_WINDOW / 2 {
                self.read_windowed(name, offset, &mut out[start..])?;
            } else {
                self.read_at(kind, name, offset, &mut out[start..])?;
            }
        }
        Ok(())
    }

    fn will_need(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) {
        if kind != FileKind::Pack {
            return;
        }
        let (Ok(key), Ok(size)) = (self.inner.key(kind, name), self.pack_size(name)) else {
            return;
        };
        for &(offset, len) in ranges {
            for (w, w_end) in cache::windows(offset, offset.saturating_add(len as u64), size) {
                let ck = (name.to_string(), w, (w_end - w) as usize);
                let cached = self.cache.lock().is_ok_and(|mut c| c.get(&ck).is_some());
                let claimed = !cached
                    && self.ahead.0.lock().is_ok_and(|mut set| {
                        set.len() < AHEAD_WINDOWS && set.insert((name.to_string(), w))
                    });
                if claimed {
                    // The task holds no reference to the runtime's owner: the runtime is only
                    // ever dropped with the backend, outside its own threads.
                    let (store, key, describe) = (
                        self.inner.store.clone(),
                        key.clone(),
                        self.inner.describe.clone(),
                    );
                    let (cache, ahead) = (self.cache.clone(), self.ahead.clone());
                    let claim = (name.to_string(), w);
                    self.inner.rt.spawn(async move {
                        match fetch_range(&store, &key, &describe, w, w_end).await {
                            Ok(b) => {
                                if let Ok(mut c) = cache.lock() {
                                    c.put(ck, b);
                                }
                            }
                            Err(e) => tracing::debug!("read-ahead of {key}: {e}"),
                        }
                        release(&ahead, &claim);
                    });
                }
            }
        }
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let key = self.inner.key(kind, name)?;
        self.inner
            .rt
            .block_on(self.inner.store.head(&key))
            .map(|m| m.size)
            .map_err(|e| map_err("stat of", key.as_ref(), &self.inner.describe, e))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let key = self.inner.key(kind, name)?;
        self.inner
            .rt
            .block_on(self.inner.store.put(&key, PutPayload::from(data.to_vec())))
            .map(|_| ())
            .map_err(|e| map_err("write of", key.as_ref(), &self.inner.describe, e))
    }

    fn create(&self, kind: FileKind) -> Result<Box<dyn ObjectWriter>> {
        let path = self
            .tmp_dir
            .join(puce_core::fsutil::temp_name("s3-upload-"));
        let file = puce_core::fsutil::private_file()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("cannot create", &path, e))?;
        Ok(Box::new(S3Writer {
            inner: self.inner.clone(),
            file: Some(file),
            path,
            kind,
            len: 0,
        }))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        if kind == FileKind::Config {
            return match self.size(kind, "config") {
                Ok(n) => Ok(vec![("config".into(), n)]),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let prefix = self.inner.dir_prefix(kind);
        let what = prefix.to_string();
        self.inner.rt.block_on(async {
            let mut out = Vec::new();
            let mut s = self.inner.store.list(Some(&prefix));
            while let Some(item) = s.next().await {
                let meta =
                    item.map_err(|e| map_err("listing of", &what, &self.inner.describe, e))?;
                if let Some(name) = meta.location.filename() {
                    out.push((name.to_string(), meta.size));
                }
            }
            out.sort();
            Ok(out)
        })
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let key = self.inner.key(kind, name)?;
        if let Ok(mut c) = self.cache.lock() {
            c.forget(name);
        }
        if let Ok(mut c) = self.sizes.lock() {
            c.pop(name);
        }
        match self.inner.rt.block_on(self.inner.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err("delete of", key.as_ref(), &self.inner.describe, e)),
        }
    }
}

/// A pack being written: a local temporary file uploaded on `finish`.
struct S3Writer {
    inner: Arc<Inner>,
    file: Option<File>,
    path: PathBuf,
    kind: FileKind,
    len: u64,
}

impl Write for S3Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("writer finished"))?;
        let n = f.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>, name: &str) -> Result<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::other("writer already finished"))?;
        let key = self.inner.key(self.kind, name)?;
        let r = self.inner.put_file(&key, &mut file, self.len);
        drop(file);
        let _ = std::fs::remove_file(&self.path);
        r
    }
    fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(endpoint: Option<&str>) -> S3Location {
        S3Location {
            url: "s3://b/p".into(),
            endpoint: endpoint.map(String::from),
            region: "garage".into(),
        }
    }

    /// Plain http:// is warned about unless it stays on this machine; https:// never is.
    #[test]
    fn plain_http_to_another_machine_is_warned_about() {
        for ep in [
            "http://backup.example.org:3900",
            "HTTP://10.1.2.3:3900/",
            "http://[2001:db8::1]:3900",
            "http://127.0.0.1.example.org",
            "http://localhost@evil.example.org",
        ] {
            let w = loc(Some(ep)).warnings();
            assert_eq!(w.len(), 1, "{ep}: {w:?}");
            assert!(w[0].contains(ep) && w[0].contains("https://"), "{}", w[0]);
        }
        for ep in [
            "http://127.0.0.1:3900",
            "http://127.8.9.10",
            "http://localhost:3900/",
            "http://LOCALHOST",
            "http://[::1]:3900",
            "http://user@127.0.0.1:3900",
            "https://s3.example.org",
        ] {
            assert!(loc(Some(ep)).warnings().is_empty(), "{ep}");
        }
        assert!(loc(None).warnings().is_empty());
    }

    /// A credentials file open to the group or to others is warned about; 0600 and 0400 are
    /// not.
    #[test]
    fn a_credentials_file_others_can_read_is_warned_about() {
        let p = Path::new("/home/u/.config/puce/s3-credentials.toml");
        for mode in [0o100644, 0o100640, 0o100604, 0o100620] {
            let w = credentials_file_warning(p, mode).unwrap();
            assert!(w.contains("chmod 600") && w.contains(&format!("{:04o}", mode & 0o7777)));
        }
        for mode in [0o100600, 0o100400] {
            assert!(credentials_file_warning(p, mode).is_none());
        }
    }

    /// The secret key and the session token never appear in debug output, nor in that of the
    /// settings holding them.
    #[test]
    fn credentials_are_hidden_in_debug_output() {
        let c = Credentials {
            access_key_id: "GKexampleid".into(),
            secret_access_key: "very-secret-key".into(),
            session_token: Some("session-token-value".into()),
        };
        let cfg = S3Config {
            location: loc(None),
            credentials: c.clone(),
            retry_timeout: Duration::from_secs(1),
            cache_bytes: 0,
            tmp_dir: PathBuf::from("/tmp"),
        };
        for text in [format!("{c:?}"), format!("{cfg:?}"), format!("{cfg:#?}")] {
            assert!(text.contains("GKexampleid"), "{text}");
            assert!(!text.contains("very-secret-key"), "{text}");
            assert!(!text.contains("session-token-value"), "{text}");
        }
    }
}
