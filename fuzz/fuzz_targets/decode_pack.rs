//! Pack files: header, footer, trailer and entry scanning over any bytes, in unencrypted and
//! encrypted repositories, never a panic, and never a record pointing outside the pack.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use puce_core::check::pack_records_from_bytes;
use puce_core::crypto::{Keys, MasterKey};
use puce_core::pack::codec::Codec;
use puce_core::pack::scan_pack_entries;

fn codecs() -> &'static [Codec; 2] {
    static C: OnceLock<[Codec; 2]> = OnceLock::new();
    C.get_or_init(|| {
        let keys = Keys::derive(&MasterKey::from_bytes([7; 32]));
        [Codec::plain(), Codec::sealed(Arc::new(keys))]
    })
}

fuzz_target!(|data: &[u8]| {
    for codec in codecs() {
        if let Ok(records) = pack_records_from_bytes(data, codec) {
            for r in records {
                assert!(r.offset as usize + r.stored_len as usize <= data.len());
            }
        }
        if let Ok(records) = scan_pack_entries(data, codec) {
            for r in records {
                assert!(r.offset as usize + r.stored_len as usize <= data.len());
            }
        }
    }
});
