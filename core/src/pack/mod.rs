//! Writing and reading pack files.

pub mod reader;
pub mod writer;

pub use reader::{read_pack_records, scan_pack_entries};
pub use writer::PackWriter;
