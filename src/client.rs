//! Outbound clients: one [`UpstreamChannel`] per upstream service, built in one place
//! ([`ClientBuilder::build`]) so that every call between services gets the same
//! resilience stack, in the same order:
//!
//! ```text
//! deadline → retry → limit → [p2c balance over endpoints →] breaker → attempt deadline → Channel
//! ```
//!
//! The endpoints are the upstream's addresses: fixed ones, and `dns:///` names resolved
//! and re-resolved by [`crate::discovery`]. Each endpoint's `grpc.health.v1` Watch is
//! followed ([`crate::resilience::health_watch`]): the balancer leaves out endpoints that
//! say NOT_SERVING, and SERVING resets an endpoint's breaker. A single fixed address
//! skips the balancer (its breaker fails calls fast); its health watch only resets the
//! breaker.
//!
//! * **deadline** first, so that it bounds everything below, retries and their waits
//!   included;
//! * **retry** above the breaker and the balancer, so that a retry is a fresh pick: it
//!   lands on another endpoint (the balancer avoids the ones this call failed on), or is
//!   refused at once by an open breaker (and a refusal is never retried);
//! * **limit** above the balancer so the bulkhead counts calls to the upstream, not to
//!   one endpoint;
//! * **breaker** per endpoint, below the balancer. With one endpoint it is simply the
//!   upstream's breaker. With several, a per-upstream breaker above the balancer would
//!   trip on the failures of one dead endpoint while the others serve; instead each
//!   endpoint's breaker ejects that endpoint, and the upstream counts as open (UNAVAILABLE
//!   at once, naming it) exactly when all of its endpoints are ejected.
//! * the **attempt deadline** innermost, so each attempt tells the server how much time is
//!   left (`grpc-timeout`), and the breaker sees a slow endpoint's DEADLINE_EXCEEDED.
//!
//! [`UpstreamChannel`] is one concrete tower service whatever the number of endpoints, so
//! generated clients (`FooServiceClient<UpstreamChannel>`) never see which layers are
//! inside. It is not a boxed service: every call clones the channel (generated clients
//! take `&mut self`) and makes one future, and boxing both cost two allocations and two
//! indirect calls per call (BENCHMARKS.md). See [`crate::resilience`] for each layer.
//!
//! With mTLS on (`STOCKMESH_TLS_DIR`), every endpoint's channel — calls and health watch
//! alike — connects through [`TlsConnect`]: TCP, then a rustls handshake presenting the
//! caller's certificate (re-read when rotated, so new connections present the new one)
//! and accepting only a server certificate from the mesh CA that names the upstream's
//! identity ([`ClientTls`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::{Layer, Service, ServiceBuilder};

use crate::discovery::{self, Entry};
use crate::resilience::balance::{self, Balanced, Endpoints};
use crate::resilience::breaker::{Breaker, BreakerLayer, BreakerState};
use crate::resilience::classify::transport_status;
use crate::resilience::deadline::{AttemptDeadline, AttemptDeadlineLayer, Deadline, DeadlineLayer};
use crate::resilience::health_watch::{self, EndpointHealth, Watched};
use crate::resilience::limit::{Limit, LimitLayer};
use crate::resilience::retry::{Retry, RetryLayer};
use crate::resilience::{ResilienceArgs, Route, Settings};
use crate::{Config, Target};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Req = http::Request<Body>;
type Resp = http::Response<Body>;

/// The stack in front of one upstream with a single endpoint.
type OneEndpoint = Deadline<Retry<Limit<Breaker<EndpointService>>>>;
/// The stack in front of one upstream balanced over several endpoints.
type ManyEndpoints = Deadline<Retry<Limit<Balanced<EndpointService>>>>;

/// A channel to one upstream with the whole outbound stack. Cheap to clone (no
/// allocation beyond the tonic channel's own).
///
/// Its error type is [`tonic::Status`]: every failure (connection refused, deadline,
/// open breaker) is already classified as a gRPC status when it leaves the stack, which is
/// what callers act on. (A boxed `dyn Error` here also trips a rustc limitation when
/// proving generated-client futures `Send`.)
#[derive(Clone)]
pub struct UpstreamChannel {
    stack: Stack,
    route: Route,
    gate: Gate,
    max_message_bytes: usize,
}

/// What refuses calls at once: the single endpoint's breaker, or every endpoint's.
#[derive(Clone)]
enum Gate {
    One(Arc<BreakerState>),
    Many(Arc<Endpoints<EndpointService>>),
}

#[derive(Clone)]
enum Stack {
    One(OneEndpoint),
    Many(ManyEndpoints),
}

impl std::fmt::Debug for UpstreamChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamChannel").finish_non_exhaustive()
    }
}

impl Service<Req> for UpstreamChannel {
    type Response = Resp;
    type Error = tonic::Status;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        match &mut self.stack {
            Stack::One(svc) => svc.poll_ready(cx),
            Stack::Many(svc) => svc.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = match &mut self.stack {
            Stack::One(svc) => StackFuture::One {
                inner: svc.call(req),
            },
            Stack::Many(svc) => StackFuture::Many {
                inner: svc.call(req),
            },
        };
        UpstreamFuture {
            inner,
            route: self.route,
            start: std::time::Instant::now(),
        }
    }
}

pin_project! {
    /// A call through an [`UpstreamChannel`]; records the upstream's request metrics
    /// when it completes.
    pub struct UpstreamFuture {
        #[pin]
        inner: StackFuture,
        route: Route,
        start: std::time::Instant,
    }
}

pin_project! {
    #[project = StackFutureProj]
    enum StackFuture {
        One { #[pin] inner: <OneEndpoint as Service<Req>>::Future },
        Many { #[pin] inner: <ManyEndpoints as Service<Req>>::Future },
    }
}

impl Future for UpstreamFuture {
    type Output = Result<Resp, tonic::Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(match this.inner.project() {
            StackFutureProj::One { inner } => inner.poll(cx),
            StackFutureProj::Many { inner } => inner.poll(cx),
        });
        // The code as known when the response headers arrive: every unary error is a
        // trailers-only response; a success's OK comes in trailers not awaited here.
        let code = match &result {
            Ok(resp) => crate::metrics::grpc_status(resp.headers()).unwrap_or(0),
            Err(status) => status.code() as i32,
        };
        metrics::counter!(
            "stockmesh_upstream_requests_total",
            "caller" => this.route.caller,
            "upstream" => this.route.upstream,
            "grpc_code" => crate::metrics::code_label(code)
        )
        .increment(1);
        metrics::histogram!(
            "stockmesh_upstream_request_duration_seconds",
            "caller" => this.route.caller,
            "upstream" => this.route.upstream
        )
        .record(this.start.elapsed().as_secs_f64());
        Poll::Ready(result)
    }
}

impl UpstreamChannel {
    /// The status a call made now would be refused with at once (UNAVAILABLE: the
    /// breaker is open, or every endpoint's is), without making one; `None` when a call
    /// would go out. For a caller about to take a step it would have to undo if the
    /// call then failed: orders checks inventory before writing an order's intent.
    pub fn refusal(&self) -> Option<tonic::Status> {
        match &self.gate {
            Gate::One(breaker) => breaker.is_refusing().then(|| breaker.rejection()),
            Gate::Many(endpoints) => endpoints.refusal(),
        }
    }

    /// The largest response message a client on this channel should accept
    /// (`STOCKMESH_MAX_MESSAGE_BYTES`): give it to the generated client, as in
    /// `FooServiceClient::new(ch.clone()).max_decoding_message_size(ch.max_message_bytes())`.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }
}

/// Builds `caller`'s channel to `target` at the addresses configured for it (over mTLS
/// as `caller` when `STOCKMESH_TLS_DIR` is set).
pub fn upstream(config: &Config, caller: Target, target: Target) -> crate::Result<UpstreamChannel> {
    let tls = match config.tls_dir() {
        Some(dir) => Some(ClientTls::new(dir, caller.name(), target.name())?),
        None => None,
    };
    ClientBuilder::new(
        target,
        config.upstream_addrs(target),
        config.resilience.clone(),
    )
    .caller(caller.name())
    .max_message_bytes(config.max_message_bytes)
    .tls(tls)
    .build()
}

/// Mutual TLS towards one upstream: presents `caller`'s certificate from the mesh
/// directory and accepts only a server certificate of the mesh CA naming `upstream`
/// ([`crate::tls::client_config`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Loads the CA and `caller`'s certificate now: a missing or broken file is a
    /// configuration error at start, not a failure on the first call.
    pub fn new(dir: &std::path::Path, caller: &str, upstream: &str) -> crate::Result<Self> {
        let config = crate::tls::client_config(dir, Some(caller), upstream).map_err(|e| {
            crate::Error::Config(format!("STOCKMESH_TLS_DIR ({caller} → {upstream}): {e}"))
        })?;
        Ok(Self::from_config(config))
    }

    /// Any rustls client configuration (tests: no certificate, a foreign one).
    pub fn from_config(config: rustls::ClientConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// A channel to `uri` over this TLS, connected (handshake done) before it returns.
    pub async fn connect(&self, uri: &str) -> Result<Channel, String> {
        let (endpoint, connector) = self.endpoint(uri).map_err(|e| e.to_string())?;
        endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| format!("cannot connect to {uri} over mTLS: {e}"))
    }

    fn endpoint(&self, uri: &str) -> crate::Result<(Endpoint, TlsConnect)> {
        let bad =
            |e: &dyn std::fmt::Display| crate::Error::Config(format!("bad address {uri:?}: {e}"));
        let (endpoint, origin) = tls_endpoint(uri).map_err(|e| bad(&e))?;
        Ok((endpoint.origin(origin), TlsConnect::new(self)))
    }
}

/// The endpoint the connector is given (`http://`: tonic itself refuses `https://`
/// without its own TLS, which cannot reload certificates) and the origin requests carry
/// (`https://`, the truth about the connection).
fn tls_endpoint(uri: &str) -> Result<(Endpoint, Uri), tonic::transport::Error> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .unwrap_or(uri);
    let endpoint = Endpoint::from_shared(format!("http://{rest}"))?;
    let origin = Endpoint::from_shared(format!("https://{rest}"))?
        .uri()
        .clone();
    Ok((endpoint, origin))
}

/// Connects an mTLS channel: TCP (hyper-util's connector, as tonic's own), then the rustls
/// handshake. The server name sent is the endpoint's host; the certificate is judged by the
/// identity it names ([`crate::tls::client_config`]).
#[derive(Clone)]
pub struct TlsConnect {
    http: HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

impl TlsConnect {
    fn new(tls: &ClientTls) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        Self {
            http,
            tls: tokio_rustls::TlsConnector::from(tls.config.clone()),
        }
    }
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl Service<Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let name = ServerName::try_from(host)?;
            let tcp = connecting.await?.into_inner();
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Gives an outbound request what is left of an inbound request's deadline, so that a
/// handler's upstream calls end when its own caller stops waiting:
///
/// ```text
/// async fn create_order(&self, request: Request<CreateOrderRequest>) -> Result<…> {
///     let reserve = with_deadline_from(&request, Request::new(ReserveRequest { … }));
///     self.inventory.clone().reserve(reserve).await?;
/// ```
///
/// The time left is exact when the server runs
/// [`InboundDeadlineLayer`](crate::resilience::deadline::InboundDeadlineLayer) (which also
/// makes this automatic for calls made within the handler); otherwise it is the inbound
/// `grpc-timeout` as received. An inbound request without a deadline leaves `outbound`
/// unchanged (the upstream default applies). A deadline already past makes the call fail
/// at once with DEADLINE_EXCEEDED, without reaching the upstream.
pub fn with_deadline_from<T, U>(
    inbound: &tonic::Request<T>,
    mut outbound: tonic::Request<U>,
) -> tonic::Request<U> {
    if let Some(left) = crate::resilience::deadline::remaining_of(inbound) {
        outbound.set_timeout(left);
    }
    outbound
}

/// Builder for an upstream channel.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    target: Target,
    addrs: Vec<String>,
    settings: ResilienceArgs,
    caller: &'static str,
    max_message_bytes: usize,
    tls: Option<ClientTls>,
}

impl ClientBuilder {
    /// A channel to `target`; its metrics say `caller="client"` until [`Self::caller`]
    /// names the caller.
    pub fn new(target: Target, addrs: Vec<String>, settings: ResilienceArgs) -> Self {
        Self {
            target,
            addrs,
            settings,
            caller: "client",
            max_message_bytes: crate::message_limit::DEFAULT_MAX_MESSAGE_BYTES,
            tls: None,
        }
    }

    /// Connect every endpoint over mutual TLS (`None`: plaintext h2c, the default).
    pub fn tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The largest response message the channel's clients accept (default 4 MiB); see
    /// [`UpstreamChannel::max_message_bytes`].
    pub fn max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = limit;
        self
    }

    /// Who makes the calls: the `caller` label of the channel's metrics.
    pub fn caller(mut self, caller: &'static str) -> Self {
        self.caller = caller;
        self
    }

    /// Validates the settings and addresses and assembles the stack. Connects lazily:
    /// building never fails because an upstream is down, only because the configuration
    /// is wrong. Spawns the endpoints' health watches (and the discovery of `dns:///`
    /// names), so call it within a tokio runtime.
    pub fn build(self) -> crate::Result<UpstreamChannel> {
        let settings = Settings::try_new(&self.settings)
            .map_err(|e| crate::Error::Config(format!("upstream {}: {e}", self.target)))?;
        let name = self.target.name();
        let route = Route {
            caller: self.caller,
            upstream: name,
        };
        let service = self.target.grpc_service();
        if self.addrs.is_empty() {
            return Err(crate::Error::Config(format!(
                "no address configured for upstream {}",
                self.target
            )));
        }
        let entries = self
            .addrs
            .iter()
            .map(|a| Entry::parse(a))
            .collect::<crate::Result<Vec<_>>>()?;
        for entry in &entries {
            if let Entry::Fixed(uri) = entry {
                // Checked here, so that making its channel later cannot fail.
                let checked = match &self.tls {
                    None => Endpoint::from_shared(uri.clone()).map(|_| ()),
                    Some(_) => tls_endpoint(uri).map(|_| ()),
                };
                checked.map_err(|e| {
                    crate::Error::Config(format!("bad address {uri:?} for {}: {e}", self.target))
                })?;
            }
        }
        let stack = ServiceBuilder::new()
            .layer(DeadlineLayer::new(name, settings.default_deadline))
            .layer(RetryLayer::new(route, settings.retry.clone()))
            .layer(LimitLayer::new(route, settings.concurrency));

        if let [Entry::Fixed(uri)] = entries.as_slice() {
            // One fixed endpoint: its breaker fails calls fast. Its health watch only
            // resets the breaker when it says SERVING (there is nowhere else to go).
            let addr = discovery::intern(uri);
            let channel = channel(addr, settings.connect_timeout, self.tls.as_ref());
            let state = BreakerState::new(route, addr, &settings.breaker, false);
            watch_health(
                channel.clone(),
                Watched {
                    route,
                    endpoint: addr,
                    service,
                    health: Arc::new(EndpointHealth::new()),
                    breaker: Arc::downgrade(&state),
                    on_unreachable: Arc::new(|| {}),
                },
                CancellationToken::new(),
            );
            let gate = Gate::One(state.clone());
            let svc = stack
                .layer(BreakerLayer::new(state))
                .service(endpoint_service(name, addr, channel));
            return Ok(UpstreamChannel {
                stack: Stack::One(svc),
                route,
                gate,
                max_message_bytes: self.max_message_bytes,
            });
        }

        let endpoints = Endpoints::new(route, self.addrs.join(","));
        let unreachable = endpoints.unreachable_signal();
        let connect_timeout = settings.connect_timeout;
        let breaker = settings.breaker.clone();
        let tls = self.tls.clone();
        let make = move |addr: &'static str| {
            let channel = channel(addr, connect_timeout, tls.as_ref());
            let state = BreakerState::new(route, addr, &breaker, true);
            let health = Arc::new(EndpointHealth::new());
            let stop = CancellationToken::new();
            let signal = unreachable.clone();
            watch_health(
                channel.clone(),
                Watched {
                    route,
                    endpoint: addr,
                    service,
                    health: health.clone(),
                    breaker: Arc::downgrade(&state),
                    on_unreachable: Arc::new(move || signal.notify_one()),
                },
                stop.clone(),
            );
            balance::Endpoint::new(
                addr,
                endpoint_service(name, addr, channel),
                state,
                health,
                stop,
            )
        };
        discovery::start(&endpoints, entries, &settings.discovery, make)?;
        Ok(UpstreamChannel {
            gate: Gate::Many(endpoints.clone()),
            stack: Stack::Many(stack.service(Balanced::new(endpoints))),
            route,
            max_message_bytes: self.max_message_bytes,
        })
    }
}

/// A lazily connecting tonic channel to `uri` (checked by [`ClientBuilder::build`] or
/// made by discovery from an IP address), over mTLS when `tls` is given.
fn channel(uri: &'static str, connect_timeout: Duration, tls: Option<&ClientTls>) -> Channel {
    let tune = |endpoint: Endpoint| {
        endpoint
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
    };
    match tls.map(|tls| (tls, tls_endpoint(uri))) {
        None => tune(Endpoint::from_static(uri)).connect_lazy(),
        Some((tls, Ok((endpoint, origin)))) => {
            tune(endpoint.origin(origin)).connect_with_connector_lazy(TlsConnect::new(tls))
        }
        // Not reached: build checked every fixed address, and discovery makes IP ones.
        // Still TLS if it were.
        Some((tls, Err(e))) => {
            tracing::error!(%uri, error = %e, "bad upstream address");
            tune(Endpoint::from_static(uri)).connect_with_connector_lazy(TlsConnect::new(tls))
        }
    }
}

/// Starts an endpoint's health watch, when there is a runtime to run it (a client built
/// outside one, as some unit tests do, goes without: its breaker alone decides).
fn watch_health(channel: Channel, watched: Watched, stop: CancellationToken) {
    if tokio::runtime::Handle::try_current().is_ok() {
        health_watch::spawn(channel, watched, stop);
    }
}

/// One endpoint: the tonic channel, its errors turned into classified statuses, and the
/// per-attempt deadline.
type EndpointService = AttemptDeadline<TransportErrors>;

fn endpoint_service(
    upstream: &'static str,
    addr: &'static str,
    channel: Channel,
) -> EndpointService {
    AttemptDeadlineLayer::new(upstream).layer(TransportErrors {
        inner: channel,
        upstream,
        addr,
    })
}

/// The tonic channel with its errors turned into statuses by [`transport_status`] (a
/// named `map_err`, so that [`UpstreamChannel`]'s future has a name).
#[derive(Debug, Clone)]
pub struct TransportErrors {
    inner: Channel,
    upstream: &'static str,
    addr: &'static str,
}

impl Service<Req> for TransportErrors {
    type Response = Resp;
    type Error = tonic::Status;
    type Future = crate::telemetry::Traced<TransportFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| transport_status(self.upstream, self.addr, e))
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let span = crate::telemetry::attempt_span(&mut req, self.upstream, self.addr);
        let fut = TransportFuture {
            inner: self.inner.call(req),
            upstream: self.upstream,
            addr: self.addr,
        };
        crate::telemetry::traced(fut, span)
    }
}

pin_project! {
    /// A call through [`TransportErrors`].
    pub struct TransportFuture {
        #[pin]
        inner: tonic::transport::channel::ResponseFuture,
        upstream: &'static str,
        addr: &'static str,
    }
}

impl Future for TransportFuture {
    type Output = Result<Resp, tonic::Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.inner
            .poll(cx)
            .map_err(|e| transport_status(this.upstream, this.addr, e))
    }
}
