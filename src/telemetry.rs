//! Logs and traces.
//!
//! Logs: human-readable lines by default, one JSON object per line with
//! `STOCKMESH_LOG_FORMAT=json` (for log shippers). The filter comes from `RUST_LOG`
//! (default `info`).
//!
//! Traces (OpenTelemetry): when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans go over
//! OTLP/gRPC to that collector, configured by the standard variables
//! (`OTEL_SERVICE_NAME`, default `stockmesh-<target>`; `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`; `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_BSP_*` for batching).
//! Unset, nothing is exported and no span is made on the request path ([`enabled`]).
//! The spans themselves are made where the work is: inbound RPCs ([`crate::server`]),
//! outbound attempts ([`crate::client`]), the gateway's requests. W3C `traceparent` /
//! `tracestate` carry the context between processes ([`extract`], [`inject`]). With
//! tracing on, JSON log lines carry `trace_id` and `span_id` of the span they were
//! written in.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` was set at start-up).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the global subscriber (logs, and traces when configured). Safe to call more
/// than once (tests do): later calls are no-ops. Call it within a tokio runtime: the
/// OTLP exporter's channel lives on it.
pub fn init(format: LogFormat, service_name: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,h2=warn,hyper=warn,tower=warn,opentelemetry=warn",
        )
    });
    // Spans are exported whatever RUST_LOG says about logs: the trace layer has its own
    // filter (this crate's spans and events at INFO; never the exporter's own logs, which
    // would feed back into it).
    let otel = tracer(service_name).map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_error_records_to_exceptions(true)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing::Level::INFO)
                    .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF)
                    .with_target(
                        "opentelemetry_sdk",
                        tracing::level_filters::LevelFilter::OFF,
                    )
                    .with_target(
                        "opentelemetry-otlp",
                        tracing::level_filters::LevelFilter::OFF,
                    )
                    .with_target(
                        "opentelemetry_otlp",
                        tracing::level_filters::LevelFilter::OFF,
                    )
                    .with_target("h2", tracing::level_filters::LevelFilter::OFF)
                    .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
                    .with_target("tower", tracing::level_filters::LevelFilter::OFF)
                    .with_target("sqlx", tracing::level_filters::LevelFilter::OFF),
            )
    });
    let exporting = otel.is_some();
    let registry = tracing_subscriber::registry().with(otel);
    let installed = match format {
        LogFormat::Human => registry
            .with(fmt::layer().with_target(true).with_filter(filter))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    // The span's fields carry trace_id / span_id (see `record_ids`).
                    .with_current_span(exporting)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
    };
    if installed.is_ok() && exporting {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        ENABLED.store(true, Ordering::Relaxed);
        tracing::info!(
            service = service_name,
            endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
            "exporting traces over OTLP"
        );
    }
}

/// The OTLP tracer, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
fn tracer(service_name: &str) -> Option<opentelemetry_sdk::trace::Tracer> {
    if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").map_or(true, |v| v.trim().is_empty()) {
        return None;
    }
    if tokio::runtime::Handle::try_current().is_err() {
        eprintln!("tracing not started: no async runtime yet");
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OTLP exporter not started: {e}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name(service_name.to_string());
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("stockmesh");
    let _ = PROVIDER.set(provider);
    Some(tracer)
}

/// Sends the spans still buffered (call before the process exits).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("flushing traces: {e}");
    }
}

/// Makes `span` continue the trace whose context `headers` carry (`traceparent`), and
/// records its ids as the span's `trace_id` / `span_id` fields (declared empty by the
/// caller) for the logs. Without a `traceparent` the span starts a new trace.
pub fn continue_from(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderCarrier(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// Records `span`'s OpenTelemetry ids as its `trace_id` and `span_id` fields.
pub fn record_ids(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// Renames `span` (e.g. once a request's route is known). Recording `otel.name` does not
/// do it once the span's context has been taken, which continuing a trace does.
pub fn rename(span: &tracing::Span, name: String) {
    if enabled() {
        span.context().span().update_name(name);
    }
}

/// Writes `span`'s context into `headers` (`traceparent`, `tracestate`).
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderCarrierMut(headers));
    });
}

/// The current span's trace id and span id (for the access log), when tracing is on.
pub fn current_ids() -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderCarrierMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderCarrierMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// A span for one step of a larger operation (a saga step), named `name`, child of the
/// current span; a disabled span when tracing is off, so steps cost nothing then.
pub fn step(name: &'static str) -> tracing::Span {
    if enabled() {
        tracing::info_span!("step", otel.name = name)
    } else {
        tracing::Span::none()
    }
}

/// Adds an event to the current span (e.g. "circuit breaker open"), when tracing is on.
pub fn event(name: &'static str, attributes: &[(&'static str, String)]) {
    if enabled() {
        tracing::Span::current().add_event(
            name,
            attributes
                .iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(*k, v.clone()))
                .collect(),
        );
    }
}

/// Sets a span's OpenTelemetry status from a gRPC code (errors are server faults and
/// unavailability, not business answers).
fn set_status(span: &tracing::Span, code: i32) {
    span.record("rpc.grpc.status_code", code);
    if matches!(
        tonic::Code::from_i32(code),
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.set_status(opentelemetry::trace::Status::error(
            crate::metrics::code_label(code),
        ));
    }
}

pin_project_lite::pin_project! {
    /// A call's future, in its span when tracing is on.
    #[project = TracedProj]
    pub enum Traced<F> {
        Plain { #[pin] inner: F },
        Spanned { #[pin] inner: tracing::instrument::Instrumented<F>, span: tracing::Span },
    }
}

impl<F, B, E> std::future::Future for Traced<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            TracedProj::Plain { inner } => inner.poll(cx),
            TracedProj::Spanned { inner, span } => {
                let out = std::task::ready!(inner.poll(cx));
                if let Ok(resp) = &out {
                    // Trailers-only (every error a handler returns); a success's OK is in
                    // the trailers.
                    set_status(
                        span,
                        crate::metrics::grpc_status(resp.headers()).unwrap_or(0),
                    );
                }
                std::task::Poll::Ready(out)
            }
        }
    }
}

/// One span per inbound gRPC call (`otel.kind = server`), continuing the caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSpanLayer;

impl<S> tower::Layer<S> for ServerSpanLayer {
    type Service = ServerSpan<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerSpan { inner }
    }
}

/// See [`ServerSpanLayer`].
#[derive(Debug, Clone)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for ServerSpan<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Traced<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !enabled() {
            return Traced::Plain {
                inner: self.inner.call(req),
            };
        }
        let (service, method) = crate::metrics::method_labels(req.uri().path());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = format!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        continue_from(&span, req.headers());
        let inner = tracing::Instrument::instrument(self.inner.call(req), span.clone());
        Traced::Spanned { inner, span }
    }
}

/// One span per outbound attempt (`otel.kind = client`), a child of the caller's span,
/// whose context goes out in `traceparent`. A retried call is several attempt spans
/// (`stockmesh.attempt` 1, 2, …).
pub fn attempt_span<B>(
    req: &mut http::Request<B>,
    upstream: &'static str,
    endpoint: &'static str,
) -> Option<tracing::Span> {
    if !enabled() {
        return None;
    }
    let (service, method) = crate::metrics::method_labels(req.uri().path());
    let attempt = req
        .extensions()
        .get::<crate::resilience::retry::AttemptNumber>()
        .map_or(1, |a| a.0);
    let span = tracing::info_span!(
        "grpc.client",
        otel.name = format!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        server.address = endpoint,
        stockmesh.upstream = upstream,
        stockmesh.attempt = attempt,
    );
    inject(&span, req.headers_mut());
    Some(span)
}

/// Wraps an outbound attempt's future in its span (see [`attempt_span`]).
pub fn traced<F>(fut: F, span: Option<tracing::Span>) -> Traced<F> {
    match span {
        None => Traced::Plain { inner: fut },
        Some(span) => Traced::Spanned {
            inner: tracing::Instrument::instrument(fut, span.clone()),
            span,
        },
    }
}
