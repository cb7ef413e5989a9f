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
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use pin_project_lite::pin_project;
use tonic::Status;
use tonic::body::Body;
use tower::Service;

use super::breaker::Permit;
use super::classify::{Failure, Outcome, ServedBy, classify};

mod endpoints;
#[cfg(test)]
mod tests;

use endpoints::now_ns;
pub use endpoints::{Endpoint, Endpoints};

type Req = http::Request<Body>;
type Resp = http::Response<Body>;

/// Endpoints a retry should not go to again: the ones this call already failed on.
/// Set by the retry layer on retried attempts only.
#[derive(Debug, Clone, Default)]
pub struct Avoid(pub Vec<&'static str>);

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
            .field("upstream", &self.endpoints.upstream())
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
                Err(Some(())) => {
                    crate::telemetry::event(
                        "every endpoint ejected: call refused",
                        &[
                            ("caller", table.route().caller.to_string()),
                            ("upstream", table.upstream().to_string()),
                        ],
                    );
                    return BalancedFuture::failed(table.all_ejected(&endpoints));
                }
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
        super::count_attempt(self.table.route(), self.endpoint.addr, outcome);
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
