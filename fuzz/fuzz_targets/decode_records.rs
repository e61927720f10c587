//! The small record files (config, snapshot, space settings, key files, blind-holding
//! manifests): any bytes, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use puce_core::format::{config::Config, snapshot::Snapshot, space::SpaceSettings};

fuzz_target!(|data: &[u8]| {
    let _ = Config::decode(data);
    let _ = Snapshot::decode(data, None);
    let _ = SpaceSettings::decode(data);
    let _ = puce_core::format::manifest::Manifest::decode(data);
    if let Ok(k) = puce_core::crypto::KeyFile::decode(data)
        && !k.needs_passphrase()
    {
        let _ = k.open(None);
    }
    // A valid record must re-encode to the same bytes.
    if let Ok(s) = Snapshot::decode(data, None) {
        assert_eq!(s.encode().unwrap(), data);
    }
});
