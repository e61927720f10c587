//! Blind holding over an in-memory link: a rollback is refused, hostile ranges cut the peer
//! off, files not offered are not served.

use super::*;
use crate::protocol::{GetFile, GetManifest, Message};
use puce_core::blind::Holds;
use puce_core::format::manifest::Manifest;

/// An encrypted owner, `grenoble`, and `lyon` holding its spaces blind.
fn owner_and_holder() -> (TestNode, TestNode) {
    let (oi, hi) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (oid, hid) = (oi.id().to_string(), hi.id().to_string());
    let encrypted = InitOptions {
        key_dir: Some("set by node_with".into()),
        ..InitOptions::default()
    };
    let owner = node_with(
        "grenoble",
        oi,
        ("lyon", &hid),
        "{}\nholds_blind = [\"*\"]",
        None,
        &encrypted,
    );
    std::fs::create_dir_all(&owner.ctx.dir).unwrap();
    // The owner exported its key (a recovery sheet): nothing is held blind before that.
    assert!(!owner.ctx.repo.key_exported());
    let keys = owner.ctx.repo.root().parent().unwrap().join("keys");
    puce_core::keyfile::record_export(&keys, owner.ctx.repo.config(), "paper").unwrap();
    assert!(owner.ctx.repo.key_exported());
    let holder = node_with(
        "lyon",
        hi,
        ("grenoble", &oid),
        "{}\nhold_blind = true",
        None,
        &InitOptions::default(),
    );
    (owner, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_refuses_a_rollback_and_hostile_ranges_cut_the_peer_off() {
    let (owner, holder) = owner_and_holder();
    let mut files = BTreeMap::new();
    files.insert("a.bin".to_string(), bytes(300_000, 1));
    snapshot(&owner, "docs", &files);

    let conn = connect(&holder, &owner).await;
    let moved = crate::blind::hold(&conn).await.unwrap();
    assert!(moved.files >= 2, "{moved:?}");
    conn.done();

    // The holder's copy claims a later manifest than the owner now signs (as if the owner's
    // node went back to an old state): what the owner sends is a rollback, refused, and the
    // copy stays as it was.
    let h = Holds::open(holder.repo.root(), &owner.ctx.identity.id().0).unwrap();
    let (mut m, _) = h.manifest().unwrap().unwrap();
    m.seq = u64::MAX - 1;
    let later = crate::blind::sign(&owner.ctx.identity, m).unwrap();
    h.publish(&later).unwrap();
    let conn = connect(&holder, &owner).await;
    std::fs::create_dir_all(&holder.ctx.dir).unwrap();
    let e = crate::blind::hold(&conn).await.unwrap_err();
    assert!(e.to_string().contains("rollback"), "{e}");
    assert_eq!(h.manifest().unwrap().unwrap().1, later);
    // The refusal is recorded in the node state (`puce node status`, the notifications).
    let st = crate::state::NodeState::load(&holder.ctx.dir).unwrap();
    let flags = &st.peers[&owner.ctx.identity.id().to_string()].blind_flags;
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(
        (flags[0].kind.as_str(), flags[0].seq_before),
        ("rollback", u64::MAX - 1)
    );
    assert!(flags[0].seq_after < flags[0].seq_before, "{flags:?}");

    // A file not in the manifest sent: NotFound, the connection goes on.
    let ask = |r: GetFile| {
        let conn = conn.clone();
        async move {
            let mut recv = conn.request(&Message::GetFile(r)).await?;
            conn.answer(&mut recv).await
        }
    };
    let mut recv = conn
        .request(&Message::GetManifest(GetManifest { held: false }))
        .await
        .unwrap();
    let Message::Manifest(mb) = conn.answer(&mut recv).await.unwrap() else {
        panic!("no manifest");
    };
    let m = Manifest::decode(&mb.bytes).unwrap();
    let e = ask(GetFile {
        kind: 0,
        name: [0x55; 32],
        offset: 0,
        len: 10,
    })
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // A range past the end of a listed file: the peer is cut off.
    let f = &m.files[0];
    let e = ask(GetFile {
        kind: f.kind,
        name: f.name,
        offset: f.len,
        len: 1,
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("asked for 1 bytes"), "{e}");
    // The responder answers, then closes the link: a request sent in between may still be
    // served. Within 10 s, requests fail.
    let mut closed = false;
    for _ in 0..1000 {
        let r = ask(GetFile {
            kind: f.kind,
            name: f.name,
            offset: 0,
            len: 1,
        })
        .await;
        if r.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(closed, "the connection is closed");
}
