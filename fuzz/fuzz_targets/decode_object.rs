//! Stored objects: decompressing and verifying any bytes under any declared length never panics
//! and never allocates more than the declared (bounded) length.
#![no_main]
use libfuzzer_sys::fuzz_target;
use puce_core::ObjectId;
use puce_core::pack::codec::decode_object;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let flags = data[0] & 1;
    let raw_len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    let stored = &data[5..];
    let id = ObjectId::of(stored);
    if let Ok(plain) = decode_object(&id, flags, raw_len, stored) {
        assert_eq!(plain.len(), raw_len as usize);
        assert_eq!(ObjectId::of(&plain), id);
    }
});
