use std::io::Write;

use anyhow::{Result, bail};
use puce_core::format::printable_bytes;
use puce_core::format::tree::{Entry, Node};
use puce_core::vfs::{self, Resolved};
use serde_json::json;

use super::{Ctx, split_target};
use crate::args::{CatArgs, LsArgs};
use crate::output;

fn mode_string(e: &Entry) -> String {
    let mut s = String::with_capacity(10);
    s.push(e.type_char());
    for shift in [6, 3, 0] {
        let b = (e.mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn entry_json(path: &[u8], e: &Entry) -> serde_json::Value {
    let kind = match e.node {
        Node::File { .. } => "file",
        Node::Dir { .. } => "dir",
        Node::Symlink { .. } => "symlink",
        Node::Fifo => "fifo",
        Node::Socket => "socket",
        Node::CharDevice { .. } => "char_device",
        Node::BlockDevice { .. } => "block_device",
    };
    let mut v = json!({
        "path": String::from_utf8_lossy(path),
        "type": kind,
        "mode": e.mode,
        "size": e.size(),
        "mtime": output::time_utc(e.mtime_ns),
        "uid": e.uid,
        "gid": e.gid,
    });
    match &e.node {
        Node::Symlink { target } => v["target"] = json!(String::from_utf8_lossy(target)),
        Node::CharDevice { rdev } | Node::BlockDevice { rdev } => v["rdev"] = json!(rdev),
        _ => {}
    }
    if let Some(group) = e.link {
        v["link_group"] = json!(format!("{group:016x}"));
    }
    v
}

fn line(path: &[u8], e: &Entry, long: bool) -> String {
    let mut name = printable_bytes(path);
    if e.is_dir() {
        name.push('/');
    }
    if let Node::Symlink { target } = &e.node {
        name = format!("{name} -> {}", printable_bytes(target));
    }
    if long {
        format!(
            "{} {:>5} {:>5} {:>12} {} {}",
            mode_string(e),
            e.uid,
            e.gid,
            e.size(),
            output::time(e.mtime_ns),
            name
        )
    } else {
        name
    }
}

pub fn run_ls(ctx: &Ctx, a: LsArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let (snap, path) = split_target(&a.target);
    let snap = repo.resolve_snapshot(snap)?;
    let reader = repo.index().reader()?;
    let resolved = vfs::resolve(&repo, &reader, snap.snapshot.root, path.as_bytes())?;
    let mut items: Vec<serde_json::Value> = Vec::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let base = vfs::components(path.as_bytes())?.join(&b'/');
    match resolved.tree() {
        Some(tree) => {
            if a.recursive {
                vfs::walk(&repo, &reader, tree, &base, &mut |p, e| {
                    if ctx.json {
                        items.push(entry_json(p, e));
                    } else {
                        writeln!(out, "{}", line(p, e, a.long))
                            .map_err(|e| puce_core::Error::other(e.to_string()))?;
                    }
                    Ok(())
                })?;
            } else {
                let t = repo.read_tree_with(&reader, &tree)?;
                for e in &t.entries {
                    let mut p = base.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&e.name);
                    if ctx.json {
                        items.push(entry_json(&p, e));
                    } else {
                        writeln!(out, "{}", line(&e.name, e, a.long))?;
                    }
                }
            }
        }
        None => {
            let Resolved::Entry(e) = &resolved else {
                bail!("internal: root without tree");
            };
            if ctx.json {
                items.push(entry_json(&base, e));
            } else {
                writeln!(out, "{}", line(&base, e, a.long))?;
            }
        }
    }
    if ctx.json {
        output::json(&items)?;
    }
    Ok(0)
}

pub fn run_cat(ctx: &Ctx, a: CatArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let (snap, path) = split_target(&a.target);
    if path.is_empty() {
        bail!(puce_core::Error::invalid(
            "give SNAP:PATH, the path of a file in the snapshot"
        ));
    }
    let snap = repo.resolve_snapshot(snap)?;
    let reader = repo.index().reader()?;
    let resolved = vfs::resolve(&repo, &reader, snap.snapshot.root, path.as_bytes())?;
    let Resolved::Entry(e) = resolved else {
        bail!(puce_core::Error::invalid(format!(
            "'{path}' is a directory"
        )));
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &e.node {
        Node::File { chunks, .. } => {
            for c in chunks {
                let data = repo.read_object_with(&reader, c)?;
                if let Err(err) = out.write_all(&data) {
                    if err.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(0);
                    }
                    return Err(err.into());
                }
            }
        }
        Node::Symlink { target } => out.write_all(target)?,
        Node::Dir { .. } => bail!(puce_core::Error::invalid(format!(
            "'{path}' is a directory"
        ))),
        _ => bail!(puce_core::Error::invalid(format!(
            "'{path}' is a fifo, socket or device: it has no content"
        ))),
    }
    out.flush()?;
    Ok(0)
}
