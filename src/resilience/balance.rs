//! Load balancing over the endpoints of one upstream: power of two choices over a
//! peak-EWMA latency × load estimate, across an endpoint set that changes while calls
//! flow (static addresses, or `dns:///` names resolved by [`crate::discovery`]).
//!
//! Which endpoints a call may go to, best first:
//! 1. **in rotation** (its health watch does not say NOT_SERVING, see
//!    [`super::health_watch`]) and its **breaker admits** calls;
//! 2. when no endpoint is in rotation but some breaker admits (every replica says it is
//!    draining, or the watches cannot tell), those: a draining server still answers, and
//!    refusing every call would turn a deploy of a one-replica service into an outage
//!    (Envoy calls this the panic threshold);
//! 3. none: UNAVAILABLE at once, naming the upstream and its endpoints.
//!
//! Within the chosen group an endpoint that already failed this call (the retry layer
//! passes [`Avoid`]) is taken only when nothing else is left, so **a retry goes
//! elsewhere**. Then two endpoints are drawn at random and the one with the lower
//! `rtt × (in flight + 1)` wins; the latency estimate jumps up to a slow answer at once and
//! decays towards faster ones, so a slow replica loses traffic within a few calls.
//!
//! This is written here rather than taken from `tower::balance::p2c`, which picks an
//! endpoint in `poll_ready`, before it sees the request: it cannot avoid the endpoint a
//! retry just failed on, nor fall back to draining endpoints, and it needs a
//! `tower::buffer` task hop on every call to be shared. Endpoints here are plain cloneable
//! services (tonic channels) read from a copy-on-write list, so a call costs a read of
//! that list, two atomics and a random draw.
//!
//! Removing an endpoint (discovery stopped listing it) only drops it from the list: calls
//! already on it hold their own clone and finish; its health watch stops.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::Service;

use super::breaker::{BreakerState, Permit};
use super::classify::{Failure, Outcome, Rejected, ServedBy, classify};
use super::health_watch::EndpointHealth;

type Req = http::Request<Body>;
type Resp = http::Response<Body>;

/// Latency assumed for an endpoint before it has answered (nanoseconds).
const DEFAULT_RTT_NS: u64 = 1_000_000;
/// Weight of a new observation faster than the estimate (a slower one replaces it).
const WEIGHT: f64 = 0.1;
/// An estimate not refreshed by calls fades with this time constant (nanoseconds), so an
/// endpoint that once looked slow and then got no calls is tried again.
const FADE_NS: f64 = 2e9;

/// Nanoseconds since the first call of this process (a cheap clock for the estimates).
fn now_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Endpoints a retry should not go to again: the ones this call already failed on.
/// Set by the retry layer on retried attempts only.
#[derive(Debug, Clone, Default)]
pub struct Avoid(pub Vec<&'static str>);

/// One endpoint of an upstream.
pub struct Endpoint<S> {
    addr: &'static str,
    svc: S,
    breaker: Arc<BreakerState>,
    health: Arc<EndpointHealth>,
    in_flight: AtomicU32,
    rtt_ns: AtomicU64,
    /// When `rtt_ns` was last updated ([`now_ns`]).
    observed_at: AtomicU64,
    /// The health generation (times it came back SERVING) the estimate belongs to: an
    /// endpoint that just came back starts with no latency history, so it is picked at
    /// once instead of being judged by how it behaved while it was going down.
    generation: AtomicU64,
    /// Ends the endpoint's health watch when it leaves the set.
    stop: CancellationToken,
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
    fn cost(&self, now: u64) -> f64 {
        let in_flight = f64::from(self.in_flight.load(Ordering::Relaxed) + 1);
        if self.generation.load(Ordering::Relaxed) != self.health.generation() {
            return 0.0;
        }
        let rtt = self.rtt_ns.load(Ordering::Relaxed) as f64;
        let idle = now.saturating_sub(self.observed_at.load(Ordering::Relaxed)) as f64;
        rtt * (-idle / FADE_NS).exp() * in_flight
    }

    /// Peak-EWMA: a slower answer replaces the estimate, a faster one pulls it down.
    fn observe(&self, elapsed_ns: u64) {
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
    upstream: &'static str,
    /// What the endpoints come from (addresses or `dns:///` names), for messages.
    source: String,
    list: RwLock<Arc<[Arc<Endpoint<S>>]>>,
    /// Set once the set has been filled for the first time (discovery's first answer).
    known: CancellationToken,
    /// Discovery listens: a connection failure asks for a fresh resolution.
    unreachable: Arc<Notify>,
}

impl<S> Drop for Endpoints<S> {
    fn drop(&mut self) {
        // The last channel to this upstream is gone: stop the health watches.
        self.close();
    }
}

impl<S> Endpoints<S> {
    pub fn new(upstream: &'static str, source: String) -> Arc<Self> {
        Arc::new(Self {
            upstream,
            source,
            list: RwLock::new(Arc::from(Vec::new())),
            known: CancellationToken::new(),
            unreachable: Arc::new(Notify::new()),
        })
    }

    pub fn upstream(&self) -> &'static str {
        self.upstream
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

    fn all_ejected(&self, endpoints: &[Arc<Endpoint<S>>]) -> Status {
        let names: Vec<&str> = endpoints.iter().map(|e| e.addr).collect();
        Rejected::AllEjected.status(
            Code::Unavailable,
            format!(
                "upstream {} unavailable: circuit breaker open for every endpoint ({})",
                self.upstream,
                names.join(", ")
            ),
        )
    }

    fn none_known(&self) -> Status {
        Rejected::NoEndpoints.status(
            Code::Unavailable,
            format!(
                "upstream {} unavailable: no endpoint found for {}",
                self.upstream, self.source
            ),
        )
    }
}

/// Which group an endpoint falls in for one call (lower is better); `None`: not now.
fn group<S>(e: &Endpoint<S>, avoid: &[&'static str], panic_mode: bool) -> Option<u8> {
    if e.breaker.is_refusing() {
        return None;
    }
    let in_rotation = e.health.in_rotation();
    if !in_rotation && !panic_mode {
        return None;
    }
    Some(u8::from(avoid.contains(&e.addr)))
}

/// Picks the endpoint for a call (see the module docs), or says why there is none.
fn pick<S>(
    endpoints: &[Arc<Endpoint<S>>],
    avoid: &[&'static str],
) -> Result<Arc<Endpoint<S>>, Option<()>> {
    if endpoints.is_empty() {
        return Err(None);
    }
    let panic_mode = !endpoints
        .iter()
        .any(|e| e.health.in_rotation() && !e.breaker.is_refusing());
    let mut counts = [0usize; 2];
    for e in endpoints {
        if let Some(g) = group(e, avoid, panic_mode) {
            counts[usize::from(g)] += 1;
        }
    }
    let Some(best) = (0..2u8).find(|g| counts[usize::from(*g)] > 0) else {
        return Err(Some(()));
    };
    let n = counts[usize::from(best)];
    let nth = |k: usize| {
        endpoints
            .iter()
            .filter(|e| group(e, avoid, panic_mode) == Some(best))
            .nth(k)
    };
    let chosen = if n == 1 {
        nth(0)
    } else {
        let a = rand::random::<u32>() as usize % n;
        let b = (a + 1 + rand::random::<u32>() as usize % (n - 1)) % n;
        let now = now_ns();
        match (nth(a), nth(b)) {
            (Some(x), Some(y)) => Some(if y.cost(now) < x.cost(now) { y } else { x }),
            (x, y) => x.or(y),
        }
    };
    // The list is a snapshot, so `nth` finds what the count saw, unless an endpoint's
    // breaker or health changed in between: then the group may be one short.
    chosen.cloned().ok_or(Some(()))
}

/// The balancer over an upstream's endpoints. Cheap to clone.
pub struct Balanced<S> {
    endpoints: Arc<Endpoints<S>>,
}

impl<S> Clone for Balanced<S> {
    fn clone(&self) -> Self {
        Self {
            endpoints: self.endpoints.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Balanced<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("upstream", &self.endpoints.upstream)
            .field("endpoints", &self.endpoints.snapshot())
            .finish()
    }
}

impl<S> Balanced<S> {
    pub fn new(endpoints: Arc<Endpoints<S>>) -> Self {
        Self { endpoints }
    }

    pub fn endpoints(&self) -> &Arc<Endpoints<S>> {
        &self.endpoints
    }
}

impl<S> Service<Req> for Balanced<S>
where
    S: Service<Req, Response = Resp, Error = Status> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = Status;
    type Future = BalancedFuture<S>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Readiness is per endpoint and decided per call; the bulkhead above bounds load.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let table = &self.endpoints;
        if !table.known.is_cancelled() {
            // Discovery has not answered yet (the first calls after start-up): wait for
            // it, within the call's deadline (the deadline layer above bounds this).
            let table = table.clone();
            return BalancedFuture::waiting(Box::pin(async move {
                table.known.cancelled().await;
                let mut svc = Balanced { endpoints: table };
                std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                svc.call(req).await
            }));
        }
        let endpoints = table.snapshot();
        let avoid: &[&'static str] = req.extensions().get::<Avoid>().map_or(&[], |a| &a.0);
        let mut tries = 0;
        loop {
            let endpoint = match pick(&endpoints, avoid) {
                Ok(e) => e,
                Err(None) => return BalancedFuture::failed(table.none_known()),
                Err(Some(())) => return BalancedFuture::failed(table.all_ejected(&endpoints)),
            };
            match endpoint.breaker.try_acquire() {
                Ok(permit) => {
                    let call = Attempt::new(endpoint, permit, table.clone());
                    return BalancedFuture::ready(call, req);
                }
                // Lost a race for a half-open breaker's probe slot: the endpoint is
                // refusing now, so the next pick leaves it out.
                Err(_) if tries < 2 => tries += 1,
                Err(_) => return BalancedFuture::failed(table.all_ejected(&endpoints)),
            }
        }
    }
}

/// A call in progress on one endpoint: its breaker permit, in-flight count and timing.
struct Attempt<S> {
    endpoint: Arc<Endpoint<S>>,
    permit: Option<Permit>,
    table: Arc<Endpoints<S>>,
    started: Instant,
}

impl<S> Attempt<S> {
    fn new(endpoint: Arc<Endpoint<S>>, permit: Permit, table: Arc<Endpoints<S>>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            endpoint,
            permit: Some(permit),
            table,
            started: Instant::now(),
        }
    }

    /// Reports the result to the breaker and the load estimate; tags a failed response
    /// with the endpoint so that a retry avoids it.
    fn finish(mut self, mut result: Result<Resp, Status>) -> Result<Resp, Status> {
        let outcome = classify(&result);
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.endpoint.observe(elapsed);
        if let Outcome::Failure(failure) = outcome {
            if failure == Failure::Connect {
                self.table.report_unreachable();
            }
            if let Ok(resp) = result.as_mut() {
                resp.extensions_mut().insert(ServedBy(self.endpoint.addr));
            }
        }
        if let Some(permit) = self.permit.take() {
            permit.record(outcome);
        }
        result
    }
}

impl<S> Drop for Attempt<S> {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// A call through [`Balanced`].
    pub struct BalancedFuture<S>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: Service<Req>,
    {
        /// Waiting for the endpoint's service to be ready, then calling it.
        Ready { svc: S, req: Option<Req>, attempt: Option<Attempt<S>> },
        Calling { #[pin] fut: S::Future, attempt: Option<Attempt<S>> },
        Waiting { fut: BoxFuture<Result<Resp, Status>> },
        Failed { status: Option<Status> },
    }
}

impl<S> BalancedFuture<S>
where
    S: Service<Req, Response = Resp, Error = Status> + Clone,
{
    fn ready(attempt: Attempt<S>, req: Req) -> Self {
        Self {
            state: State::Ready {
                svc: attempt.endpoint.svc.clone(),
                req: Some(req),
                attempt: Some(attempt),
            },
        }
    }

    fn failed(status: Status) -> Self {
        Self {
            state: State::Failed {
                status: Some(status),
            },
        }
    }

    fn waiting(fut: BoxFuture<Result<Resp, Status>>) -> Self {
        Self {
            state: State::Waiting { fut },
        }
    }
}

impl<S> Future for BalancedFuture<S>
where
    S: Service<Req, Response = Resp, Error = Status>,
{
    type Output = Result<Resp, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Ready { svc, req, attempt } => {
                    if let Err(status) = ready!(svc.poll_ready(cx)) {
                        let attempt = attempt.take();
                        return Poll::Ready(match attempt {
                            Some(a) => a.finish(Err(status)),
                            None => Err(status),
                        });
                    }
                    let Some(request) = req.take() else {
                        return Poll::Ready(Err(Status::internal("balancer polled after use")));
                    };
                    let fut = svc.call(request);
                    let attempt = attempt.take();
                    state.set(State::Calling { fut, attempt });
                }
                StateProj::Calling { fut, attempt } => {
                    let result = ready!(fut.poll(cx));
                    return Poll::Ready(match attempt.take() {
                        Some(a) => a.finish(result),
                        None => result,
                    });
                }
                StateProj::Waiting { fut } => return fut.as_mut().poll(cx),
                StateProj::Failed { status } => {
                    return Poll::Ready(Err(status
                        .take()
                        .unwrap_or_else(|| Status::internal("balancer polled after use"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::breaker::BreakerSettings;
    use crate::resilience::classify::Failure;
    use std::time::Duration;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failures: 1,
            open: Duration::from_secs(60),
            max_open: Duration::from_secs(60),
            success_rate: None,
            window: Duration::from_secs(10),
            min_requests: 20,
        }
    }

    fn endpoint(addr: &'static str) -> Arc<Endpoint<()>> {
        Arc::new(Endpoint::new(
            addr,
            (),
            BreakerState::new("t", addr, &settings(), true),
            Arc::new(EndpointHealth::new()),
            CancellationToken::new(),
        ))
    }

    fn picks(endpoints: &[Arc<Endpoint<()>>], avoid: &[&'static str]) -> Vec<&'static str> {
        let mut seen: Vec<&'static str> = (0..200)
            .filter_map(|_| pick(endpoints, avoid).ok().map(|e| e.addr))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen
    }

    fn open(e: &Endpoint<()>) {
        e.breaker
            .try_acquire()
            .unwrap()
            .record(Outcome::Failure(Failure::Unavailable));
    }

    #[test]
    fn every_ready_endpoint_gets_picked() {
        let eps = [endpoint("a"), endpoint("b"), endpoint("c")];
        assert_eq!(picks(&eps, &[]), ["a", "b", "c"]);
    }

    #[test]
    fn a_retry_avoids_the_endpoint_it_failed_on_while_others_remain() {
        let eps = [endpoint("a"), endpoint("b")];
        assert_eq!(picks(&eps, &["a"]), ["b"]);
        assert_eq!(picks(&eps, &["a", "b"]), ["a", "b"]);
        // Avoiding is a preference: a lone endpoint is still used.
        assert_eq!(picks(&eps[..1], &["a"]), ["a"]);
    }

    #[test]
    fn not_serving_and_open_endpoints_are_out_of_rotation() {
        let eps = [endpoint("a"), endpoint("b"), endpoint("c")];
        eps[0]
            .health
            .force(crate::resilience::health_watch::Health::NotServing);
        open(&eps[1]);
        assert_eq!(picks(&eps, &[]), ["c"]);
        // A retry that failed on the only one in rotation still prefers health over
        // variety.
        assert_eq!(picks(&eps, &["c"]), ["c"]);
    }

    #[test]
    fn when_none_is_in_rotation_draining_ones_still_serve() {
        let eps = [endpoint("a"), endpoint("b")];
        eps[0]
            .health
            .force(crate::resilience::health_watch::Health::NotServing);
        eps[1]
            .health
            .force(crate::resilience::health_watch::Health::NotServing);
        assert_eq!(picks(&eps, &[]), ["a", "b"]);
        open(&eps[0]);
        assert_eq!(picks(&eps, &[]), ["b"]);
        open(&eps[1]);
        assert_eq!(pick(&eps, &[]).err(), Some(Some(())));
        assert_eq!(pick::<()>(&[], &[]).err(), Some(None));
    }

    #[test]
    fn the_less_loaded_of_two_wins() {
        let eps = [endpoint("a"), endpoint("b")];
        eps[0].in_flight.store(50, Ordering::Relaxed);
        assert_eq!(picks(&eps, &[]), ["b"]);
        eps[0].in_flight.store(0, Ordering::Relaxed);
        eps[0].observe(1_000_000);
        eps[1].observe(500_000_000);
        assert_eq!(picks(&eps, &[]), ["a"]);
    }

    #[test]
    fn the_set_keeps_known_endpoints_and_stops_removed_ones() {
        let table: Arc<Endpoints<()>> = Endpoints::new("t", "dns:///x:1".into());
        let make = |addr: &'static str| {
            Endpoint::new(
                addr,
                (),
                BreakerState::new("t", addr, &settings(), true),
                Arc::new(EndpointHealth::new()),
                CancellationToken::new(),
            )
        };
        assert!(!table.known.is_cancelled());
        let (added, removed) = table.set_addrs(&["a", "b"], make);
        assert_eq!((added, removed), (vec!["a", "b"], vec![]));
        assert!(table.known.is_cancelled());
        let a = table.snapshot()[0].clone();
        open(&a);
        let (added, removed) = table.set_addrs(&["a", "c"], make);
        assert_eq!((added, removed), (vec!["c"], vec!["b"]));
        let now = table.snapshot();
        assert!(Arc::ptr_eq(&now[0], &a), "a kept with its breaker");
        assert!(now[0].breaker.is_refusing());
        assert_eq!(now[1].addr, "c");
    }
}
