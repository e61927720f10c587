//! Baseline for `benches/sync.sh`: a plain quinn transfer of N bytes on loopback, with the
//! same TLS (rustls, ring, pinned Ed25519 keys), transport settings and stream count as a node
//! sync, but nothing else: no reading of packs, no verification, no storage.
//!
//! The two ends run on separate runtimes (two worker threads each, like a daemon and a
//! `puce sync` process) so that they compete for the CPUs as two processes would.
//!
//! Usage: quic_baseline BYTES [STREAMS]    prints JSON {bytes, ms, wire_bytes, mib_per_s}
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use puce_node::config::NodeConfig;
use puce_node::identity::Identity;
use puce_node::transport;
use tokio::io::AsyncReadExt;

fn config(name: &str, peer: &Identity) -> NodeConfig {
    NodeConfig::parse(&format!(
        "[node]\nname = \"{name}\"\n[[peer]]\nname = \"other\"\nid = \"{}\"\naddress = \"127.0.0.1:1\"\nspaces = {{}}\n",
        peer.id()
    ))
    .unwrap()
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bytes: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: quic_baseline BYTES [STREAMS]");
    let streams: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let server_id = Arc::new(Identity::generate().unwrap());
    let client_id = Arc::new(Identity::generate().unwrap());
    let server_cfg = config("server", &client_id);

    // Server: one connection; each stream asks for a byte count, gets it.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let sid = server_id.clone();
    let server = std::thread::spawn(move || {
        runtime("server").block_on(async move {
            let ep = transport::listen("127.0.0.1:0".parse().unwrap(), &sid, &server_cfg).unwrap();
            addr_tx.send(ep.local_addr().unwrap()).unwrap();
            let conn = ep.accept().await.unwrap().await.unwrap();
            let block_size: usize = std::env::var("BLOCK")
                .ok()
                .and_then(|b| b.parse().ok())
                .unwrap_or(1 << 20);
            let block = vec![0x5au8; block_size];
            let mut tasks = Vec::new();
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let block = block.clone();
                tasks.push(tokio::spawn(async move {
                    let n = recv.read_u64_le().await.unwrap();
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(block.len() as u64) as usize;
                        send.write_all(&block[..k]).await.unwrap();
                        left -= k as u64;
                    }
                    send.finish().unwrap();
                    let _ = send.stopped().await;
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    });
    let addr = addr_rx.recv().unwrap();
    let out = runtime("client").block_on(async move {
        let ep = transport::dial_only(addr).unwrap();
        let start = Instant::now();
        let conn = transport::connect(
            &ep,
            &client_id,
            server_id.id(),
            "server",
            &addr.to_string(),
            None,
        )
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..streams {
            let conn = conn.clone();
            let share = bytes / streams + u64::from(i < bytes % streams);
            tasks.push(tokio::spawn(async move {
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                send.write_all(&share.to_le_bytes()).await.unwrap();
                send.finish().unwrap();
                let mut buf = vec![0u8; 1 << 20];
                let mut got = 0u64;
                loop {
                    let n = recv.read(&mut buf).await.unwrap().unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                }
                got
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let wire = conn.stats().udp_rx.bytes;
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
        (total, ms, wire)
    });
    let _ = server.join();
    let (total, ms, wire) = out;
    assert_eq!(total, bytes);
    println!(
        "{{\"bytes\": {total}, \"ms\": {ms:.1}, \"wire_bytes\": {wire}, \"mib_per_s\": {:.1}}}",
        total as f64 / 1048576.0 / (ms / 1000.0)
    );
}
