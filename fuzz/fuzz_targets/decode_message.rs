//! The node protocol (`puce/sync/1`): any frame type byte and body from a peer, never a panic;
//! a body that decodes re-encodes to a frame that decodes to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use puce_node::protocol::{MessageType, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&t, body)) = data.split_first() else {
        return;
    };
    let Some(kind) = MessageType::from_u8(t) else {
        return;
    };
    if body.len() > kind.max_len() as usize {
        return;
    }
    if let Ok(m) = decode(kind, body) {
        let frame = encode(&m).expect("a decoded message encodes");
        assert_eq!(frame[4], t);
        let again = decode(kind, &frame[5..]).expect("a re-encoded message decodes");
        assert_eq!(again, m);
    }
});
