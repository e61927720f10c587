//! Stored objects: opening (in an encrypted repository), decompressing and verifying any bytes
//! under any declared length never panics and never allocates more than the declared (bounded)
//! length.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use puce_core::crypto::{Keys, MasterKey};
use puce_core::format::pack::Kind;
use puce_core::pack::codec::Codec;

fn codecs() -> &'static [Codec; 2] {
    static C: OnceLock<[Codec; 2]> = OnceLock::new();
    C.get_or_init(|| {
        let keys = Keys::derive(&MasterKey::from_bytes([7; 32]));
        [Codec::plain(), Codec::sealed(Arc::new(keys))]
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let codec = &codecs()[usize::from(data[0] >> 7)];
    let flags = data[0] & 1;
    let kind = if data[0] & 2 == 0 { Kind::Data } else { Kind::Tree };
    let raw_len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    let stored = &data[5..];
    let id = codec.id_of(stored);
    if let Ok(plain) = codec.decode_object(&id, kind, flags, raw_len, stored) {
        assert_eq!(plain.len(), raw_len as usize);
        assert_eq!(codec.id_of(&plain), id);
    }
});
