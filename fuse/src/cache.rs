//! A bounded cache of decoded objects (chunks, trees), least recently used out first.
//!
//! Memory is bounded by a byte budget whatever the size of files or snapshots. Concurrent
//! requests for the same missing object load it once: the others wait for that load (so
//! read-ahead and a reader asking for the same chunk do not both decompress it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};

use puce_core::{Error, ObjectId, Result};

type Slot<V> = Arc<(Mutex<Option<std::result::Result<V, String>>>, Condvar)>;

struct Inner<V> {
    map: HashMap<ObjectId, (V, usize, u64)>,
    order: BTreeMap<u64, ObjectId>,
    tick: u64,
    bytes: usize,
    loading: HashMap<ObjectId, Slot<V>>,
    hits: u64,
    misses: u64,
}

/// The cache. `V` is cheap to clone (an `Arc`).
pub struct Cache<V: Clone> {
    inner: Mutex<Inner<V>>,
    capacity: usize,
}

/// Hit and miss counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Served from memory.
    pub hits: u64,
    /// Loaded.
    pub misses: u64,
    /// Bytes held.
    pub bytes: usize,
}

impl<V: Clone> Cache<V> {
    /// A cache holding at most `capacity` bytes (as weighed by the callers).
    pub fn new(capacity: usize) -> Cache<V> {
        Cache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                bytes: 0,
                loading: HashMap::new(),
                hits: 0,
                misses: 0,
            }),
            capacity,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner<V>>> {
        self.inner
            .lock()
            .map_err(|_| Error::other("cache lock poisoned"))
    }

    /// The byte budget.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value for `id` if it is held (recency and counters untouched).
    pub fn peek(&self, id: &ObjectId) -> Option<V> {
        self.lock().ok()?.map.get(id).map(|(v, _, _)| v.clone())
    }

    /// Whether `id` is held (without touching its recency).
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.lock()
            .map(|g| g.map.contains_key(id) || g.loading.contains_key(id))
            .unwrap_or(false)
    }

    /// The value for `id`, loading it with `load` (which returns it and its weight in bytes)
    /// if it is not held. Only one caller loads a given id at a time.
    pub fn get_or_load(
        &self,
        id: &ObjectId,
        load: impl FnOnce() -> Result<(V, usize)>,
    ) -> Result<V> {
        let slot = {
            let mut g = self.lock()?;
            g.tick += 1;
            let tick = g.tick;
            if let Some((v, _, t)) = g.map.get_mut(id) {
                let old = *t;
                *t = tick;
                let v = v.clone();
                g.order.remove(&old);
                g.order.insert(tick, *id);
                g.hits += 1;
                return Ok(v);
            }
            g.misses += 1;
            if let Some(s) = g.loading.get(id) {
                Some(s.clone())
            } else {
                g.loading
                    .insert(*id, Arc::new((Mutex::new(None), Condvar::new())));
                None
            }
        };
        if let Some(slot) = slot {
            // Someone else is loading it: wait for their result.
            let (m, cv) = &*slot;
            let mut r = m.lock().map_err(|_| Error::other("cache lock poisoned"))?;
            while r.is_none() {
                r = cv
                    .wait(r)
                    .map_err(|_| Error::other("cache lock poisoned"))?;
            }
            return match r.as_ref() {
                Some(Ok(v)) => Ok(v.clone()),
                Some(Err(msg)) => Err(Error::other(msg.clone())),
                None => Err(Error::other("cache load vanished")),
            };
        }
        let loaded = load();
        let mut g = self.lock()?;
        let slot = g.loading.remove(id);
        let out = match loaded {
            Ok((v, weight)) => {
                if weight <= self.capacity {
                    g.tick += 1;
                    let tick = g.tick;
                    g.bytes += weight;
                    g.map.insert(*id, (v.clone(), weight, tick));
                    g.order.insert(tick, *id);
                    while g.bytes > self.capacity {
                        let Some((&t, &old)) = g.order.iter().next() else {
                            break;
                        };
                        g.order.remove(&t);
                        if let Some((_, w, _)) = g.map.remove(&old) {
                            g.bytes -= w;
                        }
                    }
                }
                Ok(v)
            }
            Err(e) => Err(e),
        };
        drop(g);
        if let Some(slot) = slot {
            let (m, cv) = &*slot;
            if let Ok(mut r) = m.lock() {
                *r = Some(match &out {
                    Ok(v) => Ok(v.clone()),
                    Err(e) => Err(format!("{e:#}")),
                });
            }
            cv.notify_all();
        }
        out
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        self.lock()
            .map(|g| CacheStats {
                hits: g.hits,
                misses: g.misses,
                bytes: g.bytes,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn id(n: u8) -> ObjectId {
        ObjectId::of(&[n])
    }

    #[test]
    fn bounded_and_lru() {
        let c: Cache<Arc<Vec<u8>>> = Cache::new(100);
        for n in 0..10u8 {
            let v = c
                .get_or_load(&id(n), || Ok((Arc::new(vec![n; 30]), 30)))
                .unwrap();
            assert_eq!(v[0], n);
            assert!(c.stats().bytes <= 100);
        }
        // The three most recent stay.
        assert!(c.contains(&id(9)) && c.contains(&id(8)) && c.contains(&id(7)));
        assert!(!c.contains(&id(0)));
        // Too big for the budget: returned, not kept.
        let big = c
            .get_or_load(&id(99), || Ok((Arc::new(vec![0; 500]), 500)))
            .unwrap();
        assert_eq!(big.len(), 500);
        assert!(!c.contains(&id(99)));
    }

    #[test]
    fn concurrent_loads_happen_once() {
        let c: Arc<Cache<Arc<Vec<u8>>>> = Arc::new(Cache::new(1 << 20));
        let loads = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let (c, loads, barrier) = (c.clone(), loads.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    c.get_or_load(&id(1), || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok((Arc::new(vec![7; 10]), 10))
                    })
                    .unwrap()
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap()[0], 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn errors_reach_every_waiter_and_are_not_cached() {
        let c: Cache<Arc<Vec<u8>>> = Cache::new(100);
        assert!(
            c.get_or_load(&id(1), || Err(Error::corrupt("bad")))
                .is_err()
        );
        let v = c
            .get_or_load(&id(1), || Ok((Arc::new(vec![1]), 1)))
            .unwrap();
        assert_eq!(v[0], 1);
    }
}
