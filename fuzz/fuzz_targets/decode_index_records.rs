//! What the index and the repository's small files hold, read back after damage: object
//! locations, receipts. Any bytes, never a panic; a valid record round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use puce_core::format::receipt::Receipt;
use puce_core::index::Location;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = <&[u8; 24]>::try_from(data.get(..24).unwrap_or_default())
        && let Ok(loc) = Location::decode(b)
    {
        assert_eq!(&loc.encode()[..22], &b[..22]);
    }
    if let Ok(r) = Receipt::decode(data) {
        assert_eq!(Receipt::decode(&r.encode().unwrap()).unwrap(), r);
        let _ = Receipt::snapshot_of_name(&r.file_name()).unwrap();
    }
});
