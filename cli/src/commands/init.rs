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
    };
    let repo = Repo::init(&path, &opts)?;
    let c = repo.config();
    if ctx.json {
        output::json(&json!({
            "path": path,
            "repo_id": c.repo_id_hex(),
            "chunk_min": c.chunker.min_size,
            "chunk_avg": c.chunker.avg_size,
            "chunk_max": c.chunker.max_size,
            "zstd_level": c.compression.zstd_level,
            "pack_size": c.pack_target_size,
        }))?;
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
    }
    Ok(0)
}
