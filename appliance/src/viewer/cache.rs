//! Viewer volumes kept in memory between requests: a least-recently-used cache bounded by the
//! bytes of the voxel buffers ([`ViewerVolume::bytes`]: 2 bytes of HU + 1 of labels + 1 of
//! heatmap per voxel, about 315 MB for a 512 × 512 × 300 series with heatmap).
//!
//! - Loading a series takes seconds (decoding every slice), rendering a slice milliseconds: a
//!   page that scrolls through a series must not reload it. The first request of a series
//!   loads it; later ones share the same `Arc`.
//! - When an insertion takes the total over the budget, least recently used volumes are
//!   dropped until it fits (a volume in use by a request stays alive through its `Arc` until
//!   that request finishes, so memory can briefly exceed the budget by the volumes being
//!   rendered).
//! - A volume larger than the whole budget is returned but not kept.
//! - Concurrent requests for the same key load it once: the first loads while the others wait
//!   on that key's lock; requests for other keys are not blocked.
//! - [`ViewerCache::invalidate`] drops a key (a re-analysed or deleted series).
//!
//! All methods block (loading reads files): call them from a blocking thread in async code.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use super::{ViewerError, ViewerVolume};

/// Default budget: 1 GiB, three or four large series.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;

struct Entry {
    volume: Arc<ViewerVolume>,
    bytes: usize,
    last_used: u64,
}

struct Inner<K> {
    entries: HashMap<K, Entry>,
    loading: HashMap<K, Arc<Mutex<()>>>,
    total: usize,
    clock: u64,
}

/// A bounded LRU cache of viewer volumes by key (e.g. the store's series id).
pub struct ViewerCache<K> {
    budget: usize,
    inner: Mutex<Inner<K>>,
}

impl<K: Eq + Hash + Clone> ViewerCache<K> {
    /// A cache holding at most `budget` bytes of volumes.
    pub fn new(budget: usize) -> Self {
        ViewerCache {
            budget,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                loading: HashMap::new(),
                total: 0,
                clock: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached volume of `key`, if present (marks it used).
    pub fn get(&self, key: &K) -> Option<Arc<ViewerVolume>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        inner.entries.get_mut(key).map(|e| {
            e.last_used = now;
            Arc::clone(&e.volume)
        })
    }

    /// The volume of `key`: from the cache, or from `load` (called at most once per key at a
    /// time) and then cached.
    ///
    /// # Errors
    /// `load`'s error (nothing is cached then).
    pub fn get_or_load(
        &self,
        key: &K,
        load: impl FnOnce() -> Result<ViewerVolume, ViewerError>,
    ) -> Result<Arc<ViewerVolume>, ViewerError> {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let gate = Arc::clone(
            self.lock()
                .loading
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Mutex::new(()))),
        );
        let result = {
            let _loading = gate.lock().unwrap_or_else(PoisonError::into_inner);
            match self.get(key) {
                Some(v) => Ok(v),
                None => load().map(|v| self.insert(key.clone(), v)),
            }
        };
        let mut inner = self.lock();
        if Arc::strong_count(&gate) == 2 {
            // Only the map and this request hold the gate: nobody else is waiting on it.
            inner.loading.remove(key);
        }
        result
    }

    /// Caches `volume` under `key` (replacing any previous one), evicting least recently used
    /// volumes to stay within the budget; returns it.
    pub fn insert(&self, key: K, volume: ViewerVolume) -> Arc<ViewerVolume> {
        let bytes = volume.bytes();
        let volume = Arc::new(volume);
        if bytes > self.budget {
            self.invalidate(&key);
            return volume;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(old) = inner.entries.remove(&key) {
            inner.total -= old.bytes;
        }
        while inner.total + bytes > self.budget {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.total -= e.bytes;
            }
        }
        inner.total += bytes;
        inner.entries.insert(
            key,
            Entry {
                volume: Arc::clone(&volume),
                bytes,
                last_used: now,
            },
        );
        volume
    }

    /// Drops `key` from the cache.
    pub fn invalidate(&self, key: &K) {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.remove(key) {
            inner.total -= e.bytes;
        }
    }

    /// Bytes of the cached volumes.
    pub fn bytes(&self) -> usize {
        self.lock().total
    }

    /// Number of cached volumes.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The budget, bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vertebra_core::{Geometry, Volume};

    /// A volume of `n` voxels: `3 n` bytes without heatmap.
    fn volume(n: usize) -> ViewerVolume {
        let hu = Volume::filled(
            [n, 1, 1],
            0.0f32,
            Geometry::axis_aligned([1.0; 3], [0.0; 3]),
        )
        .unwrap();
        ViewerVolume::new(&hu, &hu.map(|_| 0u8), None, Vec::new(), Vec::new()).unwrap()
    }

    #[test]
    fn least_recently_used_volumes_go_first_and_the_budget_holds() {
        let cache = ViewerCache::new(300);
        cache.insert(1, volume(40)); // 120 bytes
        cache.insert(2, volume(40));
        assert_eq!(cache.bytes(), 240);
        assert!(cache.get(&1).is_some()); // 1 is now more recent than 2
        cache.insert(3, volume(40));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&2).is_none());
        assert!(cache.get(&1).is_some() && cache.get(&3).is_some());
        assert!(cache.bytes() <= cache.budget());
        // Larger than the budget: returned, not kept, nothing evicted for it.
        let big = cache.insert(4, volume(200));
        assert_eq!(big.bytes(), 600);
        assert!(cache.get(&4).is_none());
        assert_eq!(cache.len(), 2);
        cache.invalidate(&1);
        assert_eq!(cache.bytes(), 120);
        assert!(!cache.is_empty());
    }

    #[test]
    fn a_key_is_loaded_once_even_under_concurrent_requests() {
        let cache = Arc::new(ViewerCache::new(1 << 20));
        let loads = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
                std::thread::spawn(move || {
                    cache
                        .get_or_load(&7, || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(volume(10))
                        })
                        .unwrap()
                })
            })
            .collect();
        let got: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(got.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        assert!(cache.lock().loading.is_empty());
        // A failing load caches nothing and reports the error.
        let e = cache
            .get_or_load(&8, || Err(ViewerError::Source("gone".into())))
            .unwrap_err();
        assert!(e.to_string().contains("gone"));
        assert!(cache.get(&8).is_none());
    }
}
