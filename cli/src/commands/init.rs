use anyhow::Result;
use puce_core::chunking::ChunkerParams;
use puce_core::format::config::Compression;
use puce_core::{InitOptions, Repo};
use serde_json::json;

use super::Ctx;
use crate::args::InitArgs;
use crate::output;

pub fn run(ctx: &Ctx, a: InitArgs) -> Result<i32> {
    let path = match a.path {
        Some(p) => p,
        None => ctx.repo_path()?.0,
    };
    let key_dir = if a.no_encrypt {
        None
    } else {
        Some(super::key_dir().ok_or_else(|| {
            anyhow::anyhow!(
                "no home directory to keep the key file in: set HOME (or XDG_CONFIG_HOME)"
            )
        })?)
    };
    let d = ChunkerParams::DEFAULT;
    let opts = InitOptions {
        chunker: ChunkerParams {
            min_size: a.chunk_min.unwrap_or(d.min_size),
            avg_size: a.chunk_avg.unwrap_or(d.avg_size),
            max_size: a.chunk_max.unwrap_or(d.max_size),
        },
        compression: Compression {
            zstd_level: a.compression,
        },
        pack_target_size: a.pack_size << 20,
        open: ctx.open_options(),
        key_dir,
        key: given_key(ctx, &a.key_from)?,
        passphrase: if a.passphrase {
            Some(crate::passphrase::new(
                None,
                ctx.password_file.as_deref(),
                "the repository's key",
            )?)
        } else {
            None
        },
    };
    let repo = match &a.backend {
        None => Repo::init(&path, &opts)?,
        Some(url) => {
            let loc = puce_s3::S3Location {
                url: url.clone(),
                endpoint: a.endpoint.clone(),
                region: a.region.clone(),
            };
            loc.bucket_prefix()?;
            if path.join("config").exists() || puce_s3::S3Location::load(&path)?.is_some() {
                anyhow::bail!(puce_core::Error::new(
                    puce_core::ErrorKind::AlreadyExists,
                    format!("a repository already exists at {}", path.display())
                ));
            }
            let backend: std::sync::Arc<dyn puce_core::backend::Backend> =
                std::sync::Arc::new(super::s3_open(&path, loc.clone())?);
            let exists = backend.exists(puce_core::backend::FileKind::Config, "config")?;
            let repo = if a.attach {
                if !exists {
                    anyhow::bail!(puce_core::Error::not_found(format!(
                        "no repository in {url}: leave out --attach to create one"
                    )));
                }
                keep_given_key(backend.as_ref(), &opts, url)?;
                Repo::open_with_backend(&path, backend, &opts.open)?
            } else {
                if exists {
                    anyhow::bail!(puce_core::Error::new(
                        puce_core::ErrorKind::AlreadyExists,
                        format!(
                            "{url} already holds a repository: add --attach to use it from this \
                             machine (then run `puce repair index`)"
                        )
                    ));
                }
                Repo::init_with_backend(&path, backend, &opts)?
            };
            loc.save(&path)?;
            repo
        }
    };
    let c = repo.config();
    let key = c.encryption.as_ref().map(|e| {
        let file = super::key_dir()
            .unwrap_or_default()
            .join(puce_core::keyfile::file_name(c));
        (e.fingerprint.to_string(), file)
    });
    if ctx.json {
        output::json(&json!({
            "path": path,
            "repo_id": c.repo_id_hex(),
            "chunk_min": c.chunker.min_size,
            "chunk_avg": c.chunker.avg_size,
            "chunk_max": c.chunker.max_size,
            "zstd_level": c.compression.zstd_level,
            "pack_size": c.pack_target_size,
            "encrypted": key.is_some(),
            "key_fingerprint": key.as_ref().map(|k| &k.0),
            "key_file": key.as_ref().map(|k| &k.1),
        }))?;
    } else if !ctx.quiet && a.attach {
        println!(
            "attached {} to repository {} in {}: run `puce repair index` to build this \
             machine's index from the packs",
            path.display(),
            c.repo_id_hex(),
            a.backend.as_deref().unwrap_or("")
        );
    } else if !ctx.quiet {
        println!(
            "created repository {} at {} (chunks {}..{}..{}, zstd {}, packs {})",
            c.repo_id_hex(),
            path.display(),
            output::size(c.chunker.min_size.into()),
            output::size(c.chunker.avg_size.into()),
            output::size(c.chunker.max_size.into()),
            c.compression.zstd_level,
            output::size(c.pack_target_size)
        );
        if let Some((fingerprint, file)) = &key {
            let under = if a.passphrase {
                " under your passphrase"
            } else {
                ""
            };
            println!(
                "{}",
                super::key_notice(&format!("{fingerprint}{under}"), file)
            );
        }
    }
    Ok(0)
}

/// Before attaching to the repository in a bucket (`url`): the key given with `--key-from` (a
/// key file, a recovery sheet or shares) is checked against the repository's and kept in this
/// machine's key directory, where this and the next commands look for it.
fn keep_given_key(
    backend: &dyn puce_core::backend::Backend,
    opts: &InitOptions,
    url: &str,
) -> Result<()> {
    let (Some(dir), Some(master)) = (&opts.key_dir, &opts.key) else {
        return Ok(());
    };
    let c = puce_core::format::config::Config::decode(
        &backend.read(puce_core::backend::FileKind::Config, "config")?,
    )?;
    let Some(e) = &c.encryption else {
        return Ok(());
    };
    if master.fingerprint() != e.fingerprint {
        anyhow::bail!(puce_core::Error::new(
            puce_core::ErrorKind::Key,
            format!(
                "the key given with --key-from (key {}) is not the key of the repository in \
                 {url} (key {})",
                master.fingerprint(),
                e.fingerprint
            )
        ));
    }
    if !dir.join(puce_core::keyfile::file_name(&c)).exists() {
        puce_core::keyfile::create(dir, &c, Some(master.clone()))?;
    }
    Ok(())
}

/// The master key `--key-from` gives (key files, a recovery sheet or shares), if any.
pub(super) fn given_key(
    ctx: &Ctx,
    key_from: &[std::path::PathBuf],
) -> Result<Option<puce_core::crypto::MasterKey>> {
    if key_from.is_empty() {
        return Ok(None);
    }
    let source = crate::passphrase::source(ctx.password_file.clone());
    Ok(Some(puce_core::recovery::read_key_from(
        key_from,
        Some(&source),
    )?))
}
