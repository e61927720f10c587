//! Reading pack trailers and entries.

use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use crate::format::pack::{self, Record};
use crate::hash::{Hash, PackId};
use crate::pack::codec::Codec;

/// Read and check the trailer of pack `id` (one ranged read of the footer, one of the trailer).
pub fn read_pack_records(
    backend: &dyn Backend,
    id: &PackId,
    codec: &Codec,
) -> Result<(u64, Vec<Record>)> {
    let name = id.to_hex();
    let size = backend.size(FileKind::Pack, &name)?;
    if size < (pack::HEADER_LEN + pack::FOOTER_LEN) as u64 {
        return Err(Error::corrupt(format!(
            "pack {name} is truncated ({size} bytes)"
        )));
    }
    let mut footer = [0u8; pack::FOOTER_LEN];
    backend.read_at(
        FileKind::Pack,
        &name,
        size - pack::FOOTER_LEN as u64,
        &mut footer,
    )?;
    let f = pack::parse_footer(&footer, size).map_err(|e| e.context(format!("pack {name}")))?;
    let mut trailer = vec![0u8; f.trailer_len()];
    backend.read_at(FileKind::Pack, &name, f.trailer_offset, &mut trailer)?;
    let records = pack::parse_trailer(&trailer, &f, codec.keys())
        .map_err(|e| e.context(format!("pack {name}")))?;
    Ok((size, records))
}

/// Recover the entries of a pack whose trailer is damaged, by walking the entry headers from the
/// start. Stops at the first header that does not parse. `data` is the whole pack.
pub fn scan_pack_entries(data: &[u8], codec: &Codec) -> Result<Vec<Record>> {
    pack::check_header(data)?;
    let version = data[8];
    pack::check_sealing(version, codec.keys())?;
    let header_len = pack::entry_header_len(version);
    let mut out = Vec::new();
    let mut pos = pack::HEADER_LEN;
    while pos + header_len <= data.len() {
        let Ok(r) = pack::parse_entry_header_at(&data[pos..], pos as u64, version, codec.keys())
        else {
            break;
        };
        let end = r.offset as usize + r.stored_len as usize;
        if end > data.len() {
            break;
        }
        out.push(r);
        pos = end;
    }
    Ok(out)
}

/// The id a pack's bytes hash to.
pub fn pack_id_of(data: &[u8]) -> PackId {
    PackId(Hash::of(data))
}
