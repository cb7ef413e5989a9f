//! Retry: try a failed call again, when that is both useful and safe, without ever
//! making an outage worse.
//!
//! A call is tried again only when all of these hold:
//! * the failure is retryable ([`classify`](super::classify)): UNAVAILABLE or a transport
//!   error — never a business answer, never DEADLINE_EXCEEDED, never a local refusal
//!   (open breaker, shed);
//! * the method is safe to repeat ([`idempotency`](super::idempotency)), or the request
//!   provably never left (the connection could not be opened);
//! * fewer than `STOCKMESH_RETRY_MAX_ATTEMPTS` attempts were made;
//! * the retry budget allows it: retries may add at most `STOCKMESH_RETRY_BUDGET_PERCENT`
//!   of recent calls (plus `STOCKMESH_RETRY_BUDGET_MIN_PER_SEC`), tower's `TpsBudget`, so
//!   that during an outage retries cannot multiply the load on a struggling upstream;
//! * the backoff wait still ends before the call's deadline ([`super::deadline`]).
//!
//! Waits follow an exponential backoff with jitter from the `backoff` crate: the first is
//! between `STOCKMESH_RETRY_BACKOFF_MS` and twice that, each later one doubles, and none
//! exceeds `STOCKMESH_RETRY_BACKOFF_MAX_MS`. (`backoff` is unmaintained, RUSTSEC-2025-0012;
//! it is used in this module only, behind [`RetryBackoff`], so it is one file to replace.)
//!
//! To send a request twice its body must be kept: unary request messages (a few hundred
//! bytes here) are buffered whole, up to `STOCKMESH_RETRY_BUFFER_BYTES`; a larger body, a
//! streaming request, or a path the method table does not know is sent once as is — a
//! body found to be larger while it is read stops being buffered at the limit and the
//! rest streams through, so no body is ever held beyond that limit.
//! Metrics: `stockmesh_upstream_retries_total`, `stockmesh_upstream_retry_budget_exhausted_total`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backoff::backoff::Backoff as _;
use bytes::Bytes;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::Status;
use tonic::body::Body;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceExt};

use super::Route;
use super::args::{ResilienceArgs, SettingsError, check_range};
use super::balance::Avoid;
use super::classify::{Outcome, classify, failed_endpoint};
use super::idempotency::{MethodInfo, MethodTable};

mod body;
mod head;

use body::{Buffered, buffer, read_now, replayable};
use head::Head;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

// === impl RetrySettings ===

/// Validated retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// The first wait is between this and twice this.
    pub backoff: Duration,
    /// No wait is longer.
    pub max_backoff: Duration,
    /// Retries allowed as a fraction of recent calls.
    pub budget_ratio: f32,
    /// Retries per second allowed regardless.
    pub budget_min_per_sec: u32,
    /// Largest buffered request body.
    pub buffer_bytes: usize,
}

/// How long a deposit counts towards the budget.
const BUDGET_TTL: Duration = Duration::from_secs(10);

impl RetrySettings {
    pub fn try_new(args: &ResilienceArgs) -> Result<Self, SettingsError> {
        let max_attempts = check_range(
            "STOCKMESH_RETRY_MAX_ATTEMPTS",
            args.retry_max_attempts.into(),
            1,
            100,
        )?;
        let backoff = check_range(
            "STOCKMESH_RETRY_BACKOFF_MS",
            args.retry_backoff_ms,
            1,
            60_000,
        )?;
        let max_backoff = check_range(
            "STOCKMESH_RETRY_BACKOFF_MAX_MS",
            args.retry_backoff_max_ms,
            1,
            600_000,
        )?;
        // The jittered first wait reaches twice the base; the cap must leave room for it.
        if max_backoff < 2 * backoff {
            return Err(SettingsError::BelowOther {
                name: "STOCKMESH_RETRY_BACKOFF_MAX_MS",
                value: max_backoff,
                other: "2 × STOCKMESH_RETRY_BACKOFF_MS",
                other_value: 2 * backoff,
            });
        }
        let percent = check_range(
            "STOCKMESH_RETRY_BUDGET_PERCENT",
            args.retry_budget_percent.into(),
            0,
            1000,
        )?;
        let min_per_sec = check_range(
            "STOCKMESH_RETRY_BUDGET_MIN_PER_SEC",
            args.retry_budget_min_per_sec.into(),
            0,
            1_000_000,
        )?;
        let buffer_bytes = check_range(
            "STOCKMESH_RETRY_BUFFER_BYTES",
            args.retry_buffer_bytes as u64,
            0,
            64 << 20,
        )?;
        Ok(Self {
            max_attempts: max_attempts as u32,
            backoff: Duration::from_millis(backoff),
            max_backoff: Duration::from_millis(max_backoff),
            budget_ratio: percent as f32 / 100.0,
            budget_min_per_sec: min_per_sec as u32,
            buffer_bytes: buffer_bytes as usize,
        })
    }
}

// === impl RetryBackoff ===

/// The waits between attempts of one call (the only user of the `backoff` crate).
#[derive(Debug)]
pub struct RetryBackoff {
    inner: backoff::ExponentialBackoff,
    max: Duration,
}

impl RetryBackoff {
    /// Waits for `settings`: the jitter is ±1/3 around 1.5 × base, so the first wait lies
    /// in `[base, 2 × base]`; each later centre doubles, and every wait is capped.
    pub fn new(settings: &RetrySettings) -> Self {
        let inner = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(settings.backoff * 3 / 2)
            .with_randomization_factor(1.0 / 3.0)
            .with_multiplier(2.0)
            .with_max_interval(settings.max_backoff)
            .with_max_elapsed_time(None)
            .build();
        Self {
            inner,
            max: settings.max_backoff,
        }
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        self.inner.next_backoff().unwrap_or(self.max).min(self.max)
    }
}

// === impl RetryLayer ===

struct Shared {
    route: Route,
    settings: RetrySettings,
    budget: TpsBudget,
    methods: &'static MethodTable,
}

/// Retries failed calls; see the module docs.
#[derive(Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("route", &self.shared.route)
            .field("settings", &self.shared.settings)
            .field("budget", &self.shared.budget)
            .finish()
    }
}

impl RetryLayer {
    /// One budget per layer, i.e. per upstream.
    pub fn new(route: Route, settings: RetrySettings) -> Self {
        let budget = TpsBudget::new(
            BUDGET_TTL,
            settings.budget_min_per_sec,
            settings.budget_ratio,
        );
        Self {
            shared: Arc::new(Shared {
                route,
                settings,
                budget,
                methods: MethodTable::global(),
            }),
        }
    }
}

impl<S: Clone> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            ctx: Arc::new(Ctx {
                shared: self.shared.clone(),
                spare: inner.clone(),
            }),
            inner,
        }
    }
}

/// What every clone of a [`Retry`] and every call in flight share: one `Arc`, so that
/// cloning the service and starting a call each touch one reference count.
struct Ctx<S> {
    shared: Arc<Shared>,
    /// Cloned for each retry; never called itself (so the common case, one attempt, does
    /// not pay for a clone of the stack below).
    spare: S,
}

/// See [`RetryLayer`].
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    ctx: Arc<Ctx<S>>,
}

impl<S> std::fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("route", &self.ctx.shared.route)
            .finish()
    }
}

type Req = http::Request<Body>;
type Resp = http::Response<Body>;

impl<S> Service<Req> for Retry<S>
where
    S: Service<Req, Response = Resp, Error = Status> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = Status;
    type Future = RetryFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.ctx.shared;
        let method = match shared.methods.get(req.uri().path()) {
            Some(m) if m.unary_request && shared.settings.max_attempts > 1 => m,
            _ => return RetryFuture::once(self.inner.call(req)),
        };
        shared.budget.deposit();
        let (parts, mut body) = req.into_parts();
        // A unary request body (tonic encodes the message up front) is normally complete
        // at once: read it here, so that the first attempt goes out now, from this
        // readied service. Otherwise buffer it in the future, with a clone.
        let bytes = match read_now(&mut body) {
            Some(Ok(bytes)) => bytes,
            Some(Err(status)) => return RetryFuture::failed(status),
            None => {
                let svc = self.ctx.spare.clone();
                let req = http::Request::from_parts(parts, body);
                return RetryFuture::boxed(Box::pin(buffer_then_attempts(
                    self.ctx.clone(),
                    method,
                    svc,
                    req,
                )));
            }
        };
        if bytes.len() > shared.settings.buffer_bytes {
            return RetryFuture::once(
                self.inner
                    .call(http::Request::from_parts(parts, replayable(bytes))),
            );
        }
        let head = Head::of(&parts);
        let first = self
            .inner
            .call(http::Request::from_parts(parts, replayable(bytes.clone())));
        RetryFuture::first(
            first,
            Attempts {
                ctx: self.ctx.clone(),
                method,
                head,
                body: bytes,
                attempt: 1,
                backoff: None,
                avoid: Vec::new(),
            },
        )
    }
}

/// What retries need, kept while the first attempt is in flight.
struct Attempts<S> {
    ctx: Arc<Ctx<S>>,
    method: &'static MethodInfo,
    head: Head,
    body: Bytes,
    attempt: u32,
    backoff: Option<RetryBackoff>,
    /// Endpoints this call failed on: the next attempt prefers another.
    avoid: Vec<&'static str>,
}

/// Which attempt of its call a request is (2 and up; the first carries none), in the
/// request extensions, for the attempt's trace span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptNumber(pub u32);

impl<S> Attempts<S> {
    /// The request of the next attempt.
    fn request(&self) -> Req {
        let mut req = self.head.request(self.body.clone());
        req.extensions_mut().insert(AttemptNumber(self.attempt));
        if !self.avoid.is_empty() {
            req.extensions_mut().insert(Avoid(self.avoid.clone()));
        }
        req
    }

    /// The wait before another attempt, or `None` to return `result` as it is.
    fn next_wait(&mut self, result: &Result<Resp, Status>) -> Option<Duration> {
        let shared = &self.ctx.shared;
        let Outcome::Failure(failure) = classify(result) else {
            return None;
        };
        if !failure.retryable() || self.attempt >= shared.settings.max_attempts {
            return None;
        }
        if failure.may_have_been_processed() && !self.method.replay.allows(&self.body) {
            return None;
        }
        let wait = self
            .backoff
            .get_or_insert_with(|| RetryBackoff::new(&shared.settings))
            .next_wait();
        if self
            .head
            .deadline
            .is_some_and(|d| Instant::now() + wait >= d.0)
        {
            return None;
        }
        if !shared.budget.withdraw() {
            metrics::counter!(
                "stockmesh_upstream_retry_budget_exhausted_total",
                "caller" => shared.route.caller,
                "upstream" => shared.route.upstream
            )
            .increment(1);
            tracing::debug!(upstream = shared.route.upstream, "retry budget exhausted");
            return None;
        }
        if let Some(endpoint) = failed_endpoint(result)
            && !self.avoid.contains(&endpoint)
        {
            self.avoid.push(endpoint);
        }
        tracing::debug!(
            upstream = shared.route.upstream,
            path = self.head.uri.path(),
            attempt = self.attempt + 1,
            ?failure,
            ?wait,
            avoid = ?self.avoid,
            "retrying"
        );
        Some(wait)
    }
}

/// Retries after the first attempt failed with `wait` to go.
async fn retry<S>(mut attempts: Attempts<S>, mut wait: Duration) -> Result<Resp, Status>
where
    S: Service<Req, Response = Resp, Error = Status> + Clone,
{
    loop {
        tokio::time::sleep(wait).await;
        attempts.attempt += 1;
        metrics::counter!(
            "stockmesh_upstream_retries_total",
            "caller" => attempts.ctx.shared.route.caller,
            "upstream" => attempts.ctx.shared.route.upstream
        )
        .increment(1);
        let mut svc = attempts.ctx.spare.clone();
        svc.ready().await?;
        let result = svc.call(attempts.request()).await;
        match attempts.next_wait(&result) {
            Some(next) => wait = next,
            None => return result,
        }
    }
}

/// The slow path: buffer a body that was not complete at once, then attempt.
async fn buffer_then_attempts<S>(
    ctx: Arc<Ctx<S>>,
    method: &'static MethodInfo,
    mut svc: S,
    req: Req,
) -> Result<Resp, Status>
where
    S: Service<Req, Response = Resp, Error = Status> + Clone,
{
    let (parts, body) = req.into_parts();
    let body = match buffer(body, ctx.shared.settings.buffer_bytes).await? {
        Buffered::Whole(bytes) => bytes,
        // Past the replay limit: sent once, the rest streamed through, never held.
        Buffered::Partial(body) => {
            svc.ready().await?;
            return svc.call(http::Request::from_parts(parts, body)).await;
        }
    };
    svc.ready().await?;
    let head = Head::of(&parts);
    let result = svc
        .call(http::Request::from_parts(parts, replayable(body.clone())))
        .await;
    let mut attempts = Attempts {
        ctx,
        method,
        head,
        body,
        attempt: 1,
        backoff: None,
        avoid: Vec::new(),
    };
    match attempts.next_wait(&result) {
        Some(wait) => retry(attempts, wait).await,
        None => result,
    }
}

pin_project! {
    /// A call through [`Retry`]: its first attempt, then (only when needed) the retries.
    pub struct RetryFuture<S>
    where
        S: Service<Req>,
    {
        #[pin]
        first: Option<S::Future>,
        attempts: Option<Attempts<S>>,
        rest: Option<BoxFuture<Result<Resp, Status>>>,
        failed: Option<Status>,
    }
}

impl<S> RetryFuture<S>
where
    S: Service<Req, Response = Resp, Error = Status>,
{
    fn once(fut: S::Future) -> Self {
        Self {
            first: Some(fut),
            attempts: None,
            rest: None,
            failed: None,
        }
    }

    fn first(fut: S::Future, attempts: Attempts<S>) -> Self {
        Self {
            first: Some(fut),
            attempts: Some(attempts),
            rest: None,
            failed: None,
        }
    }

    fn boxed(fut: BoxFuture<Result<Resp, Status>>) -> Self {
        Self {
            first: None,
            attempts: None,
            rest: Some(fut),
            failed: None,
        }
    }

    fn failed(status: Status) -> Self {
        Self {
            first: None,
            attempts: None,
            rest: None,
            failed: Some(status),
        }
    }
}

impl<S> Future for RetryFuture<S>
where
    S: Service<Req, Response = Resp, Error = Status> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Output = Result<Resp, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(rest) = this.rest.as_mut() {
            return rest.as_mut().poll(cx);
        }
        let Some(first) = this.first.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(this.failed.take().unwrap_or_else(|| {
                Status::internal("retry future polled after completion")
            })));
        };
        let result = ready!(first.poll(cx));
        this.first.set(None);
        let Some(mut attempts) = this.attempts.take() else {
            return Poll::Ready(result);
        };
        let Some(wait) = attempts.next_wait(&result) else {
            return Poll::Ready(result);
        };
        drop(result);
        let mut rest: BoxFuture<Result<Resp, Status>> = Box::pin(retry(attempts, wait));
        let poll = rest.as_mut().poll(cx);
        *this.rest = Some(rest);
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(base_ms: u64, max_ms: u64) -> RetrySettings {
        RetrySettings {
            max_attempts: 3,
            backoff: Duration::from_millis(base_ms),
            max_backoff: Duration::from_millis(max_ms),
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
            buffer_bytes: 1024,
        }
    }

    #[test]
    fn defaults() {
        let s = RetrySettings::try_new(&ResilienceArgs::default()).unwrap();
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.backoff, Duration::from_millis(25));
        assert_eq!(s.max_backoff, Duration::from_secs(1));
        assert!((s.budget_ratio - 0.2).abs() < f32::EPSILON);
    }

    #[test]
    fn budget_bounds_retries() {
        // 20 % of 100 deposits = 20 retries, plus no floor.
        let budget = TpsBudget::new(BUDGET_TTL, 0, 0.2);
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 20);
    }

    proptest! {
        #[test]
        fn waits_stay_within_their_bounds(base_ms in 1u64..200, cap_factor in 2u64..100, n in 1usize..20) {
            let s = settings(base_ms, base_ms * cap_factor);
            let base = s.backoff.as_secs_f64();
            let cap = s.max_backoff.as_secs_f64();
            let slack = 1e-6;
            let mut b = RetryBackoff::new(&s);
            for i in 0..n {
                let wait = b.next_wait().as_secs_f64();
                // Centre of the i-th wait: 1.5 · base · 2^i, capped.
                let centre = (1.5 * base * 2f64.powi(i as i32)).min(cap);
                prop_assert!(wait <= cap + slack, "wait {} above cap {}", wait, cap);
                prop_assert!(wait >= centre * 2.0 / 3.0 - slack, "wait {} below {}", wait, centre * 2.0 / 3.0);
                prop_assert!(wait <= centre * 4.0 / 3.0 + slack);
                if i == 0 {
                    prop_assert!(wait >= base - slack && wait <= 2.0 * base + slack);
                }
            }
        }
    }
}
