//! Content-defined chunking with FastCDC (the 2020 algorithm of the `fastcdc` crate).
//!
//! The [`Chunker`] streams a reader through a fixed buffer: memory is bounded by the buffer size,
//! whatever the size of the file. Its cut points are exactly those of
//! `fastcdc::v2020::FastCDC` run over the whole input at once (normalization level 1, no seed);
//! this is pinned by golden tests, since chunk boundaries are part of the repository format.

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, select_masks};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::crypto::Gear;
use crate::error::{Error, Result};

/// Chunk size bounds, fixed for a repository at init.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk, except the last of a file.
    pub min_size: u32,
    /// Target average chunk size.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
}

impl ChunkerParams {
    /// The default parameters (chosen from measurements on the corpus: see `docs/decisions.md`).
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min_size: 64 * 1024,
        avg_size: 256 * 1024,
        max_size: 1024 * 1024,
    };

    /// Check the bounds the `fastcdc` crate accepts: even sizes, `64 <= min <= avg <= max`,
    /// `avg` between 256 B and 4 MiB, `max` at most 16 MiB.
    pub fn validate(&self) -> Result<()> {
        let (min, avg, max) = (self.min_size, self.avg_size, self.max_size);
        let ok = (64..=1_048_576).contains(&min)
            && (256..=4_194_304).contains(&avg)
            && (1024..=16_777_216).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "invalid chunk sizes min={min} avg={avg} max={max}: sizes must be even, \
                 64 <= min <= avg <= max, 256 <= avg <= 4194304, 1024 <= max <= 16777216"
            )))
        }
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams::DEFAULT
    }
}

/// Precomputed masks for one set of parameters.
#[derive(Debug, Clone, Copy)]
struct Masks {
    s: u64,
    l: u64,
}

impl Masks {
    fn new(p: &ChunkerParams) -> Masks {
        let (s, l) = select_masks(p.avg_size as usize, Normalization::Level1);
        Masks { s, l }
    }
}

/// Find the end of the next chunk in `window`, which holds at least `max_size` bytes or the
/// whole rest of the input; with a keyed gear table in an encrypted repository.
#[inline]
fn cut(window: &[u8], p: &ChunkerParams, m: &Masks, gear: Option<&Gear>) -> usize {
    // fastcdc's own tables (borrowed, no copy) unless the repository has keyed ones.
    let (default, default_ls) = fastcdc::v2020::get_gear_with_seed(0);
    let (g, g_ls) = match gear {
        Some(g) => (&g.gear[..], &g.gear_ls[..]),
        None => (&default[..], &default_ls[..]),
    };
    let (_, len) = fastcdc::v2020::cut_gear(
        window,
        p.min_size as usize,
        p.avg_size as usize,
        p.max_size as usize,
        m.s,
        m.l,
        m.s << 1,
        m.l << 1,
        g,
        g_ls,
    );
    len
}

/// The chunk lengths of an in-memory buffer (reference implementation, used by tests and by
/// small inputs).
pub fn chunk_lengths(data: &[u8], p: &ChunkerParams) -> Vec<usize> {
    chunk_lengths_with(data, p, None)
}

/// [`chunk_lengths`] with the gear table of an encrypted repository.
pub fn chunk_lengths_with(data: &[u8], p: &ChunkerParams, gear: Option<&Gear>) -> Vec<usize> {
    let m = Masks::new(p);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let n = cut(&data[pos..], p, &m, gear);
        let n = n.max(1).min(data.len() - pos);
        out.push(n);
        pos += n;
    }
    out
}

/// A streaming chunker over a reader, with a buffer of fixed size.
pub struct Chunker<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    params: ChunkerParams,
    masks: Masks,
    gear: Option<Arc<Gear>>,
    /// Total bytes handed out so far.
    pub consumed: u64,
}

impl<R: Read> Chunker<R> {
    /// A chunker reading from `reader`, with a buffer of `buffer_size` bytes (raised to at least
    /// twice the maximum chunk size).
    pub fn new(reader: R, params: ChunkerParams, buffer_size: usize) -> Chunker<R> {
        let size = buffer_size.max(2 * params.max_size as usize);
        Chunker {
            reader,
            buf: vec![0; size],
            start: 0,
            end: 0,
            eof: false,
            masks: Masks::new(&params),
            params,
            gear: None,
            consumed: 0,
        }
    }

    /// Cut with `gear` (an encrypted repository's keyed table; `None`: fastcdc's own).
    pub fn with_gear(mut self, gear: Option<Arc<Gear>>) -> Chunker<R> {
        self.gear = gear;
        self
    }

    /// Replace the reader, reusing the buffer (the chunker must have reached the end of the
    /// previous input).
    pub fn reset(&mut self, reader: R) {
        self.reader = reader;
        self.start = 0;
        self.end = 0;
        self.eof = false;
        self.consumed = 0;
    }

    /// The inner reader.
    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        if self.end - self.start < self.params.max_size as usize && !self.eof {
            self.fill()?;
        }
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(None);
        }
        let n = cut(
            &self.buf[self.start..self.end],
            &self.params,
            &self.masks,
            self.gear.as_deref(),
        )
        .max(1)
        .min(avail);
        let s = self.start;
        self.start += n;
        self.consumed += n as u64;
        Ok(Some(&self.buf[s..s + n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A deterministic pseudo-random buffer (xorshift64*), the same on every machine.
    pub(crate) fn seeded(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// A reader that returns at most `step` bytes per call, to exercise refills.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream_lengths(data: &[u8], p: ChunkerParams, step: usize, buf: usize) -> Vec<usize> {
        let mut c = Chunker::new(Trickle { data, step }, p, buf);
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch.len());
        }
        out
    }

    /// Golden: the cut points of a seeded buffer with the default parameters. Changing them is a
    /// format change (every stored file would chunk differently and dedup would be lost).
    #[test]
    fn golden_default_boundaries() {
        let data = seeded(4 << 20, 0x7075_6365);
        let lens = chunk_lengths(&data, &ChunkerParams::DEFAULT);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        let mut offsets = Vec::new();
        let mut pos = 0;
        for l in &lens {
            pos += l;
            offsets.push(pos);
        }
        assert_eq!(
            offsets,
            [
                82499, 639948, 803711, 894702, 1677096, 1941665, 2651878, 3073468, 3267219,
                3338850, 3450081, 3926740, 4194304
            ]
        );
    }

    /// Golden: the same with small parameters, to pin the mask selection too.
    #[test]
    fn golden_small_boundaries() {
        let data = seeded(64 << 10, 42);
        let p = ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        };
        let lens = chunk_lengths(&data, &p);
        assert_eq!(
            lens,
            [
                7833, 5360, 8201, 1185, 9045, 7192, 4811, 4506, 5133, 4528, 5574, 2168
            ]
        );
    }

    /// The chunker agrees with the crate's own iterator over the whole buffer.
    #[test]
    fn a_keyed_gear_moves_the_cut_points_within_the_same_bounds() {
        use crate::crypto::{Keys, MasterKey};
        let p = ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        };
        let data = seeded(1 << 20, 7);
        let plain = chunk_lengths(&data, &p);
        let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
        let keyed = chunk_lengths_with(&data, &p, Some(keys.gear()));
        let other = Keys::derive(&MasterKey::from_bytes([2; 32]));
        let keyed2 = chunk_lengths_with(&data, &p, Some(other.gear()));
        assert_ne!(plain, keyed);
        assert_ne!(keyed, keyed2, "cut points depend on the key");
        for lens in [&keyed, &keyed2] {
            assert_eq!(lens.iter().sum::<usize>(), data.len());
            let (last, body) = lens.split_last().unwrap();
            assert!(body.iter().all(|n| (2048..=32768).contains(n)), "{lens:?}");
            assert!(*last <= 32768);
            // About the average size still.
            let avg = data.len() / lens.len();
            assert!((4096..=16384).contains(&avg), "average {avg}");
        }
        // The streaming chunker agrees with the in-memory one.
        let mut c = Chunker::new(&data[..], p, 70_000).with_gear(Some(keys.gear_arc()));
        let mut streamed = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            streamed.push(ch.len());
        }
        assert_eq!(streamed, keyed);
    }

    #[test]
    fn matches_fastcdc_iterator() {
        let data = seeded(3 << 20, 9);
        let p = ChunkerParams::DEFAULT;
        let reference: Vec<usize> = fastcdc::v2020::FastCDC::new(
            &data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
        )
        .map(|c| c.length)
        .collect();
        assert_eq!(chunk_lengths(&data, &p), reference);
        assert_eq!(stream_lengths(&data, p, 100_000, 0), reference);
    }

    #[test]
    fn zeros_cut_at_max() {
        let data = vec![0u8; 3 * 1024 * 1024 + 5];
        let lens = stream_lengths(&data, ChunkerParams::DEFAULT, 1 << 20, 0);
        assert_eq!(lens, [1 << 20, 1 << 20, 1 << 20, 5]);
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(stream_lengths(&[], ChunkerParams::DEFAULT, 10, 0).is_empty());
    }

    #[test]
    fn validate_rejects_odd_and_out_of_order() {
        let mut p = ChunkerParams::DEFAULT;
        assert!(p.validate().is_ok());
        p.avg_size += 1;
        assert!(p.validate().is_err());
        let p = ChunkerParams {
            min_size: 4096,
            avg_size: 2048,
            max_size: 8192,
        };
        assert!(p.validate().is_err());
    }

    proptest! {
        /// Streaming with any read size and buffer gives the same cuts as the whole buffer.
        #[test]
        fn streaming_equals_whole(len in 0usize..300_000, seed: u64, step in 1usize..70_000,
                                  buf in 0usize..100_000) {
            let p = ChunkerParams { min_size: 2048, avg_size: 8192, max_size: 32768 };
            let data = seeded(len, seed | 1);
            prop_assert_eq!(stream_lengths(&data, p, step, buf), chunk_lengths(&data, &p));
        }
    }
}
