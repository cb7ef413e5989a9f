//! Throttling of login attempts, against online password guessing, with bounded memory.
//!
//! Every attempt is counted *before* the password is checked, so guesses sent in parallel
//! cannot slip through while the first ones are still being hashed. Two GCRA limiters
//! (governor) decide:
//!
//! * per **(email, client)**: `burst` attempts, then `per_minute` more each minute. One
//!   attacker (one IP; an IPv6 client by its /64) locks only *their own* attempts on an
//!   account, never the account for everyone else. A successful login clears its own
//!   (email, client) entry, so people who type their password right are never throttled.
//! * per **email**, across clients: [`GLOBAL_FACTOR`] times that, a cap on distributed
//!   guessing. Only many clients together can reach it — and it does not apply to
//!   **known clients**: an (email, client) pair that signed in successfully before (kept
//!   in a bounded LRU set, per process). So a botnet guessing the admin's password from a
//!   thousand addresses shuts out only clients that never signed in as the admin; the
//!   admin's own machines keep getting in, each still under its own per-(email, client)
//!   limit. Nobody can make a client known without the password.
//!
//! While a limiter refuses, every login for that key — even one with the right password —
//! is refused with RESOURCE_EXHAUSTED, so a guesser cannot learn that a guess was right.
//! Unknown emails are throttled the same way, so the throttle does not reveal which
//! emails exist.
//!
//! Memory is bounded whatever callers send: emails are validated (≤ 254 bytes) before they
//! get here, keys are 16-byte salted SHA-256 digests of (email, client) rather than the
//! strings, entries indistinguishable from fresh ones are pruned periodically
//! ([`LoginThrottle::prune`]), and each limiter holds at most `max_keys` entries, the least
//! recently used evicted first. Eviction only ever forgets state; an attacker who wants
//! to evict an entry they are being throttled on must send `max_keys` other attempts
//! first, which the gateway's per-client rate limit makes slow. State is per process.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use governor::clock::DefaultClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};
use lru::LruCache;
use sha2::{Digest, Sha256};

/// The per-email cap is this many times the per-(email, client) one.
pub const GLOBAL_FACTOR: u32 = 10;

/// The key of one limiter entry.
type Key = [u8; 16];

/// A governor state store in an LRU cache of bounded size.
#[derive(Clone)]
struct LruStore(Arc<Mutex<LruCache<Key, Nanos>>>);

impl LruStore {
    fn new(cap: NonZeroUsize) -> Self {
        Self(Arc::new(Mutex::new(LruCache::new(cap))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Key, Nanos>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateStore for LruStore {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut cache = self.lock();
        let (out, next) = f(cache.get(key).copied())?;
        cache.put(*key, next);
        Ok(out)
    }
}

impl ShrinkableKeyedStateStore<Key> for LruStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let mut cache = self.lock();
        let stale: Vec<Key> = cache
            .iter()
            .filter(|(_, tat)| **tat < drop_below)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            cache.pop(&k);
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

type Limiter = RateLimiter<Key, LruStore, DefaultClock, NoOpMiddleware>;

/// One limiter and its store (kept to clear entries after a success).
struct Bucket {
    store: LruStore,
    limiter: Limiter,
}

impl Bucket {
    fn new(quota: Quota, cap: NonZeroUsize) -> Self {
        let store = LruStore::new(cap);
        let limiter = RateLimiter::new(quota, store.clone(), DefaultClock::default());
        Self { store, limiter }
    }
}

pub struct LoginThrottle {
    salt: [u8; 16],
    per_client: Bucket,
    per_email: Bucket,
    /// (email, client) pairs that signed in successfully: exempt from the per-email cap.
    known: Mutex<LruCache<Key, ()>>,
}

/// The client part of a throttle key: IPv6 addresses by their /64 (one subscriber usually
/// holds a whole /64), IPv4 as is; `None` when unknown.
pub fn client_key(ip: Option<IpAddr>) -> Option<IpAddr> {
    match ip? {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Some(IpAddr::V6(bits.into()))
            }
        },
        v4 => Some(v4),
    }
}

impl LoginThrottle {
    /// `burst` attempts at once, `per_minute` more each minute (both at least 1), per
    /// (email, client); at most `max_keys` entries per limiter.
    pub fn new(burst: u32, per_minute: u32, max_keys: usize) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let cap = NonZeroUsize::new(max_keys).unwrap_or(NonZeroUsize::MIN);
        let global = |n: NonZeroU32| {
            n.saturating_mul(NonZeroU32::new(GLOBAL_FACTOR).unwrap_or(NonZeroU32::MIN))
        };
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        Self {
            salt,
            per_client: Bucket::new(Quota::per_minute(per_minute).allow_burst(burst), cap),
            per_email: Bucket::new(
                Quota::per_minute(global(per_minute)).allow_burst(global(burst)),
                cap,
            ),
            known: Mutex::new(LruCache::new(cap)),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, LruCache<Key, ()>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, email: &str, client: Option<IpAddr>) -> Key {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(email.as_bytes());
        h.update(b"\0");
        match client {
            Some(ip) => h.update(ip.to_string().as_bytes()),
            None => h.update(b"-"),
        }
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }

    /// Counts one login attempt; false when it must be refused. `email` must be validated
    /// and normalised; `client` is the caller's address as far as it is known.
    pub fn attempt(&self, email: &str, client: Option<IpAddr>) -> bool {
        let client = client_key(client);
        let pair = self.key(email, client);
        let global = self.key(email, None);
        // The per-client limiter first: a throttled attacker does not also use up the
        // account's global budget. A known client neither uses it nor is held by it.
        self.per_client.limiter.check_key(&pair).is_ok()
            && (self.known().get(&pair).is_some()
                || self.per_email.limiter.check_key(&global).is_ok())
    }

    /// A login succeeded: the (email, client) pair starts afresh and is known from now on.
    pub fn succeeded(&self, email: &str, client: Option<IpAddr>) {
        let pair = self.key(email, client_key(client));
        self.per_client.store.lock().pop(&pair);
        self.known().put(pair, ());
    }

    /// Forgets entries that no longer hold anything back.
    pub fn prune(&self) {
        self.per_client.limiter.retain_recent();
        self.per_email.limiter.retain_recent();
    }

    /// Entries held (both limiters and the known clients).
    pub fn len(&self) -> usize {
        self.per_client.store.lock().len() + self.per_email.store.lock().len() + self.known().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn locks_one_client_not_the_account() {
        let t = LoginThrottle::new(3, 1, 1000);
        for _ in 0..3 {
            assert!(t.attempt("a@x.io", ip(1)));
        }
        assert!(!t.attempt("a@x.io", ip(1)), "the attacker is throttled");
        assert!(t.attempt("a@x.io", ip(2)), "another client still gets in");
        assert!(t.attempt("b@x.io", ip(1)), "other emails are unaffected");
    }

    #[test]
    fn a_success_clears_its_own_pair_only() {
        let t = LoginThrottle::new(2, 1, 1000);
        assert!(t.attempt("a@x.io", ip(1)));
        assert!(t.attempt("a@x.io", ip(1)));
        t.succeeded("a@x.io", ip(1));
        assert!(t.attempt("a@x.io", ip(1)));
    }

    #[test]
    fn many_clients_reach_the_global_cap() {
        let t = LoginThrottle::new(1, 1, 10_000);
        let allowed = (0..=255u8).filter(|i| t.attempt("a@x.io", ip(*i))).count();
        assert_eq!(allowed, GLOBAL_FACTOR as usize);
    }

    #[test]
    fn known_clients_pass_the_account_cap_new_ones_wait() {
        let t = LoginThrottle::new(1, 1, 10_000);
        let home = ip(250);
        assert!(t.attempt("admin@x.io", home));
        t.succeeded("admin@x.io", home);
        // A distributed guess from many addresses uses up the account's cap…
        let allowed = (0..200u8)
            .filter(|i| t.attempt("admin@x.io", ip(*i)))
            .count();
        assert_eq!(
            allowed,
            GLOBAL_FACTOR as usize - 1,
            "less the one the first sign-in took"
        );
        assert!(!t.attempt("admin@x.io", ip(251)), "a new client waits");
        // …but the admin's own machine still gets in, under its own pair limit.
        assert!(t.attempt("admin@x.io", home));
        assert!(!t.attempt("admin@x.io", home), "the pair limit still holds");
        // Being known for one account says nothing about another.
        let other = (0..200u8).filter(|i| t.attempt("ops@x.io", ip(*i))).count();
        assert_eq!(other, GLOBAL_FACTOR as usize);
        assert!(!t.attempt("ops@x.io", home));
    }

    #[test]
    fn memory_is_capped() {
        let t = LoginThrottle::new(5, 10, 100);
        for i in 0..10_000 {
            let email = format!("user{i}@x.io");
            t.attempt(&email, ip(1));
            t.succeeded(&email, ip(1));
        }
        assert!(t.len() <= 300, "{} entries", t.len());
    }

    #[test]
    fn prune_forgets_entries_that_hold_nothing_back() {
        // 600 per minute: an entry is back to a full burst 100 ms after its last attempt.
        let t = LoginThrottle::new(1, 600, 1000);
        for i in 0..50 {
            assert!(t.attempt(&format!("user{i}@x.io"), ip(1)));
        }
        assert_eq!(t.len(), 100, "one entry per limiter and email");
        t.prune();
        // The per-email entries refill ten times faster and may already be gone.
        assert!(t.len() >= 50, "the per-client entries are not stale yet");
        // Not synchronisation: the entries must age past their refill time.
        std::thread::sleep(std::time::Duration::from_millis(250));
        t.prune();
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(Some(a)), client_key(Some(b)));
        assert_ne!(client_key(Some(a)), client_key(Some(c)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(Some(mapped)), ip(1));
    }
}
