//! Pack files: header, footer, trailer and entry scanning over any bytes, never a panic, and
//! never a record pointing outside the pack.
#![no_main]
use libfuzzer_sys::fuzz_target;
use puce_core::check::pack_records_from_bytes;
use puce_core::pack::scan_pack_entries;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = pack_records_from_bytes(data) {
        for r in records {
            assert!(r.offset as usize + r.stored_len as usize <= data.len());
        }
    }
    if let Ok(records) = scan_pack_entries(data) {
        for r in records {
            assert!(r.offset as usize + r.stored_len as usize <= data.len());
        }
    }
});
