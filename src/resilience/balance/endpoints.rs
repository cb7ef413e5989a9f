//! The endpoints of one upstream: each with its service (a tonic channel), breaker,
//! health and load estimate; and the set of them, which discovery replaces while calls
//! flow.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::resilience::Route;
use crate::resilience::breaker::BreakerState;
use crate::resilience::classify::Rejected;
use crate::resilience::health_watch::EndpointHealth;

/// Latency assumed for an endpoint before it has answered (nanoseconds).
const DEFAULT_RTT_NS: u64 = 1_000_000;
/// Weight of a new observation faster than the estimate (a slower one replaces it).
const WEIGHT: f64 = 0.1;
/// An estimate not refreshed by calls fades with this time constant (nanoseconds), so an
/// endpoint that once looked slow and then got no calls is tried again.
const FADE_NS: f64 = 2e9;

/// Nanoseconds since the first call of this process (a cheap clock for the estimates).
pub(super) fn now_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One endpoint of an upstream.
pub struct Endpoint<S> {
    pub(super) addr: &'static str,
    pub(super) svc: S,
    pub(super) breaker: Arc<BreakerState>,
    pub(super) health: Arc<EndpointHealth>,
    pub(super) in_flight: AtomicU32,
    pub(super) rtt_ns: AtomicU64,
    /// When `rtt_ns` was last updated ([`now_ns`]).
    pub(super) observed_at: AtomicU64,
    /// The health generation (times it came back SERVING) the estimate belongs to: an
    /// endpoint that just came back starts with no latency history, so it is picked at
    /// once instead of being judged by how it behaved while it was going down.
    pub(super) generation: AtomicU64,
    /// Ends the endpoint's health watch when it leaves the set.
    pub(super) stop: CancellationToken,
}

impl<S> Endpoint<S> {
    pub fn new(
        addr: &'static str,
        svc: S,
        breaker: Arc<BreakerState>,
        health: Arc<EndpointHealth>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            addr,
            svc,
            breaker,
            health,
            in_flight: AtomicU32::new(0),
            rtt_ns: AtomicU64::new(DEFAULT_RTT_NS),
            // Never observed: as faded as can be, so a new endpoint is tried at once and
            // endpoints without history tie (and the random draw decides).
            observed_at: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            stop,
        }
    }

    pub fn addr(&self) -> &'static str {
        self.addr
    }

    pub fn breaker(&self) -> &Arc<BreakerState> {
        &self.breaker
    }

    pub fn health(&self) -> &Arc<EndpointHealth> {
        &self.health
    }

    /// The load estimate: faded latency × (calls in flight + 1).
    pub(super) fn cost(&self, now: u64) -> f64 {
        let in_flight = f64::from(self.in_flight.load(Ordering::Relaxed) + 1);
        if self.generation.load(Ordering::Relaxed) != self.health.generation() {
            return 0.0;
        }
        let rtt = self.rtt_ns.load(Ordering::Relaxed) as f64;
        let idle = now.saturating_sub(self.observed_at.load(Ordering::Relaxed)) as f64;
        rtt * (-idle / FADE_NS).exp() * in_flight
    }

    /// Peak-EWMA: a slower answer replaces the estimate, a faster one pulls it down.
    pub(super) fn observe(&self, elapsed_ns: u64) {
        let generation = self.health.generation();
        let old = if self.generation.swap(generation, Ordering::Relaxed) == generation {
            self.rtt_ns.load(Ordering::Relaxed)
        } else {
            elapsed_ns
        };
        let new = if elapsed_ns >= old {
            elapsed_ns
        } else {
            (old as f64 * (1.0 - WEIGHT) + elapsed_ns as f64 * WEIGHT) as u64
        };
        // Racy by design: a lost update only loses one observation.
        self.rtt_ns.store(new.max(1), Ordering::Relaxed);
        self.observed_at.store(now_ns(), Ordering::Relaxed);
    }
}

impl<S> std::fmt::Debug for Endpoint<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("health", &self.health.get())
            .field("breaker", &self.breaker.status())
            .finish()
    }
}

/// The endpoint set of one upstream, shared by every clone of its [`Balanced`] and by
/// discovery, which replaces it.
pub struct Endpoints<S> {
    route: Route,
    /// What the endpoints come from (addresses or `dns:///` names), for messages.
    pub(super) source: String,
    pub(super) list: RwLock<Arc<[Arc<Endpoint<S>>]>>,
    /// Set once the set has been filled for the first time (discovery's first answer).
    pub(super) known: CancellationToken,
    /// Discovery listens: a connection failure asks for a fresh resolution.
    pub(super) unreachable: Arc<Notify>,
}

impl<S> Drop for Endpoints<S> {
    fn drop(&mut self) {
        // The last channel to this upstream is gone: stop the health watches.
        self.close();
    }
}

impl<S> Endpoints<S> {
    pub fn new(route: Route, source: String) -> Arc<Self> {
        Arc::new(Self {
            route,
            source,
            list: RwLock::new(Arc::from(Vec::new())),
            known: CancellationToken::new(),
            unreachable: Arc::new(Notify::new()),
        })
    }

    pub fn upstream(&self) -> &'static str {
        self.route.upstream
    }

    pub fn route(&self) -> Route {
        self.route
    }

    /// The current endpoints.
    pub fn snapshot(&self) -> Arc<[Arc<Endpoint<S>>]> {
        self.list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes the set exactly `addrs`: endpoints already known are kept (with their
    /// breaker, health and latency), new ones are made by `make`, and those no longer
    /// listed leave (their health watch stops; calls on them finish). Returns the
    /// addresses added and removed.
    pub fn set_addrs(
        &self,
        addrs: &[&'static str],
        mut make: impl FnMut(&'static str) -> Endpoint<S>,
    ) -> (Vec<&'static str>, Vec<&'static str>) {
        let old = self.snapshot();
        let mut next = Vec::with_capacity(addrs.len());
        let mut added = Vec::new();
        for addr in addrs {
            match old.iter().find(|e| e.addr == *addr) {
                Some(e) => next.push(e.clone()),
                None => {
                    next.push(Arc::new(make(addr)));
                    added.push(*addr);
                }
            }
        }
        let mut removed = Vec::new();
        for e in old.iter() {
            if !addrs.contains(&e.addr) {
                e.stop.cancel();
                removed.push(e.addr);
            }
        }
        *self
            .list
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::from(next);
        self.known.cancel();
        (added, removed)
    }

    /// Stops every endpoint's health watch (the upstream is going away).
    pub fn close(&self) {
        for e in self.snapshot().iter() {
            e.stop.cancel();
        }
    }

    /// Tells discovery that an endpoint could not be reached.
    pub fn report_unreachable(&self) {
        self.unreachable.notify_one();
    }

    /// What [`report_unreachable`](Self::report_unreachable) notifies.
    pub fn unreachable_signal(&self) -> Arc<Notify> {
        self.unreachable.clone()
    }

    /// The status a call made now would be refused with at once, without making one:
    /// every known endpoint's breaker is refusing. `None` when some endpoint would take
    /// the call, and before discovery's first answer (a call then waits for it).
    pub fn refusal(&self) -> Option<Status> {
        let endpoints = self.snapshot();
        if endpoints.is_empty() {
            return self.known.is_cancelled().then(|| self.none_known());
        }
        endpoints
            .iter()
            .all(|e| e.breaker.is_refusing())
            .then(|| self.all_ejected(&endpoints))
    }

    pub(super) fn all_ejected(&self, endpoints: &[Arc<Endpoint<S>>]) -> Status {
        let names: Vec<&str> = endpoints.iter().map(|e| e.addr).collect();
        Rejected::AllEjected.status(
            Code::Unavailable,
            format!(
                "upstream {} unavailable: circuit breaker open for every endpoint ({})",
                self.route.upstream,
                names.join(", ")
            ),
        )
    }

    pub(super) fn none_known(&self) -> Status {
        Rejected::NoEndpoints.status(
            Code::Unavailable,
            format!(
                "upstream {} unavailable: no endpoint found for {}",
                self.route.upstream, self.source
            ),
        )
    }
}
