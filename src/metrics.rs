//! Prometheus metrics of every process: the recorder, the admin endpoint that serves
//! them, and the server-side gRPC golden signals.
//!
//! Every series goes through the `metrics` facade to one process-wide
//! `metrics-exporter-prometheus` recorder ([`handle`]). A `stockmesh serve <service>`
//! process serves it on its admin port (`STOCKMESH_<SVC>_METRICS_PORT`, 9101–9104:
//! `GET /metrics`, `GET /healthz`, [`serve_admin`]); the gateway serves it on its own port,
//! and under `stockmesh up` it holds every in-process target's series (told apart by
//! their `grpc_service` / `upstream` labels).
//!
//! Server side, every gRPC server ([`crate::server`]) records per method, with the names
//! of go-grpc-prometheus (the convention most Grafana dashboards know):
//!
//! | series | type | labels |
//! |---|---|---|
//! | `grpc_server_started_total` | counter | `grpc_service`, `grpc_method` |
//! | `grpc_server_handled_total` | counter | `grpc_service`, `grpc_method`, `grpc_code` |
//! | `grpc_server_handling_seconds` | histogram | `grpc_service`, `grpc_method` |
//! | `grpc_server_in_flight` | gauge | `grpc_service` |
//!
//! Labels are bounded: a method is named only when the descriptor set (or the health and
//! reflection services) knows it; any other path is `unknown`/`unknown`. A call's code is
//! read from the trailers-only response or from the trailers when the body ends; a body
//! dropped before its trailers (the client went away) counts as `Canceled`.
//! Histogram buckets resolve 100 µs to 10 s.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pin_project_lite::pin_project;
use tokio::net::TcpListener;
use tower::{Layer, Service};

use crate::Shutdown;

/// Histogram buckets (seconds): 100 µs to 10 s.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use. When another recorder
/// was installed first (an embedding program) the handle still renders, empty, rather
/// than failing the process.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = match PrometheusBuilder::new().set_buckets(&BUCKETS) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set histogram buckets; using summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder is already installed; /metrics stays empty");
        }
        handle
    })
}

/// The metrics in the Prometheus text format.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` and `GET /healthz` over HTTP/1.1 on `listener` until `shutdown`.
pub async fn serve_admin(listener: TcpListener, shutdown: Shutdown) -> crate::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    handle();
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async { ([(header::CONTENT_TYPE, CONTENT_TYPE)], render()) }),
        )
        .route(
            "/healthz",
            get(|| async {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"status":"ok"}"#,
                )
            }),
        );
    tracing::info!(%addr, "admin endpoint listening (/metrics, /healthz)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await?;
    Ok(())
}

/// Every `/package.Service/Method` path the mesh serves, plus health and reflection.
fn known_paths() -> &'static HashSet<String> {
    static PATHS: OnceLock<HashSet<String>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let mut paths: HashSet<String> = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if let Ok(pool) = prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET) {
            for svc in pool.services() {
                for m in svc.methods() {
                    paths.insert(format!("/{}/{}", svc.full_name(), m.name()));
                }
            }
        }
        paths
    })
}

/// The bounded `(grpc_service, grpc_method)` labels of a request path.
pub fn method_labels(path: &str) -> (String, String) {
    if known_paths().contains(path)
        && let Some((service, method)) = path.trim_start_matches('/').split_once('/')
    {
        return (service.to_string(), method.to_string());
    }
    ("unknown".to_string(), "unknown".to_string())
}

/// The name of a gRPC status code, as a label (`OK`, `NotFound`…).
pub fn code_label(code: i32) -> &'static str {
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Canceled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

/// The `grpc-status` of a header or trailer map.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
}

/// Records the server-side series of every call (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcServerMetricsLayer;

impl<S> Layer<S> for GrpcServerMetricsLayer {
    type Service = GrpcServerMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerMetrics { inner }
    }
}

/// See [`GrpcServerMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcServerMetrics<S> {
    inner: S,
}

type Resp = http::Response<tonic::body::Body>;

impl<S, B> Service<http::Request<B>> for GrpcServerMetrics<S>
where
    S: Service<http::Request<B>, Response = Resp>,
{
    type Response = Resp;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = method_labels(req.uri().path());
        metrics::counter!(
            "grpc_server_started_total",
            "grpc_service" => service.clone(),
            "grpc_method" => method.clone()
        )
        .increment(1);
        metrics::gauge!("grpc_server_in_flight", "grpc_service" => service.clone()).increment(1.0);
        ServerFuture {
            inner: self.inner.call(req),
            call: Some(Call {
                service,
                method,
                start: Instant::now(),
                code: None,
            }),
        }
    }
}

/// One call being measured; recorded once, when its status is known or it is dropped.
struct Call {
    service: String,
    method: String,
    start: Instant,
    code: Option<i32>,
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = code_label(self.code.unwrap_or(tonic::Code::Cancelled as i32));
        let service = std::mem::take(&mut self.service);
        let method = std::mem::take(&mut self.method);
        metrics::gauge!("grpc_server_in_flight", "grpc_service" => service.clone()).decrement(1.0);
        metrics::histogram!(
            "grpc_server_handling_seconds",
            "grpc_service" => service.clone(),
            "grpc_method" => method.clone()
        )
        .record(self.start.elapsed().as_secs_f64());
        metrics::counter!(
            "grpc_server_handled_total",
            "grpc_service" => service,
            "grpc_method" => method,
            "grpc_code" => code
        )
        .increment(1);
    }
}

pin_project! {
    /// A call through [`GrpcServerMetrics`].
    pub struct ServerFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<Resp, E>>,
{
    type Output = Result<Resp, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match ready!(this.inner.poll(cx)) {
            Ok(resp) => resp,
            // The transport failed the call: its `Call` drops as Cancelled.
            Err(e) => return Poll::Ready(Err(e)),
        };
        let Some(mut call) = this.call.take() else {
            return Poll::Ready(Ok(resp));
        };
        if let Some(code) = grpc_status(resp.headers()) {
            // Trailers-only (every error a handler returns): done now.
            call.code = Some(code);
            return Poll::Ready(Ok(resp));
        }
        Poll::Ready(Ok(resp.map(|body| {
            tonic::body::Body::new(Measured {
                inner: body,
                call: Some(call),
            })
        })))
    }
}

pin_project! {
    /// A response body that records its call when the trailers pass or it is dropped.
    struct Measured {
        #[pin]
        inner: tonic::body::Body,
        call: Option<Call>,
    }
}

impl http_body::Body for Measured {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status)
                    && let Some(mut call) = this.call.take()
                {
                    call.code = Some(code);
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: not a complete gRPC response.
                if let Some(mut call) = this.call.take() {
                    call.code = Some(tonic::Code::Unknown as i32);
                }
            }
            _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            method_labels("/stockmesh.products.v1.ProductService/GetProduct"),
            (
                "stockmesh.products.v1.ProductService".into(),
                "GetProduct".into()
            )
        );
        assert_eq!(
            method_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health".into(), "Check".into())
        );
        for path in [
            "/stockmesh.products.v1.ProductService/NoSuchMethod",
            "/x.Y/Z",
            "/",
            "",
        ] {
            assert_eq!(
                method_labels(path),
                ("unknown".into(), "unknown".into()),
                "{path}"
            );
        }
        assert_eq!(code_label(0), "OK");
        assert_eq!(code_label(5), "NotFound");
        assert_eq!(code_label(99), "Unknown");
    }
}
