//! A small read-through cache of products by id, in front of GetProduct and
//! BatchGetProducts (the orders saga's price snapshot): catalog reads dominate, and a
//! cached product costs a lookup where a database read costs a hand-off to sqlx's worker
//! and back.
//!
//! Staleness is bounded twice. This replica drops an entry when it writes the product,
//! and a read that raced with a write does not store what it read (a write counter,
//! checked after the read). Other replicas' writes are not seen here, so every entry
//! also lives at most `STOCKMESH_PRODUCT_CACHE_TTL_MS` (default 1000; 0 turns the cache
//! off): after that, replicas agree again. Only found products are cached; NOT_FOUND is
//! always read afresh. Bounded to [`CAPACITY`] entries, least recently used out first.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::entity::product;

/// Most products held (a product is a few hundred bytes).
pub const CAPACITY: usize = 10_000;
/// Default lifetime of an entry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

pub struct ProductCache {
    ttl: Duration,
    entries: Mutex<LruCache<String, (Instant, product::Model)>>,
    /// Bumped by every write of a product, before and after it.
    writes: AtomicU64,
}

/// Proof of the write count before a database read: [`ProductCache::put`] stores only
/// when no write happened since.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl ProductCache {
    /// A cache whose entries live `ttl`; `Duration::ZERO` caches nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN),
            )),
            writes: AtomicU64::new(0),
        }
    }

    /// From `STOCKMESH_PRODUCT_CACHE_TTL_MS` (milliseconds; 0 = off).
    pub fn from_env() -> Self {
        let ttl = std::env::var("STOCKMESH_PRODUCT_CACHE_TTL_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_TTL, Duration::from_millis);
        Self::new(ttl)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, (Instant, product::Model)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The product, when cached and fresh.
    pub fn get(&self, id: &str) -> Option<product::Model> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.lock();
        match entries.get(id) {
            Some((at, p)) if at.elapsed() < self.ttl => Some(p.clone()),
            Some(_) => {
                entries.pop(id);
                None
            }
            None => None,
        }
    }

    /// Take before reading the database; hand to [`Self::put`] with what was read.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.writes.load(Ordering::Acquire))
    }

    /// Stores products read after `ticket` was taken, unless a write happened meanwhile
    /// (what was read may then predate it).
    pub fn put<'a>(&self, ticket: Ticket, products: impl IntoIterator<Item = &'a product::Model>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        // Checked under the lock: a write's invalidation also takes it.
        if self.writes.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        let now = Instant::now();
        for p in products {
            entries.put(p.id.clone(), (now, p.clone()));
        }
    }

    /// Forgets `id`; call after writing it (and the write counter keeps reads that
    /// started before from storing the old row).
    pub fn invalidate(&self, id: &str) {
        let mut entries = self.lock();
        self.writes.fetch_add(1, Ordering::AcqRel);
        entries.pop(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: &str, price: i64) -> product::Model {
        let now = chrono::Utc::now();
        product::Model {
            id: id.into(),
            sku: format!("SKU-{id}"),
            name: id.into(),
            name_folded: id.into(),
            description: String::new(),
            price_cents: price,
            currency: "USD".into(),
            supplier_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_stored() {
        let cache = ProductCache::new(Duration::from_secs(60));
        let ticket = cache.ticket();
        // A write lands between this read and its put: the old row must not be kept.
        cache.invalidate("p");
        cache.put(ticket, [&product("p", 100)]);
        assert!(cache.get("p").is_none());
        let ticket = cache.ticket();
        cache.put(ticket, [&product("p", 200)]);
        assert_eq!(cache.get("p").map(|p| p.price_cents), Some(200));
        cache.invalidate("p");
        assert!(cache.get("p").is_none());
    }

    #[test]
    fn entries_expire_and_zero_ttl_caches_nothing() {
        let cache = ProductCache::new(Duration::from_millis(1));
        let ticket = cache.ticket();
        cache.put(ticket, [&product("p", 100)]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get("p").is_none(), "expired");
        let off = ProductCache::new(Duration::ZERO);
        let ticket = off.ticket();
        off.put(ticket, [&product("p", 100)]);
        assert!(off.get("p").is_none());
    }
}
