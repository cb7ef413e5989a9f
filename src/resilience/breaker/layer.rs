//! [`BreakerLayer`]: the fail-fast face of a breaker in front of a single-endpoint upstream
//! (a refused call ends at once with UNAVAILABLE naming the upstream), and [`Recorded`],
//! the future that reports a call's outcome to its breaker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tonic::Status;
use tower::{Layer, Service};

use super::{BreakerState, Permit};
use crate::resilience::classify::classify;

/// Fail-fast breaker in front of one endpoint.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    state: Arc<BreakerState>,
}

impl BreakerLayer {
    pub fn new(state: Arc<BreakerState>) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            state: self.state.clone(),
        }
    }
}

/// See [`BreakerLayer`].
#[derive(Debug, Clone)]
pub struct Breaker<S> {
    inner: S,
    state: Arc<BreakerState>,
}

impl<S, B, RB> Service<http::Request<B>> for Breaker<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>, Error = Status>,
{
    type Response = http::Response<RB>;
    type Error = Status;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.state.try_acquire() {
            Err(_) => {
                crate::telemetry::event(
                    "circuit breaker open: call refused",
                    &[("endpoint", self.state.endpoint().to_string())],
                );
                Recorded::refused(self.state.rejection())
            }
            Ok(permit) => Recorded::new(self.inner.call(req), permit),
        }
    }
}

pin_project! {
    /// A call admitted by a breaker, reporting its outcome when it ends (or refused).
    pub struct Recorded<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<Permit>,
        refusal: Option<Status>,
    }
}

impl<F> Recorded<F> {
    pub fn new(inner: F, permit: Permit) -> Self {
        Self {
            inner: Some(inner),
            permit: Some(permit),
            refusal: None,
        }
    }

    pub fn refused(status: Status) -> Self {
        Self {
            inner: None,
            permit: None,
            refusal: Some(status),
        }
    }
}

impl<F, RB> Future for Recorded<F>
where
    F: Future<Output = Result<http::Response<RB>, Status>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(this
                .refusal
                .take()
                .unwrap_or_else(|| Status::unavailable("circuit breaker open"))));
        };
        let res = ready!(inner.poll(cx));
        if let Some(permit) = this.permit.take() {
            let outcome = classify(&res);
            crate::resilience::count_attempt(
                permit.state().route(),
                permit.state().endpoint(),
                outcome,
            );
            permit.record(outcome);
        }
        Poll::Ready(res)
    }
}
