//! `puce key`: the key files of an encrypted repository in the user's key directory, the
//! recovery sheet and shares (docs/guide.md, "Encrypted repositories"; the formats in
//! docs/format.md, section 9).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use puce_core::crypto::MasterKey;
use puce_core::format::config::{Config, Encryption};
use puce_core::keyfile::{self, KeyEntry};
use puce_core::recovery;
use serde_json::json;
use zeroize::Zeroize;

use super::Ctx;
use crate::args::{KeyCommand, NewPassphraseArg};
use crate::{output, passphrase};

pub fn run(ctx: &Ctx, c: KeyCommand) -> Result<i32> {
    let (config, e) = repo_config(ctx)?;
    let dir = super::key_dir().context("no home directory for the key directory: set HOME")?;
    match c {
        KeyCommand::Add {
            label,
            key_file_out,
            new,
        } => add(
            ctx,
            &dir,
            &config,
            &e,
            &label,
            key_file_out.as_deref(),
            &new,
        ),
        KeyCommand::List => list(ctx, &dir, &config, &e),
        KeyCommand::Remove { id } => {
            let path = keyfile::remove(&dir, &config, &id, &e)?;
            say(ctx, &format!("removed key '{id}' ({})", path.display()));
            Ok(0)
        }
        KeyCommand::Passwd { id, new } => passwd(ctx, &dir, &config, &e, id.as_deref(), &new),
        KeyCommand::Export { dir: node, .. } => {
            let master = master(ctx, &config, &e)?;
            let holders = holders(&super::node::node_dir(ctx, &node)?);
            let mut sheet = recovery::paper_sheet(&master, &config.repo_id_hex(), &holders);
            let mut out = std::io::stdout().lock();
            let written = out.write_all(sheet.as_bytes()).and_then(|_| out.flush());
            sheet.zeroize();
            written.context("cannot write the recovery sheet")?;
            keyfile::record_export(&dir, &config, "paper")?;
            Ok(0)
        }
        KeyCommand::Split {
            shares,
            threshold,
            out,
        } => split(ctx, &dir, &config, &e, shares, threshold, out.as_deref()),
        KeyCommand::Import {
            files,
            passphrase,
            new,
        } => import(ctx, &dir, &config, &e, &files, passphrase, &new),
    }
}

fn say(ctx: &Ctx, line: &str) {
    if !ctx.quiet && !ctx.json {
        println!("{line}");
    }
}

/// The config of the repository, read without its key, and its encryption.
fn repo_config(ctx: &Ctx) -> Result<(Config, Encryption)> {
    let (path, _) = ctx.repo_path()?;
    let bytes = match ctx.s3_backend(&path)? {
        Some(b) => b.read(puce_core::backend::FileKind::Config, "config")?,
        None => {
            let f = path.join("config");
            if !f.is_file() {
                bail!(puce_core::Error::not_found(format!(
                    "no repository at {}: give --repo or set PUCE_REPO",
                    path.display()
                )));
            }
            std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
        }
    };
    let config = Config::decode(&bytes)
        .with_context(|| format!("the config of the repository at {}", path.display()))?;
    let Some(e) = config.encryption else {
        bail!(puce_core::Error::invalid(format!(
            "the repository at {} is not encrypted: it has no key (`puce init --encrypt` makes \
             an encrypted one)",
            path.display()
        )));
    };
    Ok((config, e))
}

/// The master key, found as when the repository is opened.
fn master(ctx: &Ctx, config: &Config, e: &Encryption) -> Result<MasterKey> {
    Ok(keyfile::find_master(config, e, &ctx.open_options())?)
}

fn add(
    ctx: &Ctx,
    dir: &Path,
    config: &Config,
    e: &Encryption,
    label: &str,
    out: Option<&Path>,
    new: &NewPassphraseArg,
) -> Result<i32> {
    let master = master(ctx, config, e)?;
    if let Some(out) = out {
        let file = keyfile::new_file(config, &master, None, label)?;
        let mut f = puce_core::fsutil::private_file()
            .write(true)
            .create_new(true)
            .open(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let mut bytes = file.encode()?;
        let written = f.write_all(&bytes).and_then(|_| f.sync_all());
        bytes.zeroize();
        written.with_context(|| format!("cannot write {}", out.display()))?;
        say(
            ctx,
            &format!(
                "wrote a plain key file to {}: whoever has it can read the repository; keep it \
                 safe (it opens with --key-file or PUCE_KEY_FILE)",
                out.display()
            ),
        );
        return Ok(0);
    }
    let p = passphrase::new(new.new_password_file.as_deref(), None, "the new key")?;
    let file = keyfile::new_file(config, &master, Some(&p), label)?;
    let (id, path) = keyfile::add(dir, config, &file)?;
    say(
        ctx,
        &format!("added key '{id}' (passphrase) in {}", path.display()),
    );
    Ok(0)
}

fn kind(e: &KeyEntry) -> &'static str {
    match &e.file {
        Ok(f) if f.needs_passphrase() => "passphrase",
        Ok(_) => "plain",
        Err(_) => "damaged",
    }
}

fn list(ctx: &Ctx, dir: &Path, config: &Config, e: &Encryption) -> Result<i32> {
    let entries = keyfile::list(dir, config)?;
    let rows: Vec<_> = entries
        .iter()
        .map(|k| {
            let f = k.file.as_ref().ok();
            let wrong = f.is_some_and(|f| f.fingerprint != e.fingerprint);
            json!({
                "id": k.id,
                "label": f.map(|f| f.label.clone()),
                "kind": if wrong { "other key" } else { kind(k) },
                "host": f.map(|f| f.host.clone()),
                "created": f.map(|f| output::time_utc(f.created_ns)),
                "path": k.path,
                "error": k.file.as_ref().err().map(|e| e.to_string()),
            })
        })
        .collect();
    if ctx.json {
        output::json(&json!({
            "repo_id": config.repo_id_hex(),
            "fingerprint": e.fingerprint.to_string(),
            "key_dir": dir,
            "exported": keyfile::exported(dir, config),
            "keys": rows,
        }))?;
        return Ok(0);
    }
    println!(
        "repository {}, key {}, in {}{}",
        config.repo_id_hex(),
        e.fingerprint,
        dir.display(),
        if keyfile::exported(dir, config) {
            ""
        } else {
            " (never exported: `puce key export --paper` or `puce key split`)"
        }
    );
    let mut t = output::table(&["ID", "LABEL", "KIND", "HOST", "CREATED", "PROBLEM"], &[]);
    for (k, r) in entries.iter().zip(&rows) {
        let f = k.file.as_ref().ok();
        t.add_row(vec![
            k.id.clone(),
            f.map(|f| f.label.clone()).unwrap_or_default(),
            r["kind"].as_str().unwrap_or("").to_string(),
            f.map(|f| f.host.clone()).unwrap_or_default(),
            f.map(|f| output::time(f.created_ns)).unwrap_or_default(),
            r["error"].as_str().unwrap_or("").to_string(),
        ]);
    }
    output::print_table(&t);
    Ok(0)
}

fn passwd(
    ctx: &Ctx,
    dir: &Path,
    config: &Config,
    e: &Encryption,
    id: Option<&str>,
    new: &NewPassphraseArg,
) -> Result<i32> {
    let entries = keyfile::list(dir, config)?;
    let entry = match id {
        Some(id) => entries.iter().find(|k| k.id == id).with_context(|| {
            format!(
                "no key '{id}' for this repository in {} (see `puce key list`)",
                dir.display()
            )
        })?,
        None => {
            let protected: Vec<_> = entries.iter().filter(|k| kind(k) == "passphrase").collect();
            match protected.as_slice() {
                [one] => *one,
                [] => bail!(
                    "no key of this repository has a passphrase: give the id of the key to \
                     protect (`puce key list`), or add one with `puce key add`"
                ),
                _ => bail!("several keys have a passphrase: give the id of one (`puce key list`)"),
            }
        }
    };
    let file = entry
        .file
        .as_ref()
        .map_err(|err| anyhow::anyhow!("key '{}' cannot be read: {err}", entry.id))?;
    let source = passphrase::source(ctx.password_file.clone());
    let master = keyfile::read(&entry.path, e, Some(&source))?;
    let p = passphrase::new(
        new.new_password_file.as_deref(),
        None,
        &format!("key '{}'", entry.id),
    )?;
    let wrapped = keyfile::new_file(config, &master, Some(&p), &file.label)?;
    keyfile::replace(dir, &entry.path, &wrapped)?;
    say(
        ctx,
        &format!(
            "key '{}' now opens with the new passphrase only ({}); the master key is \
             unchanged",
            entry.id,
            entry.path.display()
        ),
    );
    Ok(0)
}

/// The holders of this node's spaces, for the recovery sheet: the peers of `node.toml` in the
/// node directory, if there is one.
fn holders(node_dir: &Path) -> Vec<String> {
    if !node_dir.join("node.toml").is_file() {
        return Vec::new();
    }
    match puce_node::config::NodeConfig::load(node_dir) {
        Ok(c) => c
            .peers
            .iter()
            .map(|p| {
                format!(
                    "{}  id {}  address {}",
                    p.name,
                    p.id,
                    p.address
                        .as_deref()
                        .unwrap_or("(none: it connects to this node)")
                )
            })
            .collect(),
        Err(err) => vec![format!("(node.toml cannot be read: {err})")],
    }
}

fn split(
    ctx: &Ctx,
    dir: &Path,
    config: &Config,
    e: &Encryption,
    count: u8,
    threshold: u8,
    out: Option<&Path>,
) -> Result<i32> {
    let master = master(ctx, config, e)?;
    let mut shares = recovery::split(&master, threshold, count)?;
    let set = shares[0]
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    match out {
        Some(folder) => {
            puce_core::fsutil::create_dir_durable(folder)?;
            for (i, s) in shares.iter().enumerate() {
                let path = folder.join(format!("share-{}-of-{count}.txt", i + 1));
                let mut f = puce_core::fsutil::private_file()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                f.write_all(s.as_bytes())
                    .and_then(|_| f.sync_all())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            say(
                ctx,
                &format!(
                    "wrote {count} shares of set {set} to {}: give each to a different person; \
                     any {threshold} bring the key back (`puce key import`)",
                    folder.display()
                ),
            );
        }
        None => {
            let mut o = std::io::stdout().lock();
            for s in &shares {
                write!(o, "{s}\n----- cut here -----\n\n").context("cannot print the shares")?;
            }
            o.flush().context("cannot print the shares")?;
        }
    }
    shares.iter_mut().for_each(Zeroize::zeroize);
    keyfile::record_export(
        dir,
        config,
        &format!("shares {threshold} of {count}, set {set}"),
    )?;
    Ok(0)
}

fn import(
    ctx: &Ctx,
    dir: &Path,
    config: &Config,
    e: &Encryption,
    files: &[PathBuf],
    protect: bool,
    new: &NewPassphraseArg,
) -> Result<i32> {
    let source = passphrase::source(ctx.password_file.clone());
    let master = recovery::read_key_from(files, Some(&source))?;
    if master.fingerprint() != e.fingerprint {
        bail!(puce_core::Error::new(
            puce_core::ErrorKind::Key,
            format!(
                "that is key {}, and this repository's key is {}: it belongs to another \
                 association",
                master.fingerprint(),
                e.fingerprint
            )
        ));
    }
    let p = if protect {
        Some(passphrase::new(
            new.new_password_file.as_deref(),
            None,
            "the imported key",
        )?)
    } else {
        None
    };
    let file = keyfile::new_file(config, &master, p.as_ref(), "imported")?;
    let default = keyfile::path_of(dir, config, keyfile::DEFAULT_ID);
    let path = if default.exists() {
        keyfile::add(dir, config, &file)?.1
    } else {
        puce_core::fsutil::create_dir_durable(dir)?;
        keyfile::replace(dir, &default, &file)?;
        default
    };
    say(
        ctx,
        &format!("imported key {} into {}", e.fingerprint, path.display()),
    );
    Ok(0)
}
