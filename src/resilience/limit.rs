//! Concurrency limit (bulkhead) with load shedding: at most `STOCKMESH_UPSTREAM_CONCURRENCY`
//! calls to one upstream are in flight at once, and a call beyond that fails at once.
//!
//! Why shed instead of queue: a queue in front of a slow upstream only turns its slowness
//! into everyone's latency and memory, and the caller's deadline would expire in the
//! queue anyway. Failing at once keeps one sick upstream from tying up every task of the
//! calling service (the bulkhead), and tells the caller right away.
//!
//! Why RESOURCE_EXHAUSTED (not UNAVAILABLE): the limit is this process's own, not a sign
//! that the upstream is down. UNAVAILABLE would be retried (adding load exactly when there
//! is too much) and counted by the breaker against a healthy upstream. The status carries
//! [`Rejected::Shed`] so both layers treat it as neutral, and the message names the
//! upstream. Shed calls are counted in `stockmesh_upstream_shed_total`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::Route;
use super::classify::Rejected;

/// Limits in-flight calls to one upstream; see the module docs.
#[derive(Debug, Clone)]
pub struct LimitLayer {
    route: Route,
    permits: Arc<Semaphore>,
    max: usize,
}

impl LimitLayer {
    /// `max` is validated by [`super::Settings::try_new`] (at least 1).
    pub fn new(route: Route, max: usize) -> Self {
        Self {
            route,
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            max,
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limit {
            inner,
            route: self.route,
            permits: self.permits.clone(),
            max: self.max,
        }
    }
}

/// See [`LimitLayer`].
#[derive(Debug, Clone)]
pub struct Limit<S> {
    inner: S,
    route: Route,
    permits: Arc<Semaphore>,
    max: usize,
}

impl<S, B> Service<http::Request<B>> for Limit<S>
where
    S: Service<http::Request<B>, Error = Status>,
{
    type Response = S::Response;
    type Error = Status;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::counter!(
                "stockmesh_upstream_shed_total",
                "caller" => self.route.caller,
                "upstream" => self.route.upstream
            )
            .increment(1);
            let status = Rejected::Shed.status(
                Code::ResourceExhausted,
                format!(
                    "upstream {}: {} calls already in flight, call shed",
                    self.route.upstream, self.max
                ),
            );
            return LimitFuture {
                inner: None,
                _permit: None,
                shed: Some(status),
            };
        };
        LimitFuture {
            inner: Some(self.inner.call(req)),
            _permit: Some(permit),
            shed: None,
        }
    }
}

pin_project! {
    /// The call, holding its place in the bulkhead until it ends.
    pub struct LimitFuture<F> {
        #[pin]
        inner: Option<F>,
        _permit: Option<OwnedSemaphorePermit>,
        shed: Option<Status>,
    }
}

impl<F, R> Future for LimitFuture<F>
where
    F: Future<Output = Result<R, Status>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx),
            None => Poll::Ready(Err(this
                .shed
                .take()
                .unwrap_or_else(|| Status::resource_exhausted("call shed")))),
        }
    }
}
