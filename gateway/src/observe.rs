//! The outermost layer: request ids, one access-log line per request, and Prometheus
//! metrics.
//!
//! `x-request-id` is taken from the request when it is a sane token, generated otherwise,
//! written into the request (so transcoded and proxied calls carry it upstream) and into
//! the response. The log line and the metrics are emitted when the response body is
//! finished or dropped, so streaming calls are measured end to end and a gRPC status
//! sent in trailers is the one reported.
//!
//! The route label is what [`crate::app`] matched (`GET /v1/products/{id}`, a known gRPC
//! method path, or `unmatched`), never the raw path, so the label set stays bounded.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Frame, SizeHint};
use tower::{Layer, Service};

pub const REQUEST_ID: &str = "x-request-id";

/// The matched route, attached to responses by the dispatcher.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

/// Which protocol a request speaks, attached to responses by the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
    GrpcWeb,
    /// The Connect protocol ([`crate::connect`]), unary and streaming.
    Connect,
    /// A REST server stream as Server-Sent Events ([`crate::streaming`]).
    Sse,
    /// A REST server stream as newline-delimited JSON.
    Ndjson,
}

impl Protocol {
    pub fn of(headers: &http::HeaderMap) -> Self {
        let ct = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.starts_with("application/grpc-web") {
            Protocol::GrpcWeb
        } else if ct.starts_with("application/grpc") {
            Protocol::Grpc
        } else {
            Protocol::Rest
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Connect => "connect",
            Protocol::Sse => "sse",
            Protocol::Ndjson => "ndjson",
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for Observe<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        let request_id = req
            .headers()
            .get(REQUEST_ID)
            .filter(|v| acceptable_id(v))
            .cloned()
            .unwrap_or_else(|| {
                HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                    .unwrap_or(HeaderValue::from_static("-"))
            });
        req.headers_mut().insert(REQUEST_ID, request_id.clone());
        let slot = StatusSlot::new();
        req.extensions_mut().insert(slot.clone());
        let method = req.method().clone();
        // A trace starts here (or continues the caller's `traceparent`) when tracing is on;
        // proxied and transcoded calls become its children.
        let span = stockmesh::telemetry::enabled().then(|| {
            let span = tracing::info_span!(
                "gateway.request",
                otel.name = %format!("{method} request"),
                otel.kind = "server",
                http.request.method = %method,
                http.response.status_code = tracing::field::Empty,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            stockmesh::telemetry::continue_from(&span, req.headers());
            span
        });
        let trace_ids = span.as_ref().and_then(|s| {
            let _entered = s.enter();
            stockmesh::telemetry::current_ids()
        });
        let fut = match &span {
            Some(span) => span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        let work = async move {
            let mut resp = fut.await?;
            resp.headers_mut().insert(REQUEST_ID, request_id.clone());
            let route = resp
                .extensions()
                .get::<RouteLabel>()
                .map_or_else(|| "unmatched".to_string(), |r| r.0.clone());
            let protocol = resp
                .extensions()
                .get::<Protocol>()
                .copied()
                .unwrap_or(Protocol::Rest);
            let span = tracing::Span::current();
            // REST routes already read "GET /v1/…"; gRPC ones are the method path.
            stockmesh::telemetry::rename(&span, route.clone());
            span.record("http.response.status_code", resp.status().as_u16());
            let record = Record {
                start,
                method,
                route,
                protocol,
                http_status: resp.status().as_u16(),
                grpc_status: slot,
                request_id,
                trace_ids,
            };
            Ok(resp.map(|body| {
                Body::new(Observed {
                    inner: body,
                    record,
                })
            }))
        };
        match span {
            Some(span) => Box::pin(tracing::Instrument::instrument(work, span)),
            None => Box::pin(work),
        }
    }
}

/// Request ids are echoed into logs and headers: only short visible ASCII is taken over.
fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// What is logged and counted once the response is over.
struct Record {
    start: Instant,
    method: http::Method,
    route: String,
    protocol: Protocol,
    http_status: u16,
    grpc_status: StatusSlot,
    request_id: HeaderValue,
    /// The request's trace and server span ids, when tracing is on (join the log line to
    /// the trace).
    trace_ids: Option<(String, String)>,
}

impl Drop for Record {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let status = match (self.protocol, self.grpc_status.get()) {
            (Protocol::Rest, _) => self.http_status.to_string(),
            (_, Some(code)) => format!("{:?}", tonic::Code::from_i32(code)),
            // The stream ended without trailers (client went away, reset).
            (_, None) => "incomplete".to_string(),
        };
        tracing::info!(
            target: "stockmesh_gateway::access",
            method = %self.method,
            route = %self.route,
            protocol = self.protocol.as_str(),
            status = %status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            request_id = %String::from_utf8_lossy(self.request_id.as_bytes()),
            trace_id = self.trace_ids.as_ref().map_or("", |(t, _)| t.as_str()),
            span_id = self.trace_ids.as_ref().map_or("", |(_, s)| s.as_str()),
            "request"
        );
        let labels = [
            ("protocol", self.protocol.as_str().to_string()),
            ("route", std::mem::take(&mut self.route)),
            ("status", status),
        ];
        metrics::counter!("gateway_requests_total", &labels).increment(1);
        metrics::histogram!("gateway_request_duration_seconds", &labels)
            .record(elapsed.as_secs_f64());
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports when it is finished or dropped.
    struct Observed<B> {
        #[pin]
        inner: B,
        record: Record,
    }
}

impl<B> http_body::Body for Observed<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where the gRPC handler leaves the final `grpc-status` of a call for the access log.
/// gRPC-web encodes trailers into the body, so the status is caught before that
/// translation, on the plain gRPC response.
#[derive(Debug, Clone)]
pub struct StatusSlot(Arc<AtomicI32>);

impl StatusSlot {
    const UNSET: i32 = -1;

    pub(crate) fn new() -> Self {
        Self(Arc::new(AtomicI32::new(Self::UNSET)))
    }

    /// Records the call's final gRPC code (the last one set wins).
    pub fn set(&self, code: i32) {
        self.0.store(code, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<i32> {
        let v = self.0.load(Ordering::Relaxed);
        (v != Self::UNSET).then_some(v)
    }

    /// Watches a gRPC response: a trailers-only status now, trailers when they pass.
    pub fn watch(&self, resp: Response<tonic::body::Body>) -> Response<tonic::body::Body> {
        if let Some(code) = stockmesh::metrics::grpc_status(resp.headers()) {
            self.set(code);
            return resp;
        }
        let slot = self.clone();
        resp.map(|body| tonic::body::Body::new(WatchTrailers { inner: body, slot }))
    }
}

pin_project_lite::pin_project! {
    struct WatchTrailers {
        #[pin]
        inner: tonic::body::Body,
        slot: StatusSlot,
    }
}

impl http_body::Body for WatchTrailers {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(code) = frame
                .trailers_ref()
                .and_then(stockmesh::metrics::grpc_status)
        {
            this.slot.set(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
