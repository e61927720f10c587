//! Nobody without a configured key can keep a configured peer out of a daemon: handshakes left
//! unfinished (from a client that proves its address, then stops answering) do not count
//! against the daemon's connection limit, are limited per source, and time out. And a peer's
//! costly requests (`FindObjects` for absent ids) are not repeated at will.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use puce_node::auth::PinnedPeers;
use puce_node::identity::Identity;
use puce_node::transport::{SERVER_NAME, client_config};
use puce_tests::node::{TestNode, wait_for};
use quinn_proto::DatagramEvent;

/// Send every datagram `conn` has to send.
fn send_all(conn: &mut quinn_proto::Connection, sock: &UdpSocket) {
    let mut buf = Vec::new();
    while let Some(t) = conn.poll_transmit(Instant::now(), 1, &mut buf) {
        sock.send_to(&buf[..t.size], t.destination).unwrap();
        buf.clear();
    }
}

/// Start a QUIC handshake with `server` from `sock`, with a key `server` does not know, and
/// leave it unfinished: answer a Retry (the client proves it receives at its address, so the
/// server starts the handshake), then ignore whatever comes.
fn stall_handshake(sock: &UdpSocket, server: SocketAddr) {
    let me = Identity::generate().unwrap();
    let verifier = Arc::new(PinnedPeers::only(me.id(), "nobody", "nowhere"));
    let cc = client_config(&me, verifier, None).unwrap();
    let mut ep = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let (_, mut conn) = ep.connect(Instant::now(), cc, server, SERVER_NAME).unwrap();
    send_all(&mut conn, sock);
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rbuf = vec![0u8; 65536];
    loop {
        let (n, from) = sock.recv_from(&mut rbuf).expect("the daemon answers");
        // A long header (bit 7) of type 3 (bits 5-4): a Retry.
        let retry = rbuf[0] & 0x80 != 0 && (rbuf[0] >> 4) & 3 == 3;
        if !retry {
            return;
        }
        let mut out = Vec::new();
        let data = BytesMut::from(&rbuf[..n]);
        if let Some(DatagramEvent::ConnectionEvent(_, ev)) =
            ep.handle(Instant::now(), from, None, None, data, &mut out)
        {
            conn.handle_event(ev);
        }
        send_all(&mut conn, sock);
    }
}

#[test]
fn stalled_handshakes_from_an_unknown_key_do_not_lock_a_configured_peer_out() {
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    let perms = r#"{ docs = ["pull", "push"] }"#;
    a.add_peer(&b, perms);
    b.add_peer(&a, perms);
    let src = b.repo.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    b.snapshot(&src, "docs");
    b.start();
    let server: SocketAddr = b.address().parse().unwrap();

    // 40 handshakes (more than the daemon's 32 connections) from another loopback address,
    // each from a socket of its own, all left unfinished.
    let t = Instant::now();
    let sockets: Vec<UdpSocket> = (0..40)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.2:0").unwrap();
            stall_handshake(&s, server);
            s
        })
        .collect();
    eprintln!("40 handshakes stalled in {:?}", t.elapsed());

    // The configured peer still syncs, while they are stalled.
    let t = Instant::now();
    let r = a.sync("grenoble", &["--pull"]);
    eprintln!("synced in {:?}", t.elapsed());
    assert_eq!(r["spaces"][0]["snapshots"].as_u64(), Some(1), "{r}");
    assert!(
        b.log().contains("too many handshakes in progress"),
        "{}",
        b.log()
    );
    // And the stalled ones are dropped after a few seconds.
    wait_for("the daemon to drop the stalled handshakes", || {
        b.log().contains("no complete handshake within")
    });
    drop(sockets);
}

/// A configured peer asking again and again, on one connection, for objects the node does not
/// have (`FindObjects`) costs one walk of the snapshots, not one per request.
#[test]
fn find_objects_for_absent_ids_walks_once_per_connection() {
    use puce_node::protocol::{FindObjects, Message};
    let (mut a, mut b) = (TestNode::new("lyon"), TestNode::new("grenoble"));
    a.add_peer(&b, r#"{ docs = ["pull", "push"] }"#);
    b.add_peer(&a, r#"{ docs = ["pull", "push"] }"#);
    let src = b.repo.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello").unwrap();
    b.snapshot(&src, "docs");
    b.start();
    let repo = Arc::new(puce_tests::open_repo(&a.repo.path(), None));
    let ctx = puce_node::sync::load_node(repo, &a.node_dir()).unwrap();
    let rt = puce_node::sync::runtime().unwrap();
    rt.block_on(async {
        let peer = ctx.config.peers[0].clone();
        let dial = puce_node::transport::DialOne::new(b.address().parse().unwrap()).unwrap();
        let q = puce_node::transport::connect(
            dial.endpoint(),
            &ctx.identity,
            peer.id,
            &peer.name,
            &b.address(),
            None,
        )
        .await
        .unwrap();
        let perms = puce_node::auth::Permissions::of(&ctx.config, &peer.id).unwrap();
        let progress = Arc::new(puce_core::progress::NoProgress);
        let conn = puce_node::session::Conn::new(ctx.clone(), q, perms, progress);
        conn.hello().await.unwrap();
        let absent: Vec<puce_core::ObjectId> = (0..64u8)
            .map(|i| puce_core::ObjectId(puce_core::Hash([i; 32])))
            .collect();
        for _ in 0..3 {
            let req = Message::FindObjects(FindObjects {
                ids: absent.clone(),
            });
            let mut recv = conn.request(&req).await.unwrap();
            match conn.answer(&mut recv).await.unwrap() {
                Message::End(e) => assert_eq!(e.count, 0),
                other => panic!("answered with {}", other.name()),
            }
        }
        conn.done();
        dial.finish().await;
    });
    let log = b.log();
    assert_eq!(log.matches("walked the snapshots").count(), 1, "{log}");
    assert_eq!(log.matches("not walking for them").count(), 2, "{log}");
}
