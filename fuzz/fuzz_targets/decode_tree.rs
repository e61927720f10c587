//! Tree objects: any bytes, never a panic; a tree that decodes has safe, sorted names and
//! encodes back to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use puce_core::format::tree::{Tree, check_name};

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode(data) {
        for e in &t.entries {
            assert!(check_name(&e.name).is_ok());
        }
        assert_eq!(t.encode().unwrap(), data);
    }
});
