//! Component benchmarks: chunking, hashing, compression and pack writing.
//! Run: `cargo bench -p puce-benches`. Figures are throughput on this machine; compare runs
//! side by side, not against numbers from elsewhere.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use puce_benches::{random, text};
use puce_core::chunking::{Chunker, ChunkerParams};
use puce_core::format::pack::Kind;
use puce_core::hash::ObjectId;
use puce_core::pack::PackWriter;

const MIB: usize = 1 << 20;

fn chunking(c: &mut Criterion) {
    let data = random(64 * MIB, 1);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc-stream-64k-256k-1m", |b| {
        b.iter(|| {
            let mut ch = Chunker::new(&data[..], ChunkerParams::DEFAULT, 4 * MIB);
            let mut n = 0;
            while let Some(c) = ch.next_chunk().unwrap() {
                n += c.len();
            }
            assert_eq!(n, data.len());
        })
    });
    g.bench_function("fastcdc-stream+blake3", |b| {
        b.iter(|| {
            let mut ch = Chunker::new(&data[..], ChunkerParams::DEFAULT, 4 * MIB);
            let mut last = ObjectId::default();
            while let Some(c) = ch.next_chunk().unwrap() {
                last = ObjectId::of(c);
            }
            last
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = random(256 * 1024, 2);
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("blake3-256k", |b| b.iter(|| ObjectId::of(&data)));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compression");
    for (name, data) in [
        ("text", text(256 * 1024)),
        ("random", random(256 * 1024, 3)),
    ] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        let mut comp = zstd::bulk::Compressor::new(3).unwrap();
        g.bench_function(format!("zstd3-compress-{name}"), |b| {
            b.iter(|| comp.compress(&data).unwrap())
        });
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        let mut dec = zstd::bulk::Decompressor::new().unwrap();
        g.bench_function(format!("zstd-decompress-{name}"), |b| {
            b.iter(|| dec.decompress(&packed, data.len()).unwrap())
        });
    }
    g.finish();
}

fn pack_writing(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let backend = puce_core::backend::local::LocalBackend::open(dir.path()).unwrap();
    let chunks: Vec<(ObjectId, Vec<u8>)> = (0..128)
        .map(|i| {
            let d = random(256 * 1024, 100 + i);
            (ObjectId::of(&d), d)
        })
        .collect();
    let total: usize = chunks.iter().map(|c| c.1.len()).sum();
    let mut g = c.benchmark_group("packs");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(10);
    g.bench_function("write-32mib-pack-fsync", |b| {
        b.iter(|| {
            let mut w = PackWriter::new(&backend, &puce_core::pack::codec::Codec::plain()).unwrap();
            for (id, d) in &chunks {
                w.add(*id, Kind::Data, 0, d.len() as u32, d).unwrap();
            }
            let (id, _, _) = w.finish().unwrap();
            puce_core::backend::Backend::remove(
                &backend,
                puce_core::backend::FileKind::Pack,
                &id.to_hex(),
            )
            .unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, chunking, hashing, compression, pack_writing);
criterion_main!(benches);
