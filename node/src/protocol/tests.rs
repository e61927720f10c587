//! Golden encodings of every message (annotated hexdumps), framing limits, hostile input.
#![allow(clippy::unwrap_used)]

use super::*;
use puce_core::Hash;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sid(b: u8) -> SnapshotId {
    SnapshotId(Hash([b; 32]))
}

fn oid(b: u8) -> ObjectId {
    ObjectId(Hash([b; 32]))
}

const CHUNKING: Chunking = Chunking {
    min: 65536,
    avg: 262144,
    max: 1048576,
};

/// Check `m` encodes to the annotated `parts` and decodes back.
fn golden(m: Message, parts: &[&str]) {
    let want: String = parts.concat().split_whitespace().collect();
    let got = encode(&m).unwrap();
    assert_eq!(hex(&got), want, "{}", m.name());
    let kind = MessageType::from_u8(got[4]).unwrap();
    assert_eq!(decode(kind, &got[5..]).unwrap(), m);
}

#[test]
fn golden_hello_welcome_error() {
    golden(
        Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            node: "lyon".into(),
            software: "puce 0.1.0".into(),
            chunking: CHUNKING,
            key: None,
        }),
        &[
            "1b000000",                  // body length 27
            "01",                        // type Hello
            "01",                        // min_version 1 (varint)
            "01",                        // max_version 1
            "04 6c796f6e",               // node "lyon"
            "0a 70756365 20 302e312e30", // software "puce 0.1.0"
            "808004 808010 808040",      // chunking 64 KiB, 256 KiB, 1 MiB (varints)
        ],
    );
    golden(
        Message::Welcome(Welcome {
            version: 1,
            node: "grenoble".into(),
            software: "puce 0.1.0".into(),
            chunking: CHUNKING,
            key: None,
        }),
        &[
            "1e000000",                 // body length 30
            "02",                       // type Welcome
            "01",                       // version 1
            "08 6772656e6f626c65",      // node "grenoble"
            "0a 707563652030 2e312e30", // software
            "808004 808010 808040",     // chunking
        ],
    );
    golden(
        Message::error(Code::NotAllowed, "no"),
        &[
            "04000000", // body length 4
            "03",       // type Error
            "04",       // code 4 = NotAllowed
            "02 6e6f",  // message "no"
        ],
    );
    golden(
        Message::error(Code::Quota, "full"),
        &[
            "06000000",    // body length 6
            "03",          // type Error
            "0c",          // code 12 = Quota
            "04 66756c6c", // message "full"
        ],
    );
}

#[test]
fn golden_spaces_and_snapshots() {
    golden(
        Message::ListSpaces(ListSpaces {
            spaces: vec!["docs".into()],
        }),
        &[
            "06000000",    // body length 6
            "10",          // type ListSpaces
            "01",          // 1 space
            "04 646f6373", // "docs"
        ],
    );
    golden(
        Message::SpaceList(SpaceList {
            spaces: vec![SpaceState {
                name: "docs".into(),
                heads: vec![sid(0x11)],
                snapshots: vec![sid(0x10), sid(0x11)],
            }],
        }),
        &[
            "68000000",    // body length 104
            "11",          // type SpaceList
            "01",          // 1 space
            "04 646f6373", // name "docs"
            "01",          // 1 head
            &"11".repeat(32),
            "02", // 2 snapshots
            &"10".repeat(32),
            &"11".repeat(32),
        ],
    );
    golden(
        Message::GetSnapshots(GetSnapshots {
            ids: vec![sid(0x11)],
        }),
        &[
            "21000000", // body length 33
            "12",       // type GetSnapshots
            "01",       // 1 id
            &"11".repeat(32),
        ],
    );
    golden(
        Message::Snapshot(SnapshotRecord {
            id: sid(0x11),
            bytes: vec![0xaa, 0xbb],
        }),
        &[
            "23000000",       // body length 35
            "13",             // type Snapshot
            &"11".repeat(32), // id
            "02 aabb",        // the record file's bytes
        ],
    );
}

#[test]
fn golden_objects_push_end() {
    golden(
        Message::GetObjects(GetObjects {
            ids: vec![oid(0x22)],
        }),
        &[
            "21000000", // body length 33
            "14",       // type GetObjects
            "01",       // 1 id
            &"22".repeat(32),
        ],
    );
    golden(
        Message::Object(Object {
            id: oid(0x22),
            kind: 0,
            flags: 1,
            raw_len: 300,
            data: b"abc".to_vec(),
        }),
        &[
            "28000000",       // body length 40
            "15",             // type Object
            &"22".repeat(32), // id
            "00",             // kind: data
            "01",             // flags: zstd
            "ac02",           // raw_len 300 (varint)
            "03 616263",      // stored bytes
        ],
    );
    golden(
        Message::End(End { count: 3 }),
        &[
            "01000000", // body length 1
            "16",       // type End
            "03",       // 3 frames before
        ],
    );
    golden(
        Message::Push(Push {
            space: "docs".into(),
        }),
        &[
            "05000000",    // body length 5
            "17",          // type Push
            "04 646f6373", // space "docs"
        ],
    );
    golden(
        Message::PushDone(PushDone {
            snapshots: 2,
            objects: 300,
            bytes: 70000,
            raw_bytes: 100000,
            logical_bytes: 1 << 20,
            merges: 1,
            conflicts: 0,
        }),
        &[
            "0e000000", // body length 14
            "18",       // type PushDone
            "02",       // snapshots 2
            "ac02",     // objects 300
            "f0a204",   // bytes 70000
            "a08d06",   // raw_bytes 100000
            "808040",   // logical_bytes 1 MiB
            "01",       // merges 1
            "00",       // conflicts 0
        ],
    );
}

#[test]
fn golden_forgets() {
    // Revision 3: which of these snapshots the responder forgot. Answered with `Forget` frames
    // (forget records, docs/format.md) and `End`.
    golden(
        Message::GetForgets(GetForgets {
            ids: vec![sid(0x11), sid(0x12)],
        }),
        &[
            "41000000", // body length 65
            "1a",       // type GetForgets
            "02",       // 2 ids
            &"11".repeat(32),
            &"12".repeat(32),
        ],
    );
    golden(
        Message::Forget(ForgetRecord {
            bytes: vec![0xaa, 0xbb, 0xcc],
        }),
        &[
            "04000000",  // body length 4
            "1b",        // type Forget
            "03 aabbcc", // the record's bytes
        ],
    );
    assert_eq!(MessageType::GetForgets.max_len(), 1024 * 1024);
    assert_eq!(MessageType::Forget.max_len(), 64 * 1024);
    const { assert!(FORGETS_VERSION <= VERSION) };
}

#[test]
fn golden_checks() {
    // Revision 4: which of these snapshots the responder holds complete, and its data checks.
    golden(
        Message::GetChecks(GetChecks {
            spaces: vec![SpaceIds {
                name: "docs".into(),
                ids: vec![sid(0x11), sid(0x12)],
            }],
        }),
        &[
            "47000000",    // body length 71
            "1c",          // type GetChecks
            "01",          // 1 space
            "04 646f6373", // name "docs"
            "02",          // 2 ids
            &"11".repeat(32),
            &"12".repeat(32),
        ],
    );
    golden(
        Message::Checks(Checks {
            spaces: vec![
                SpaceCheck {
                    name: "docs".into(),
                    held: vec![sid(0x11)],
                    checked_ns: Some(1_700_000_000_000_000_000),
                    damaged: false,
                },
                SpaceCheck {
                    name: "logs".into(),
                    held: vec![],
                    checked_ns: None,
                    damaged: true,
                },
            ],
        }),
        &[
            "3a000000",    // body length 58
            "1d",          // type Checks
            "02",          // 2 spaces
            "04 646f6373", // name "docs"
            "01",          // 1 id held
            &"11".repeat(32),
            "01 8080a8b1e39fe7cb17", // checked_ns: Some(2023-11-14T22:13:20Z in ns, varint)
            "00",                    // damaged: false
            "04 6c6f6773",           // name "logs"
            "00",                    // no id held
            "00",                    // checked_ns: None
            "01",                    // damaged: true
        ],
    );
    assert_eq!(MessageType::GetChecks.max_len(), 1024 * 1024);
    assert_eq!(MessageType::Checks.max_len(), 1024 * 1024);
    // The largest request (1024 spaces of 200 bytes, 1024 ids) fits well within the bound.
    let big = GetChecks {
        spaces: (0..MAX_CHECKS_PER_REQUEST)
            .map(|i| SpaceIds {
                name: format!("{i:0>200}"),
                ids: vec![sid(1)],
            })
            .collect(),
    };
    assert!(encode(&Message::GetChecks(big)).unwrap().len() < 300 * 1024);
    const { assert!(CHECKS_VERSION <= VERSION) };
    // A space name no node could have is refused where it is decoded.
    let mut bad = encode(&Message::GetChecks(GetChecks {
        spaces: vec![SpaceIds {
            name: "do*s".into(),
            ids: vec![],
        }],
    }))
    .unwrap();
    let e = decode(MessageType::GetChecks, &bad[5..]).unwrap_err();
    assert!(e.to_string().contains("invalid space name"), "{e}");
    bad[4] = MessageType::Checks as u8;
    bad.extend([0, 0]); // the rest of a SpaceCheck after its ids: no check, not damaged
    let e = decode(MessageType::Checks, &bad[5..]).unwrap_err();
    assert!(e.to_string().contains("invalid space name"), "{e}");
}

#[test]
fn golden_find_objects() {
    // Revision 2: objects by id alone (healing). Answered with `Object` frames and `End`.
    golden(
        Message::FindObjects(FindObjects {
            ids: vec![oid(0x22), oid(0x33)],
        }),
        &[
            "41000000", // body length 65
            "19",       // type FindObjects
            "02",       // 2 ids
            &"22".repeat(32),
            &"33".repeat(32),
        ],
    );
    assert_eq!(MessageType::FindObjects.max_len(), 256 * 1024);
    // An old revision-1 Hello still decodes, and a revision-2 one too.
    golden(
        Message::Hello(Hello {
            min_version: 1,
            max_version: 2,
            node: "lyon".into(),
            software: "puce 0.1.0".into(),
            chunking: CHUNKING,
            key: None,
        }),
        &[
            "1b000000",                  // body length 27
            "01",                        // type Hello
            "01",                        // min_version 1 (varint)
            "02",                        // max_version 2
            "04 6c796f6e",               // node "lyon"
            "0a 70756365 20 302e312e30", // software "puce 0.1.0"
            "808004 808010 808040",      // chunking 64 KiB, 256 KiB, 1 MiB (varints)
        ],
    );
}

/// Revision 5: the key fingerprint ends `Hello` and `Welcome` when there is one; anything but
/// nothing or 32 bytes after the fields is refused.
#[test]
fn golden_hello_welcome_with_a_key() {
    let key = Some(puce_core::crypto::Fingerprint([0xab; 32]));
    golden(
        Message::Hello(Hello {
            min_version: 1,
            max_version: 5,
            node: "lyon".into(),
            software: "puce 0.1.0".into(),
            chunking: CHUNKING,
            key,
        }),
        &[
            "3b000000",                  // body length 59
            "01",                        // type Hello
            "01",                        // min_version 1
            "05",                        // max_version 5
            "04 6c796f6e",               // node "lyon"
            "0a 70756365 20 302e312e30", // software "puce 0.1.0"
            "808004 808010 808040",      // chunking
            &"ab".repeat(32),            // key fingerprint (32 raw bytes)
        ],
    );
    golden(
        Message::Welcome(Welcome {
            version: 5,
            node: "grenoble".into(),
            software: "puce 0.1.0".into(),
            chunking: CHUNKING,
            key,
        }),
        &[
            "3e000000",                 // body length 62
            "02",                       // type Welcome
            "05",                       // version 5
            "08 6772656e6f626c65",      // node "grenoble"
            "0a 707563652030 2e312e30", // software
            "808004 808010 808040",     // chunking
            &"ab".repeat(32),           // key fingerprint
        ],
    );
    let mut frame = encode(&Message::Hello(Hello {
        min_version: 1,
        max_version: 5,
        node: "lyon".into(),
        software: "puce 0.1.0".into(),
        chunking: CHUNKING,
        key,
    }))
    .unwrap();
    frame.pop();
    let e = decode(MessageType::Hello, &frame[5..]).unwrap_err();
    assert!(e.to_string().contains("31 bytes after its fields"), "{e}");
}

#[test]
fn golden_blind_messages() {
    golden(
        Message::GetManifest(GetManifest { held: true }),
        &[
            "01000000", // body length 1
            "1e",       // type GetManifest
            "01",       // held: true
        ],
    );
    golden(
        Message::Manifest(ManifestBytes {
            bytes: b"PUCEMANI".to_vec(),
        }),
        &[
            "09000000",            // body length 9
            "1f",                  // type Manifest
            "08 505543454d414e49", // 8 bytes
        ],
    );
    golden(
        Message::GetFile(GetFile {
            kind: 0,
            name: [0x77; 32],
            offset: 16 << 20,
            len: 4 << 20,
        }),
        &[
            "29000000",       // body length 41
            "20",             // type GetFile
            "00",             // kind 0: pack
            &"77".repeat(32), // name
            "80808008",       // offset 16 MiB (varint)
            "80808002",       // len 4 MiB (varint)
        ],
    );
    golden(
        Message::FileData(FileData {
            data: vec![1, 2, 3],
        }),
        &[
            "04000000",  // body length 4
            "21",        // type FileData
            "03 010203", // 3 bytes
        ],
    );
    // Revision 6: the held manifests (newest, then those a protection period keeps) end with
    // `End` and their count.
    golden(
        Message::End(End { count: 2 }),
        &[
            "01000000", // body length 1
            "16",       // type End
            "02",       // count 2
        ],
    );
    const { assert!(KEPT_MANIFESTS_VERSION <= VERSION && BLIND_VERSION < KEPT_MANIFESTS_VERSION) };
    assert_eq!(MessageType::FileData.max_len(), MAX_FILE_RANGE + 16);
    assert_eq!(MessageType::Manifest.max_len(), 16 * 1024 * 1024 + 64);
    assert!(MessageType::GetFile.is_request() && MessageType::GetManifest.is_request());
}

#[test]
fn codes_round_trip() {
    for v in 0..=12u16 {
        assert_eq!(Code::from_u16(v).unwrap() as u16, v);
    }
    assert_eq!(Code::from_u16(13), None);
}

async fn read_bytes(b: &[u8]) -> Result<Option<Message>> {
    let mut r = b;
    read(&mut r).await
}

#[tokio::test]
async fn framing_limits_and_hostile_input() {
    // A clean end before any frame.
    assert!(read_bytes(&[]).await.unwrap().is_none());
    // Round trip through read/write.
    let m = Message::End(End { count: 7 });
    let mut buf = Vec::new();
    write(&mut buf, &m).await.unwrap();
    assert_eq!(read_bytes(&buf).await.unwrap(), Some(m));
    // A frame declaring more than its type allows is refused before its body is read.
    let mut huge = (MessageType::Hello.max_len() + 1).to_le_bytes().to_vec();
    huge.push(MessageType::Hello as u8);
    let e = read_bytes(&huge).await.unwrap_err();
    assert!(is_too_large(&e), "{e}");
    let mut huge = u32::MAX.to_le_bytes().to_vec();
    huge.push(MessageType::Object as u8);
    assert!(is_too_large(&read_bytes(&huge).await.unwrap_err()));
    // Unknown type, truncated header, truncated body, trailing bytes, garbage.
    let e = read_bytes(&[1, 0, 0, 0, 0x7f, 0]).await.unwrap_err();
    assert!(e.message().contains("unknown message type"), "{e}");
    assert!(read_bytes(&[1, 0]).await.is_err());
    assert!(read_bytes(&[5, 0, 0, 0, 0x16, 1]).await.is_err());
    assert!(read_bytes(&[2, 0, 0, 0, 0x16, 1, 1]).await.is_err());
    for len in 0..40u8 {
        let mut f = vec![len, 0, 0, 0, 0x15];
        f.extend((0..len).map(|i| i.wrapping_mul(37)));
        let _ = read_bytes(&f).await; // an error, never a panic
    }
    // A declared vector length far beyond the body does not allocate it.
    let f = [6u8, 0, 0, 0, 0x14, 0xff, 0xff, 0xff, 0xff, 0x0f, 0];
    assert!(read_bytes(&f).await.is_err());
}

#[tokio::test]
async fn a_type_not_expected_on_the_stream_is_refused_before_its_body() {
    // Headers only: reading a body would end in "stream ended inside a frame".
    let head = |kind: MessageType| {
        let mut h = kind.max_len().to_le_bytes().to_vec();
        h.push(kind as u8);
        h
    };
    for kind in [
        MessageType::Object,
        MessageType::SpaceList,
        MessageType::Snapshot,
    ] {
        let mut r = &head(kind)[..];
        let e = read_expecting(&mut r, Expect::Request).await.unwrap_err();
        assert!(e.message().contains("where a request was expected"), "{e}");
    }
    for kind in [
        MessageType::GetObjects,
        MessageType::Hello,
        MessageType::Push,
    ] {
        let mut r = &head(kind)[..];
        let e = read_expecting(&mut r, Expect::Answer).await.unwrap_err();
        assert!(e.message().contains("where an answer was expected"), "{e}");
        let mut r = &head(kind)[..];
        let e = read_expecting(&mut r, Expect::Request).await.unwrap_err();
        assert!(e.message().contains("inside a frame"), "{e}");
    }
    // Every request fits in MAX_REQUEST_LEN.
    for b in 0..=255u8 {
        if let Some(k) = MessageType::from_u8(b).filter(|k| k.is_request()) {
            assert!(k.max_len() <= MAX_REQUEST_LEN, "{k:?}");
        }
    }
}

proptest::proptest! {
    #[test]
    fn object_round_trip(id in proptest::array::uniform32(0u8..), kind in 0u8..2, flags in 0u8..2,
                         raw_len: u32, data in proptest::collection::vec(0u8.., 0..2000)) {
        let m = Message::Object(Object { id: ObjectId(Hash(id)), kind, flags, raw_len, data });
        let f = encode(&m).unwrap();
        let k = MessageType::from_u8(f[4]).unwrap();
        proptest::prop_assert_eq!(decode(k, &f[5..]).unwrap(), m);
    }
}

proptest::proptest! {
    /// The zero-copy paths (sending an Object as head + data, reading its data in place) agree
    /// with the plain encoding, for every size of the varints.
    #[test]
    fn object_fast_paths_match_the_encoding(raw_len: u32, len in 0usize..70_000, k in 0u8..2) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let o = Object { id: oid(9), kind: k, flags: 1, raw_len, data };
        let whole = encode(&Message::Object(o.clone())).unwrap();
        let mut split = object_frame_head(&o).unwrap();
        split.extend_from_slice(&o.data);
        proptest::prop_assert_eq!(&split, &whole);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let back = rt.block_on(read_bytes(&whole)).unwrap();
        proptest::prop_assert_eq!(back, Some(Message::Object(o)));
    }
}

#[tokio::test]
async fn malformed_object_frames_are_refused() {
    // Declared data length larger than the frame.
    let o = Object {
        id: oid(1),
        kind: 0,
        flags: 0,
        raw_len: 3,
        data: b"abc".to_vec(),
    };
    let mut f = encode(&Message::Object(o)).unwrap();
    let at = 5 + 32 + 2 + 1; // the data length varint
    f[at] = 9;
    assert!(read_bytes(&f).await.is_err());
    // Truncated fields.
    let f = [3u8, 0, 0, 0, 0x15, 1, 2, 3];
    assert!(read_bytes(&f).await.is_err());
    // A varint that never ends.
    let mut f = vec![50u8, 0, 0, 0, 0x15];
    f.extend([0u8; 34]);
    f.extend([0xffu8; 16]);
    assert!(read_bytes(&f).await.is_err());
    // A data length near 2^64 (the sum with the fields' length overflowed: a panic in a debug
    // build, found by the fuzzer).
    let mut f = vec![60u8, 0, 0, 0, 0x15];
    f.extend([0u8; 34]);
    f.push(3);
    f.extend([0xffu8; 9]);
    f.push(0x01);
    f.extend([0u8; 15]);
    let err = read_bytes(&f).await.unwrap_err().to_string();
    assert!(err.contains("malformed Object message"), "{err}");
}

/// Every type is a request or an answer as section 3 of docs/protocol.md lists it (a request
/// type left out is refused from the header on the stream the other node opened).
#[test]
fn every_message_type_is_a_request_or_an_answer_as_documented() {
    let requests: Vec<u8> = (0..=255u8)
        .filter(|b| MessageType::from_u8(*b).is_some_and(|t| t.is_request()))
        .collect();
    assert_eq!(
        requests,
        [0x01, 0x10, 0x12, 0x14, 0x17, 0x19, 0x1a, 0x1c, 0x1e, 0x20]
    );
}
