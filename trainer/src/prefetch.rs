//! Bounded prefetch: background threads build the next items (windows, batches' samples)
//! while the training step runs, and hand them over in a fixed order.
//!
//! ## Determinism
//! Item `i` of a run is always built by worker `i mod W` and read from that worker's own
//! `sync_channel(depth)`, so the consumer sees items in index order `0, 1, 2, …` whatever the
//! thread timing, and the content of item `i` depends only on `i` (the producer gets the index;
//! seed its RNG from it, e.g. with [`item_rng`]). One worker or three give identical streams.
//!
//! ## Back-pressure and memory
//! Each worker blocks once `depth` finished items wait in its channel, so at most
//! `W · (depth + 1)` items exist besides the one the consumer holds.
//!
//! ## Errors and shutdown
//! A producer error is delivered in place of its item (the producer's error names the case,
//! e.g. [`Error::Case`]); the stream goes on afterwards, the consumer decides whether to stop.
//! A panicking producer ends its worker: the consumer gets an error naming the item index
//! instead of hanging. Dropping the [`Prefetcher`] (also mid-epoch) disconnects the channels
//! and joins every worker; a worker in the middle of an item finishes it first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// Items `0..len` produced in background threads and read in index order (module docs).
pub struct Prefetcher<T> {
    receivers: Vec<Receiver<Result<T>>>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    len: usize,
}

impl<T: Send + 'static> Prefetcher<T> {
    /// Starts `workers` threads producing `produce(i)` for `i in 0..len`, each at most `depth`
    /// items ahead.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero workers or depth; an error if a thread cannot be
    /// spawned.
    pub fn new<F>(len: usize, workers: usize, depth: usize, produce: F) -> Result<Self>
    where
        F: Fn(usize) -> Result<T> + Send + Sync + 'static,
    {
        if workers == 0 || depth == 0 {
            return Err(Error::InvalidArgument(format!(
                "prefetch needs at least one worker and depth 1 (got {workers} workers, depth \
                 {depth})"
            )));
        }
        let produce = Arc::new(produce);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<Result<T>>(depth);
            let produce = Arc::clone(&produce);
            let worker_stop = Arc::clone(&stop);
            let handle = std::thread::Builder::new()
                .name(format!("prefetch-{w}"))
                .spawn(move || {
                    for i in (w..len).step_by(workers) {
                        if worker_stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let item = produce(i);
                        if tx.send(item).is_err() {
                            return; // The consumer is gone.
                        }
                    }
                })
                .map_err(|e| Error::InvalidArgument(format!("cannot start prefetch worker: {e}")));
            match handle {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    drop(receivers);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e);
                }
            }
            receivers.push(rx);
        }
        Ok(Prefetcher {
            receivers,
            workers: handles,
            stop,
            next: 0,
            len,
        })
    }
}

impl<T> Prefetcher<T> {
    /// Items not yet read.
    pub fn remaining(&self) -> usize {
        self.len - self.next
    }
}

impl<T> Iterator for Prefetcher<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.next >= self.len {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let rx = &self.receivers[i % self.receivers.len()];
        Some(rx.recv().unwrap_or_else(|_| {
            Err(Error::InvalidArgument(format!(
                "prefetch worker for item {i} stopped without producing it (it panicked)"
            )))
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining(), Some(self.remaining()))
    }
}

impl<T> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Disconnect first: a worker blocked in `send` then returns at once.
        self.receivers.clear();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Seed stream of the trainer: a run seed, an epoch and an item index → an independent,
/// reproducible ChaCha8 generator (SplitMix64-style mixing of the three numbers).
pub fn item_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    for v in [epoch, index] {
        x = splitmix(x ^ splitmix(v.wrapping_add(0xD1B5_4A32_D192_ED03)));
    }
    ChaCha8Rng::seed_from_u64(x)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The case order of an epoch: a seeded shuffle of `0..n` (same seed and epoch → same order).
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut item_rng(seed, epoch, u64::MAX));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Item `i`: a value only `i` determines, made slow by an index-dependent sleep so that
    /// workers finish out of order.
    #[allow(clippy::unnecessary_wraps)] // A producer returns a Result.
    fn slow_item(i: usize) -> Result<(usize, u64)> {
        std::thread::sleep(Duration::from_millis(((i * 7) % 5) as u64));
        Ok((i, (i as u64).wrapping_mul(0x9E37_79B9) ^ 0x55))
    }

    #[test]
    fn order_and_content_do_not_depend_on_the_worker_count() {
        let one: Vec<_> = Prefetcher::new(40, 1, 2, slow_item)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let three: Vec<_> = Prefetcher::new(40, 3, 2, slow_item)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(one.len(), 40);
        assert_eq!(one, three);
        assert!(one.iter().enumerate().all(|(k, (i, _))| k == *i));
        assert_eq!(one[3], (3, 3u64.wrapping_mul(0x9E37_79B9) ^ 0x55));
    }

    #[test]
    fn a_producer_error_arrives_in_place_with_its_case() {
        let items: Vec<Result<usize>> = Prefetcher::new(8, 3, 1, |i| {
            if i == 5 {
                Err(Error::Case {
                    case: format!("case-{i}"),
                    message: "unreadable".into(),
                })
            } else {
                Ok(i)
            }
        })
        .unwrap()
        .collect();
        assert_eq!(items.len(), 8);
        for (i, r) in items.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, i),
                Err(e) => {
                    assert_eq!(i, 5);
                    assert_eq!(e.to_string(), "case case-5: unreadable");
                }
            }
        }
        assert!(items[5].is_err());
    }

    #[test]
    fn a_panicking_producer_is_an_error_not_a_hang() {
        let mut p = Prefetcher::new(4, 2, 1, |i| {
            assert!(i != 2, "boom");
            Ok(i)
        })
        .unwrap();
        assert_eq!(p.next().unwrap().unwrap(), 0);
        assert_eq!(p.next().unwrap().unwrap(), 1);
        let e = p.next().unwrap().unwrap_err().to_string();
        assert!(e.contains("item 2"), "{e}");
    }

    #[test]
    fn dropping_mid_epoch_stops_and_joins_the_workers() {
        let produced = Arc::new(AtomicUsize::new(0));
        let witness = Arc::new(());
        let (p2, w2) = (Arc::clone(&produced), Arc::clone(&witness));
        let mut p = Prefetcher::new(10_000, 3, 2, move |i| {
            assert!(Arc::strong_count(&w2) >= 2);
            p2.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            Ok(i)
        })
        .unwrap();
        for _ in 0..5 {
            p.next().unwrap().unwrap();
        }
        drop(p);
        // Joined: the closure (and its clone of `witness`) is gone with the threads.
        assert_eq!(Arc::strong_count(&witness), 1);
        let n = produced.load(Ordering::SeqCst);
        // Bounded: 5 read + at most depth + 1 per worker.
        assert!(n <= 5 + 3 * 3, "{n} items produced");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(produced.load(Ordering::SeqCst), n);
    }

    #[test]
    fn seeds_and_epoch_orders_are_reproducible() {
        use rand::Rng;
        let a: u64 = item_rng(1, 2, 3).random();
        assert_eq!(a, item_rng(1, 2, 3).random::<u64>());
        assert_ne!(a, item_rng(1, 2, 4).random::<u64>());
        assert_ne!(a, item_rng(1, 3, 3).random::<u64>());
        let o = epoch_order(9, 0, 50);
        assert_eq!(o, epoch_order(9, 0, 50));
        assert_ne!(o, epoch_order(9, 1, 50));
        let mut sorted = o.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
