//! Deadline: every outbound call has one, and no call outlives it, retries included.
//!
//! The deadline of a call is, in order of preference:
//! 1. the `grpc-timeout` the caller put on the request (`tonic::Request::set_timeout`, or
//!    [`crate::client::with_deadline_from`], which copies what is left of an inbound
//!    request's deadline);
//! 2. the deadline of the inbound request being handled, when the server runs
//!    [`InboundDeadlineLayer`]: a handler's outbound calls then inherit what is left of
//!    its own caller's time with no code in the handler;
//! 3. the upstream's default (`STOCKMESH_UPSTREAM_TIMEOUT_MS`).
//!
//! [`DeadlineLayer`] (outermost) fixes the absolute instant once, stores it in the request
//! extensions as [`CallDeadline`] for the layers below (retry never sleeps past it), and
//! ends the whole call with DEADLINE_EXCEEDED when it passes. [`AttemptDeadlineLayer`]
//! (innermost, once per attempt) rewrites `grpc-timeout` to the time *left*, so the
//! server gives up when the caller does, and tonic's channel (which enforces the header
//! it sends) ends the attempt at the deadline — below the breaker, which therefore sees
//! the DEADLINE_EXCEEDED of a slow endpoint.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::Status;
use tower::{Layer, Service};

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The absolute deadline of an outbound call, in the request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);

/// The deadline of an inbound request, fixed on arrival by [`InboundDeadlineLayer`], in
/// the request extensions (and so in `tonic::Request::extensions()` of a handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundDeadline(pub Instant);

tokio::task_local! {
    static INBOUND: Instant;
}

/// The deadline of the inbound request whose handler is running, if the server runs
/// [`InboundDeadlineLayer`] and the caller sent a `grpc-timeout`.
pub fn current_inbound_deadline() -> Option<Instant> {
    INBOUND.try_with(|d| *d).ok()
}

/// Time left of an inbound request's deadline: its [`InboundDeadline`] when the server
/// runs [`InboundDeadlineLayer`] (exact), else its `grpc-timeout` header as received
/// (which ignores the time spent since arrival).
pub fn remaining_of<T>(inbound: &tonic::Request<T>) -> Option<Duration> {
    if let Some(InboundDeadline(at)) = inbound.extensions().get::<InboundDeadline>() {
        return Some(at.saturating_duration_since(Instant::now()));
    }
    inbound
        .metadata()
        .get(GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (H M S m u n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` value in the finest unit that fits the spec's
/// 8 digits. Truncates: the server's deadline is never later than the caller's.
pub fn format_grpc_timeout(d: Duration) -> String {
    let (value, unit) = grpc_timeout_parts(d);
    format!("{value}{}", unit as char)
}

fn grpc_timeout_parts(d: Duration) -> (u128, u8) {
    const MAX: u128 = 99_999_999;
    let candidates: [(u128, u8); 6] = [
        (d.as_nanos(), b'n'),
        (d.as_micros(), b'u'),
        (d.as_millis(), b'm'),
        (u128::from(d.as_secs()), b'S'),
        (u128::from(d.as_secs() / 60), b'M'),
        (u128::from(d.as_secs() / 3600), b'H'),
    ];
    for (value, unit) in candidates {
        if value <= MAX {
            return (value, unit);
        }
    }
    (MAX, b'H')
}

/// The header value of [`format_grpc_timeout`], written without allocating a `String`
/// (it is set on every attempt).
fn grpc_timeout_header(d: Duration) -> Option<http::HeaderValue> {
    let (mut value, unit) = grpc_timeout_parts(d);
    let mut buf = [0u8; 9];
    let mut start = buf.len() - 1;
    buf[start] = unit;
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 || start == 0 {
            break;
        }
    }
    http::HeaderValue::from_bytes(&buf[start..]).ok()
}

fn deadline_exceeded(upstream: &str, budget: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "upstream {upstream}: deadline exceeded ({} ms allowed)",
        budget.as_millis()
    ))
}

// === impl DeadlineLayer ===

/// Fixes and enforces the deadline of every call (outermost layer).
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    upstream: &'static str,
    default: Duration,
}

impl DeadlineLayer {
    pub fn new(upstream: &'static str, default: Duration) -> Self {
        Self { upstream, default }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            upstream: self.upstream,
            default: self.default,
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    upstream: &'static str,
    default: Duration,
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Error = Status>,
{
    type Response = S::Response;
    type Error = Status;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let now = Instant::now();
        let explicit = req
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|t| now + t);
        let deadline = explicit
            .or_else(current_inbound_deadline)
            .unwrap_or(now + self.default);
        let budget = deadline.saturating_duration_since(now);
        let inner = if budget.is_zero() {
            None
        } else {
            req.extensions_mut().insert(CallDeadline(deadline));
            Some(tokio::time::timeout_at(deadline, self.inner.call(req)))
        };
        DeadlineFuture {
            inner,
            upstream: self.upstream,
            budget,
        }
    }
}

pin_project! {
    /// The call, ended with DEADLINE_EXCEEDED at its deadline (or at once when the
    /// deadline had already passed).
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: Option<tokio::time::Timeout<F>>,
        upstream: &'static str,
        budget: Duration,
    }
}

impl<F, R> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<R, Status>>,
{
    type Output = Result<R, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(deadline_exceeded(this.upstream, *this.budget)));
        };
        Poll::Ready(match ready!(inner.poll(cx)) {
            Ok(res) => res,
            Err(_) => Err(deadline_exceeded(this.upstream, *this.budget)),
        })
    }
}

// === impl AttemptDeadlineLayer ===

/// Sends the time left as `grpc-timeout` (innermost layer, once per attempt), which the
/// tonic channel below enforces. A request without [`CallDeadline`] passes as is.
#[derive(Debug, Clone)]
pub struct AttemptDeadlineLayer {
    upstream: &'static str,
}

impl AttemptDeadlineLayer {
    pub fn new(upstream: &'static str) -> Self {
        Self { upstream }
    }
}

impl<S> Layer<S> for AttemptDeadlineLayer {
    type Service = AttemptDeadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AttemptDeadline {
            inner,
            upstream: self.upstream,
        }
    }
}

/// See [`AttemptDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct AttemptDeadline<S> {
    inner: S,
    upstream: &'static str,
}

impl<S, B, RB> Service<http::Request<B>> for AttemptDeadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>, Error = Status>,
{
    type Response = http::Response<RB>;
    type Error = Status;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let deadline = req.extensions().get::<CallDeadline>().map(|d| d.0);
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        let mut fut = AttemptFuture {
            inner: None,
            deadline,
            upstream: self.upstream,
            left,
        };
        if left.is_zero() {
            return fut;
        }
        if deadline.is_some()
            && let Some(v) = grpc_timeout_header(left)
        {
            req.headers_mut().insert(GRPC_TIMEOUT, v);
        }
        // No timer of our own: tonic's channel enforces the `grpc-timeout` it sends (its
        // error becomes DEADLINE_EXCEEDED in `classify::transport_status`), and one timer
        // fewer per call is measurable (BENCHMARKS.md).
        fut.inner = Some(self.inner.call(req));
        fut
    }
}

pin_project! {
    /// One attempt; see [`AttemptDeadline`].
    pub struct AttemptFuture<F> {
        #[pin]
        inner: Option<F>,
        deadline: Option<Instant>,
        upstream: &'static str,
        left: Duration,
    }
}

impl<F, RB> Future for AttemptFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, Status>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(deadline_exceeded(this.upstream, *this.left)));
        };
        let res = ready!(inner.poll(cx));
        if let (Ok(response), Some(deadline)) = (&res, *this.deadline)
            && is_cancelled(response)
            && Instant::now() + TIMER_SLACK >= deadline
        {
            // The server's timer for the same deadline fired first (tonic answers
            // CANCELLED "Timeout expired"): it is this deadline passing.
            return Poll::Ready(Err(deadline_exceeded(this.upstream, *this.left)));
        }
        Poll::Ready(res)
    }
}

/// Timers fire on millisecond ticks: a server answer this close to the deadline is the
/// deadline.
const TIMER_SLACK: Duration = Duration::from_millis(2);

fn is_cancelled<B>(response: &http::Response<B>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"1")
}

// === impl InboundDeadlineLayer ===

/// Server-side: fixes an inbound request's deadline on arrival (from its `grpc-timeout`),
/// stores it as [`InboundDeadline`] in the request extensions, and runs the handler with
/// it as the task's inbound deadline, which [`DeadlineLayer`] gives to every outbound
/// call the handler makes (tasks the handler spawns do not inherit it, on purpose:
/// background work is not bound by the request that started it).
#[derive(Debug, Clone, Copy, Default)]
pub struct InboundDeadlineLayer;

impl<S> Layer<S> for InboundDeadlineLayer {
    type Service = InboundDeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InboundDeadlineService { inner }
    }
}

/// See [`InboundDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct InboundDeadlineService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for InboundDeadlineService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        tokio::task::futures::TaskLocalFuture<Instant, S::Future>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let deadline = req
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|t| Instant::now() + t);
        match deadline {
            Some(at) => {
                req.extensions_mut().insert(InboundDeadline(at));
                futures::future::Either::Left(INBOUND.scope(at, self.inner.call(req)))
            }
            None => futures::future::Either::Right(self.inner.call(req)),
        }
    }
}

/// Runs `fut` as if it were handling an inbound request with `deadline` (what
/// [`InboundDeadlineLayer`] does), e.g. for work a handler hands to a spawned task.
pub async fn with_inbound_deadline<F: Future>(deadline: Instant, fut: F) -> F::Output {
    INBOUND.scope(deadline, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grpc_timeout_roundtrip() {
        for d in [
            Duration::from_millis(1),
            Duration::from_secs(2),
            Duration::from_secs(3600),
        ] {
            assert_eq!(parse_grpc_timeout(&format_grpc_timeout(d)), Some(d));
        }
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("+5S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(format_grpc_timeout(Duration::ZERO), "0n");
    }

    proptest! {
        #[test]
        fn format_fits_the_spec_and_never_lengthens(nanos in 0u64..u64::MAX) {
            let d = Duration::from_nanos(nanos);
            let text = format_grpc_timeout(d);
            prop_assert!(text.len() >= 2 && text.len() <= 9, "{}", text);
            let back = parse_grpc_timeout(&text).unwrap();
            prop_assert!(back <= d);
            // Truncation loses less than one unit of the chosen precision.
            let unit = match text.as_bytes()[text.len() - 1] {
                b'n' => Duration::from_nanos(1),
                b'u' => Duration::from_micros(1),
                b'm' => Duration::from_millis(1),
                b'S' => Duration::from_secs(1),
                b'M' => Duration::from_secs(60),
                _ => Duration::from_secs(3600),
            };
            prop_assert!(d - back < unit);
        }

        #[test]
        fn header_matches_format(nanos in 0u64..u64::MAX) {
            let d = Duration::from_nanos(nanos);
            let header = grpc_timeout_header(d).unwrap();
            prop_assert_eq!(header.to_str().unwrap(), format_grpc_timeout(d));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,12}") {
            let _ = parse_grpc_timeout(&s);
        }

        #[test]
        fn parse_accepts_every_valid_value(n in 0u64..100_000_000, unit in 0usize..6) {
            let u = ["H", "M", "S", "m", "u", "n"][unit];
            let d = parse_grpc_timeout(&format!("{n}{u}")).unwrap();
            let expected = match u {
                "H" => Duration::from_secs(n * 3600),
                "M" => Duration::from_secs(n * 60),
                "S" => Duration::from_secs(n),
                "m" => Duration::from_millis(n),
                "u" => Duration::from_micros(n),
                _ => Duration::from_nanos(n),
            };
            prop_assert_eq!(d, expected);
        }
    }
}
