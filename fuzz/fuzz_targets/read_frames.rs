//! The node's real frame reader (`protocol::read`, with its zero-copy `Object` path) over any
//! byte stream a peer can send: never a panic, never an allocation beyond a frame's bound;
//! every frame it accepts re-encodes to a frame it reads back as the same message, and an
//! `Object` frame agrees with the generic decoder whenever both accept it.
#![no_main]
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use puce_node::protocol::{Expect, Message, MessageType, decode, encode, read, read_expecting};

/// Run a future over an in-memory stream, which is always ready.
fn run<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks what the stream may carry: anything, requests, or answers.
    let Some((&pick, mut stream)) = data.split_first() else {
        return;
    };
    let expect = match pick % 3 {
        0 => Expect::Any,
        1 => Expect::Request,
        _ => Expect::Answer,
    };
    for _ in 0..64 {
        let before = stream;
        let Some(Ok(Some(m))) = run(read_expecting(&mut stream, expect)) else {
            return;
        };
        let consumed = &before[..before.len() - stream.len()];
        let frame = encode(&m).expect("a message read re-encodes");
        let mut again: &[u8] = &frame;
        let back = run(read(&mut again)).expect("ready").expect("re-read").expect("a frame");
        assert_eq!(back, m);
        assert!(again.is_empty());
        if let Message::Object(_) = &m
            && let Ok(generic) = decode(MessageType::Object, &consumed[5..])
        {
            assert_eq!(generic, m);
        }
    }
});
