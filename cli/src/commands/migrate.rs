//! `puce migrate`: copy every snapshot of a repository into a new encrypted one, or into one
//! under a new key (`--new-key`, after the key leaked). The work is in `puce_core::migrate`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use puce_core::{InitOptions, OpenOptions, Repo};
use serde_json::json;

use super::Ctx;
use crate::args::MigrateArgs;
use crate::output;
use crate::progress::Bar;

pub fn run(ctx: &Ctx, a: MigrateArgs) -> Result<i32> {
    let (old_path, new_path) = if a.new_key {
        let old = match &a.from {
            Some(p) => p.clone(),
            None => ctx.repo_path()?.0,
        };
        let Some(new) = a.path.clone() else {
            anyhow::bail!(puce_core::Error::invalid(format!(
                "give the directory of the new repository: `puce --repo {} migrate --new-key \
                 NEW` (the old one is left as it is until you remove it)",
                old.display()
            )));
        };
        (old, new)
    } else {
        let old = a.from.clone().unwrap_or_default();
        let new = match &a.path {
            Some(p) => p.clone(),
            None => ctx.repo_path()?.0,
        };
        (old, new)
    };
    if same_dir(&old_path, &new_path) {
        anyhow::bail!(puce_core::Error::invalid(format!(
            "the new repository must be in another directory than the old one ({})",
            old_path.display()
        )));
    }
    let old = open_old(ctx, &a, &old_path)?;
    let (new, created) = open_or_create_new(ctx, &a, &old, &new_path)?;
    puce_core::migrate::check_target(&old, &new, a.new_key)?;
    let bar = Bar::new("migrate", ctx.quiet || ctx.json);
    let report = puce_core::migrate::migrate(&old, &new, &bar);
    bar.finish();
    let r = report?;
    let c = new.config();
    let fingerprint = c.encryption.map(|e| e.fingerprint.to_string());
    let key_file = super::key_dir()
        .unwrap_or_default()
        .join(puce_core::keyfile::file_name(c));
    let copied = r.snapshots.iter().filter(|m| m.copied).count();
    if ctx.json {
        output::json(&json!({
            "from": old_path,
            "from_repo_id": old.config().repo_id_hex(),
            "path": new_path,
            "repo_id": c.repo_id_hex(),
            "created": created,
            "new_key": a.new_key,
            "key_fingerprint": fingerprint,
            "key_file": key_file,
            "snapshots": r.snapshots.iter().map(|m| json!({
                "old": m.old.to_hex(),
                "new": m.new.to_hex(),
                "space": m.space,
                "copied": m.copied,
            })).collect::<Vec<_>>(),
            "copied": copied,
            "already": r.snapshots.len() - copied,
            "forgotten": r.forgotten,
            "unreadable": r.unreadable,
            "space_settings": r.space_settings,
            "receipts": r.receipts,
            "objects": r.objects,
            "raw_bytes": r.raw_bytes,
            "stored_bytes": r.stored_bytes,
            "packs": r.packs,
            "map_file": r.map_file,
        }))?;
        return Ok(0);
    }
    if ctx.quiet {
        return Ok(0);
    }
    println!(
        "migrated {} snapshots of {} into {} (repository {}, key {}): {copied} copied now, {} \
         by an earlier run; {} forgotten snapshots left out",
        r.snapshots.len(),
        old_path.display(),
        new_path.display(),
        c.repo_id_hex(),
        fingerprint.as_deref().unwrap_or("none"),
        r.snapshots.len() - copied,
        r.forgotten
    );
    println!(
        "  {} space settings, {} receipts; {} new objects ({} stored in {} packs)",
        r.space_settings,
        r.receipts,
        r.objects,
        output::size(r.stored_bytes),
        r.packs
    );
    println!(
        "  old -> new snapshot ids: {} (keep it to find an old id)",
        r.map_file.display()
    );
    if created && let Some(f) = &fingerprint {
        println!("{}", super::key_notice(f, &key_file));
    }
    if a.new_key {
        println!("{}", next_steps(&old_path, &new_path, &key_file));
    }
    Ok(0)
}

/// What the admin does after `--new-key`, for people.
fn next_steps(old: &Path, new: &Path, key_file: &Path) -> String {
    format!(
        "next steps (the old key leaked, so everything sealed under it is to be replaced):
  1. stop the node daemon and the mounts of {old}, then put the new repository in its place,
     with the node directory (the node's identity and node.toml), if there is one:
       mv {old}/node {new}/ ; mv {old} {old}.leaked && mv {new} {old}
     and check it: puce --repo {old} check
  2. keep the new key safe: puce --repo {old} key export --paper (blind holders receive
     nothing under a key never exported). Give it ({key}) to the
     association's other sites over a channel you trust; each
     replaces its repository by an empty one under the new key
       (puce init NEW --key-from new.key, then the same moves) and the next sync sends it
     everything again: every object id changed. Blind holders receive everything again too.
  3. once every site holds the new copies, delete {old}.leaked, the old key files
     (puce key list) and every copy of the old key (sheets, shares, USB sticks).
The old repository was not changed.",
        old = old.display(),
        new = new.display(),
        key = key_file.display()
    )
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Open the old repository with `--from-key-file` (else `--key-file`, else its key in the key
/// directory), from its bucket if its data lives in one.
fn open_old(ctx: &Ctx, a: &MigrateArgs, path: &Path) -> Result<Repo> {
    let opts = OpenOptions {
        key_files: a
            .from_key_file
            .clone()
            .or_else(|| ctx.key_file.clone())
            .into_iter()
            .collect(),
        ..ctx.open_options()
    };
    let repo = match ctx.s3_backend(path)? {
        Some(backend) => Repo::open_with_backend(path, backend, &opts)?,
        None => Repo::open_with(path, &opts)?,
    };
    Ok(repo)
}

/// Open the new repository, or create it (encrypted, with the old one's chunking, compression
/// and pack size) if it does not exist. Returns whether it was created.
fn open_or_create_new(
    ctx: &Ctx,
    a: &MigrateArgs,
    old: &Repo,
    path: &Path,
) -> Result<(Arc<Repo>, bool)> {
    let open = OpenOptions {
        key_files: Vec::new(),
        passphrase: Some(crate::passphrase::source(a.new.new_password_file.clone())),
        ..ctx.open_options()
    };
    if let Some(backend) = ctx.s3_backend(path)? {
        // Made beforehand with `puce init NEW --backend s3://...`.
        return Ok((
            Arc::new(Repo::open_with_backend(path, backend, &open)?),
            false,
        ));
    }
    if path.join("config").exists() || path.join("index.redb").exists() {
        return Ok((Arc::new(Repo::open_with(path, &open)?), false));
    }
    let key_dir = super::key_dir().ok_or_else(|| {
        anyhow::anyhow!("no home directory to keep the key file in: set HOME (or XDG_CONFIG_HOME)")
    })?;
    let c = old.config();
    let opts = InitOptions {
        chunker: c.chunker,
        compression: c.compression,
        pack_target_size: c.pack_target_size,
        open,
        key_dir: Some(key_dir),
        key: super::init::given_key(ctx, &a.key_from)?,
        passphrase: if a.passphrase {
            Some(crate::passphrase::new(
                a.new.new_password_file.as_deref(),
                None,
                "the new repository's key",
            )?)
        } else {
            None
        },
    };
    Ok((Arc::new(Repo::init(path, &opts)?), true))
}
