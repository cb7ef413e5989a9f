//! The rate limiter's per-client state, with a hard cap on how many clients it holds.
//!
//! governor's keyed limiters keep one entry per key until pruned, and the gateway prunes
//! idle entries only every few seconds. Between two prunes, every new anonymous client
//! adds an entry — and an attacker with an IPv6 /48 has 65,536 /64s to send from. So the
//! store holds at most `cap` entries: once full, requests from clients it does not already
//! hold share one **overflow** entry (one rate-limit bucket for all of them) until the
//! next prune makes room. Clients already held, and signed-in users below the cap, keep
//! their own buckets; only newcomers during a flood are lumped together, which limits the
//! flood rather than anyone already being served. Memory: `cap` entries, whatever arrives.
//!
//! The lookup is the same lock-striped DashMap and compare-and-swap that governor's own
//! DashMap store does; only a *new* key pays for counting the map's size.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;

/// A bounded governor state store (see the module docs).
pub struct CappedStore<K: Hash + Eq> {
    map: DashMap<K, AtomicU64>,
    overflow: Arc<AtomicU64>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> CappedStore<K> {
    pub fn new(cap: usize) -> Self {
        Self {
            map: DashMap::new(),
            overflow: Arc::new(AtomicU64::new(0)),
            cap: cap.max(1),
        }
    }
}

/// governor's GCRA step on one cell: the theoretical arrival time in nanoseconds since the
/// limiter started, 0 meaning "never seen".
fn measure<T, F, E>(cell: &AtomicU64, f: F) -> Result<T, E>
where
    F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
{
    let seen = |v: u64| (v != 0).then(|| Nanos::from(v));
    let mut prev = cell.load(Ordering::Acquire);
    loop {
        let (out, next) = f(seen(prev))?;
        match cell.compare_exchange_weak(prev, next.into(), Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Ok(out),
            Err(actual) => prev = actual,
        }
    }
}

impl<K: Hash + Eq + Clone> StateStore for CappedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(cell) = self.map.get(key) {
            return measure(&cell, f);
        }
        if self.map.len() >= self.cap {
            metrics::counter!("stockmesh_gateway_rate_limit_overflow_total").increment(1);
            return measure(&self.overflow, f);
        }
        let cell = self
            .map
            .entry(key.clone())
            .or_insert_with(|| AtomicU64::new(0));
        measure(&cell, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for CappedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        let below = u64::from(drop_below);
        self.map
            .retain(|_, cell| cell.load(Ordering::Relaxed) > below);
        if self.overflow.load(Ordering::Relaxed) <= below {
            self.overflow.store(0, Ordering::Relaxed);
        }
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;
    use governor::middleware::NoOpMiddleware;
    use governor::{Quota, RateLimiter};

    use super::*;

    type Limiter = RateLimiter<
        u32,
        CappedStore<u32>,
        FakeRelativeClock,
        NoOpMiddleware<<FakeRelativeClock as governor::clock::Clock>::Instant>,
    >;

    fn limiter(burst: u32, cap: usize, clock: &FakeRelativeClock) -> Limiter {
        let quota = Quota::per_second(NonZeroU32::new(1).unwrap())
            .allow_burst(NonZeroU32::new(burst).unwrap());
        RateLimiter::new(quota, CappedStore::new(cap), clock.clone())
    }

    #[test]
    fn holds_at_most_cap_clients_and_newcomers_share_one_bucket() {
        let clock = FakeRelativeClock::default();
        let l = limiter(2, 100, &clock);
        for client in 0..100 {
            assert!(l.check_key(&client).is_ok());
        }
        assert_eq!(l.len(), 100);
        // 10,000 newcomers: no new entries, and together they get one burst of 2.
        let admitted = (100..10_100).filter(|c| l.check_key(c).is_ok()).count();
        assert_eq!(admitted, 2);
        assert_eq!(l.len(), 100);
        // Clients already held keep their own bucket during the flood.
        assert!(l.check_key(&7).is_ok());
        assert!(
            l.check_key(&7).is_err(),
            "a burst of 2, the second used above"
        );
    }

    #[test]
    fn pruning_makes_room_again() {
        let clock = FakeRelativeClock::default();
        let l = limiter(1, 10, &clock);
        for client in 0..10 {
            assert!(l.check_key(&client).is_ok());
        }
        assert!(l.check_key(&50).is_ok(), "the overflow bucket's one");
        assert!(l.check_key(&51).is_err(), "overflow shared and spent");
        clock.advance(std::time::Duration::from_secs(5));
        l.retain_recent();
        assert_eq!(l.len(), 0);
        assert!(
            l.check_key(&51).is_ok(),
            "a newcomer gets its own entry again"
        );
        assert_eq!(l.len(), 1);
    }
}
