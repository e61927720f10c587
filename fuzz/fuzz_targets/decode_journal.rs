//! The mount's write-back journal, read back after a crash: any bytes, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = puce_fuse::writeback::decode_journal(data, std::path::Path::new("fuzz"));
});
