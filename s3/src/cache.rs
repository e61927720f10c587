//! The range cache of pack reads: which aligned windows of a pack a read fetches (pure
//! arithmetic, tested without a server), and the windows recently fetched, kept in memory.

use bytes::Bytes;

use crate::READ_WINDOW;

/// The windows of [`READ_WINDOW`] bytes, aligned on multiples of it, that bytes `offset..end`
/// of a pack of `size` bytes overlap, in order: `(start, end)` of each, the last one cut at
/// the end of the pack. Nothing past `size` is asked for.
pub(crate) fn windows(offset: u64, end: u64, size: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = end.min(size);
    let mut w = offset / READ_WINDOW * READ_WINDOW;
    std::iter::from_fn(move || {
        (w < end).then(|| {
            let start = w;
            w = w.saturating_add(READ_WINDOW).min(size);
            (start, w)
        })
    })
}

/// One window a read takes bytes from: the window (bytes `start..end` of the pack), and the
/// `len` bytes at `from` in it that go to `to` in the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub start: u64,
    pub end: u64,
    pub from: usize,
    pub to: usize,
    pub len: usize,
}

/// How a read of bytes `offset..end` of a pack of `size` bytes (`end <= size`) is served from
/// the windows it overlaps: one piece per window, together covering the read exactly once (an
/// empty read takes nothing).
pub(crate) fn pieces(offset: u64, end: u64, size: u64) -> impl Iterator<Item = Piece> {
    let empty = offset >= end;
    windows(offset, end, size)
        .filter(move |_| !empty)
        .map(move |(start, w_end)| {
            let at = offset.max(start);
            Piece {
                start,
                end: w_end,
                from: (at - start) as usize,
                to: (at - offset) as usize,
                len: (end.min(w_end) - at) as usize,
            }
        })
}

/// Whether bytes `offset..end` lie inside one aligned window (such a read of a pack is served
/// from its window; a longer one is a GET of its own).
pub(crate) fn in_one_window(offset: u64, end: u64) -> bool {
    end <= offset / READ_WINDOW * READ_WINDOW + READ_WINDOW
}

/// A cached range: the pack's name, the range's start and its length.
pub(crate) type RangeKey = (String, u64, usize);

/// Recently read ranges, least recently used evicted first, bounded in bytes.
pub(crate) struct RangeCache {
    max: usize,
    used: usize,
    map: lru::LruCache<RangeKey, Bytes>,
}

impl RangeCache {
    /// A cache holding at most `max` bytes; a range over a quarter of that is not kept.
    pub(crate) fn new(max: usize) -> RangeCache {
        RangeCache {
            max,
            used: 0,
            map: lru::LruCache::unbounded(),
        }
    }

    pub(crate) fn get(&mut self, k: &RangeKey) -> Option<Bytes> {
        self.map.get(k).cloned()
    }

    pub(crate) fn put(&mut self, k: RangeKey, v: Bytes) {
        if v.len() > self.max / 4 {
            return;
        }
        self.used += v.len();
        if let Some(old) = self.map.put(k, v) {
            self.used -= old.len();
        }
        while self.used > self.max {
            let Some((_, b)) = self.map.pop_lru() else {
                break;
            };
            self.used -= b.len();
        }
    }

    /// Drop every range of pack `name` (removed from the bucket).
    pub(crate) fn forget(&mut self, name: &str) {
        let keys: Vec<_> = self
            .map
            .iter()
            .filter(|(k, _)| k.0 == name)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(b) = self.map.pop(&k) {
                self.used -= b.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = READ_WINDOW;
    /// A pack of two and a half windows.
    const SIZE: u64 = 2 * W + W / 2;

    fn pieces_of(offset: u64, len: u64) -> Vec<Piece> {
        pieces(offset, offset + len, SIZE).collect()
    }

    #[test]
    fn a_read_at_the_start_fetches_the_first_window_only() {
        assert_eq!(
            pieces_of(0, 100),
            [Piece {
                start: 0,
                end: W,
                from: 0,
                to: 0,
                len: 100
            }]
        );
        assert!(in_one_window(0, 100));
    }

    #[test]
    fn a_read_in_the_middle_fetches_its_whole_aligned_window() {
        let at = W + 12_345;
        assert_eq!(
            pieces_of(at, 1000),
            [Piece {
                start: W,
                end: 2 * W,
                from: 12_345,
                to: 0,
                len: 1000
            }]
        );
        // A read that ends exactly at the end of its window is still inside it.
        assert!(in_one_window(W, 2 * W));
        assert_eq!(pieces_of(W, W).len(), 1);
    }

    #[test]
    fn a_read_across_a_window_boundary_takes_from_both_windows() {
        let at = W - 10;
        assert_eq!(
            pieces_of(at, 30),
            [
                Piece {
                    start: 0,
                    end: W,
                    from: (W - 10) as usize,
                    to: 0,
                    len: 10
                },
                Piece {
                    start: W,
                    end: 2 * W,
                    from: 0,
                    to: 10,
                    len: 20
                },
            ]
        );
        assert!(!in_one_window(at, at + 30));
        // A read longer than two windows takes every window it overlaps, each once.
        let all: Vec<Piece> = pieces(0, SIZE, SIZE).collect();
        assert_eq!(
            all.iter().map(|p| (p.start, p.end)).collect::<Vec<_>>(),
            [(0, W), (W, 2 * W), (2 * W, SIZE)]
        );
        assert_eq!(all.iter().map(|p| p.len as u64).sum::<u64>(), SIZE);
        assert!(all.windows(2).all(|w| w[0].to + w[0].len == w[1].to));
    }

    #[test]
    fn a_read_at_the_end_fetches_a_window_cut_at_the_end_of_the_pack() {
        assert_eq!(
            pieces_of(SIZE - 5, 5),
            [Piece {
                start: 2 * W,
                end: SIZE,
                from: (W / 2 - 5) as usize,
                to: 0,
                len: 5
            }]
        );
        // A pack smaller than one window is one window: the whole pack.
        assert_eq!(windows(10, 20, 1000).collect::<Vec<_>>(), [(0, 1000)]);
    }

    #[test]
    fn read_ahead_asks_for_no_window_past_the_end_of_the_pack() {
        // Ranges reaching past the end (read-ahead guesses) are cut at the end of the pack.
        assert_eq!(
            windows(2 * W + 1, u64::MAX, SIZE).collect::<Vec<_>>(),
            [(2 * W, SIZE)]
        );
        // A range starting at the very end is aligned down into the last window, which it
        // names (as before the window logic was separated); one starting in a window past the
        // end names none.
        assert_eq!(
            windows(SIZE, SIZE + 10, SIZE).collect::<Vec<_>>(),
            [(2 * W, SIZE)]
        );
        assert_eq!(windows(5 * W, 6 * W, SIZE).count(), 0);
        // An empty read takes nothing; an empty read-ahead range names the window it is in
        // when not aligned (as before).
        assert_eq!(pieces_of(W + 3, 0).len(), 0);
        assert_eq!(pieces_of(W, 0).len(), 0);
        assert_eq!(windows(W + 3, W + 3, SIZE).count(), 1);
        assert_eq!(windows(W, W, SIZE).count(), 0);
    }

    fn key(name: &str, start: u64) -> RangeKey {
        (name.to_string(), start, 10)
    }

    #[test]
    fn the_cache_is_bounded_in_bytes_and_evicts_the_least_recently_used() {
        let mut c = RangeCache::new(40);
        for i in 0..4 {
            c.put(key("a", i), Bytes::from(vec![i as u8; 10]));
        }
        assert_eq!(c.used, 40);
        // Touch the oldest: the second oldest goes when a fifth range comes.
        assert!(c.get(&key("a", 0)).is_some());
        c.put(key("b", 0), Bytes::from(vec![9; 10]));
        assert_eq!(c.used, 40);
        assert!(c.get(&key("a", 1)).is_none());
        assert_eq!(c.get(&key("a", 0)).unwrap()[0], 0);
        assert!(c.get(&key("b", 0)).is_some());
        // Putting a range again replaces it without counting it twice.
        c.put(key("b", 0), Bytes::from(vec![7; 10]));
        assert_eq!(c.used, 40);
        assert_eq!(c.get(&key("b", 0)).unwrap()[0], 7);
    }

    #[test]
    fn the_cache_keeps_no_range_over_a_quarter_of_its_size() {
        let mut c = RangeCache::new(40);
        c.put(key("a", 0), Bytes::from(vec![1; 11]));
        assert!(c.get(&key("a", 0)).is_none());
        assert_eq!(c.used, 0);
    }

    #[test]
    fn forgetting_a_pack_drops_its_ranges_only() {
        let mut c = RangeCache::new(100);
        c.put(key("a", 0), Bytes::from(vec![1; 10]));
        c.put(key("a", 10), Bytes::from(vec![1; 10]));
        c.put(key("b", 0), Bytes::from(vec![2; 10]));
        c.forget("a");
        assert_eq!(c.used, 10);
        assert!(c.get(&key("a", 0)).is_none() && c.get(&key("a", 10)).is_none());
        assert!(c.get(&key("b", 0)).is_some());
    }
}
