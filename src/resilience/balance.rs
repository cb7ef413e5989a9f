//! Load balancing over the endpoints of one upstream (`STOCKMESH_<SVC>_ADDRS=a,b,c`), with
//! a breaker per endpoint that ejects a dead one while the others keep serving.
//!
//! Balancing is tower's power-of-two-choices over peak-EWMA latency: pick two endpoints at
//! random and send to the one with the lower latency-times-load estimate. It reacts to a
//! slow endpoint within a few calls and needs no coordination.
//!
//! Each endpoint sits behind [`Eject`], the balancer-side face of a
//! [`BreakerState`](super::breaker::BreakerState): while the endpoint's breaker refuses
//! calls, the endpoint reports *not ready*, so the balancer simply does not pick it, and
//! it becomes ready again when the open period ends (for its one probe) — instead of
//! failing the calls sent to it. A refused connection opens an endpoint's breaker at
//! once: a dead endpoint fails faster than a live one answers, so peak-EWMA would
//! otherwise favour it. Calls that failed on it are retried by the retry layer above,
//! which then lands on a live endpoint.
//!
//! The upstream as a whole is "open" when every endpoint is ejected: [`Balanced`] then
//! answers UNAVAILABLE at once, naming the upstream, rather than queueing until the
//! deadline. The balancer is not `Clone`, so it runs behind a `tower::buffer::Buffer`
//! (one task per upstream), as tonic's own multi-endpoint channel does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::util::BoxService;
use tower::{BoxError, Service};

use super::breaker::{BreakerState, Permit, Recorded};
use super::classify::Rejected;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Req = http::Request<Body>;
type Resp = http::Response<Body>;

/// Latency assumed for an endpoint before it has answered.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast old latency observations fade.
const DECAY: Duration = Duration::from_secs(10);

// === impl Eject ===

/// One endpoint behind its breaker: not ready while the breaker refuses calls.
pub struct Eject<S> {
    inner: S,
    state: Arc<BreakerState>,
    permit: Option<Permit>,
    wake_at: Option<Pin<Box<Sleep>>>,
}

impl<S> Eject<S> {
    pub fn new(inner: S, state: Arc<BreakerState>) -> Self {
        Self {
            inner,
            state,
            permit: None,
            wake_at: None,
        }
    }
}

impl<S> std::fmt::Debug for Eject<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eject").field("state", &self.state).finish()
    }
}

impl<S> Eject<S> {
    /// Waits for the breaker to admit a call; `Ready` once a permit is held.
    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Bounded: a refusal is re-checked at most twice per poll before waiting.
        for _ in 0..2 {
            if self.permit.is_some() {
                return Poll::Ready(());
            }
            if let Ok(permit) = self.state.try_acquire() {
                self.permit = Some(permit);
                self.wake_at = None;
                return Poll::Ready(());
            }
            // Register first so a probe ending right now is not missed.
            self.state.register(cx);
            match self.state.retry_at() {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    let sleep = self
                        .wake_at
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if sleep.deadline() != at {
                        sleep.as_mut().reset(at);
                    }
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.wake_at = None;
                }
                None if self.state.is_refusing() => return Poll::Pending,
                None => {}
            }
        }
        // Still refused after the open period ended and no probe in flight: a race with
        // another caller; look again shortly.
        let sleep = self
            .wake_at
            .insert(Box::pin(tokio::time::sleep(Duration::from_millis(1))));
        let _ = sleep.as_mut().poll(cx);
        Poll::Pending
    }
}

impl<S> Service<Req> for Eject<S>
where
    S: Service<Req, Response = Resp, Error = Status>,
{
    type Response = Resp;
    type Error = Status;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        if self.poll_permit(cx).is_pending() {
            return Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.permit.take() {
            Some(p) => Ok(p),
            None => self.state.try_acquire(),
        };
        match permit {
            Ok(permit) => Recorded::new(self.inner.call(req), permit),
            Err(_) => Recorded::refused(self.state.rejection()),
        }
    }
}

// === impl Balanced ===

/// The balancer over an upstream's endpoints, cloneable, failing fast when every endpoint
/// is ejected.
#[derive(Clone)]
pub struct Balanced {
    upstream: &'static str,
    buffer: Buffer<Req, BoxFuture<Result<Resp, BoxError>>>,
    endpoints: Arc<[Arc<BreakerState>]>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("upstream", &self.upstream)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Balanced {
    /// Balances over `endpoints`, each a service and the breaker guarding it. Spawns the
    /// balancer's task: call from within a tokio runtime.
    pub fn new<S>(
        upstream: &'static str,
        endpoints: Vec<(S, Arc<BreakerState>)>,
        queue: usize,
    ) -> Self
    where
        S: Service<Req, Response = Resp, Error = Status> + Send + 'static,
        S::Future: Send + 'static,
    {
        let states: Arc<[Arc<BreakerState>]> =
            endpoints.iter().map(|(_, state)| state.clone()).collect();
        let services: Vec<Eject<S>> = endpoints
            .into_iter()
            .map(|(svc, state)| Eject::new(svc, state))
            .collect();
        let discover = PeakEwmaDiscover::new::<Req>(
            ServiceList::new::<Req>(services),
            DEFAULT_RTT,
            DECAY,
            CompleteOnResponse::default(),
        );
        let balance = BoxService::new(Balance::new(discover));
        Self {
            upstream,
            buffer: Buffer::new(balance, queue.max(1)),
            endpoints: states,
        }
    }

    fn all_ejected(&self) -> Status {
        let names: Vec<&str> = self.endpoints.iter().map(|e| e.endpoint()).collect();
        Rejected::AllEjected.status(
            Code::Unavailable,
            format!(
                "upstream {} unavailable: circuit breaker open for every endpoint ({})",
                self.upstream,
                names.join(", ")
            ),
        )
    }
}

fn into_status(upstream: &'static str, err: BoxError) -> Status {
    match err.downcast::<Status>() {
        Ok(status) => *status,
        Err(err) => Status::unavailable(format!("upstream {upstream} unavailable: {err}")),
    }
}

impl Service<Req> for Balanced {
    type Response = Resp;
    type Error = Status;
    type Future = BoxFuture<Result<Resp, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let upstream = self.upstream;
        self.buffer
            .poll_ready(cx)
            .map_err(|e| into_status(upstream, e))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if self.endpoints.iter().all(|e| e.is_refusing()) {
            return Box::pin(std::future::ready(Err(self.all_ejected())));
        }
        let upstream = self.upstream;
        let fut = self.buffer.call(req);
        Box::pin(async move { fut.await.map_err(|e| into_status(upstream, e)) })
    }
}
