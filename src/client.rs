//! Outbound clients: one [`UpstreamChannel`] per upstream service, built in one place
//! ([`ClientBuilder::build`]) so that every call between services gets the same
//! resilience stack, in the same order:
//!
//! ```text
//! deadline → retry → limit → [p2c balance over endpoints →] breaker → attempt deadline → Channel
//! ```
//!
//! * **deadline** first, so that it bounds everything below, retries and their waits
//!   included;
//! * **retry** above the breaker and the balancer, so that a retry is a fresh pick: it
//!   lands on another endpoint, or is refused at once by an open breaker (and a refusal is
//!   never retried);
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

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{Layer, Service, ServiceBuilder};

use crate::resilience::balance::Balanced;
use crate::resilience::breaker::{Breaker, BreakerLayer, BreakerState};
use crate::resilience::classify::transport_status;
use crate::resilience::deadline::{AttemptDeadline, AttemptDeadlineLayer, Deadline, DeadlineLayer};
use crate::resilience::limit::{Limit, LimitLayer};
use crate::resilience::retry::{Retry, RetryLayer};
use crate::resilience::{ResilienceArgs, Settings};
use crate::{Config, Target};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Req = http::Request<Body>;
type Resp = http::Response<Body>;

/// The stack in front of one upstream with a single endpoint.
type OneEndpoint = Deadline<Retry<Limit<Breaker<EndpointService>>>>;
/// The stack in front of one upstream balanced over several endpoints.
type ManyEndpoints = Deadline<Retry<Limit<Balanced>>>;

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
        match &mut self.stack {
            Stack::One(svc) => UpstreamFuture::One {
                inner: svc.call(req),
            },
            Stack::Many(svc) => UpstreamFuture::Many {
                inner: svc.call(req),
            },
        }
    }
}

pin_project! {
    /// A call through an [`UpstreamChannel`].
    #[project = UpstreamFutureProj]
    pub enum UpstreamFuture {
        One { #[pin] inner: <OneEndpoint as Service<Req>>::Future },
        Many { #[pin] inner: <ManyEndpoints as Service<Req>>::Future },
    }
}

impl Future for UpstreamFuture {
    type Output = Result<Resp, tonic::Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            UpstreamFutureProj::One { inner } => inner.poll(cx),
            UpstreamFutureProj::Many { inner } => inner.poll(cx),
        }
    }
}

/// Builds the channel to `target` at the addresses configured for it.
pub fn upstream(config: &Config, target: Target) -> crate::Result<UpstreamChannel> {
    ClientBuilder::new(
        target,
        config.upstream_addrs(target),
        config.resilience.clone(),
    )
    .build()
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
}

impl ClientBuilder {
    pub fn new(target: Target, addrs: Vec<String>, settings: ResilienceArgs) -> Self {
        Self {
            target,
            addrs,
            settings,
        }
    }

    /// Validates the settings and assembles the stack. Connects lazily: building never
    /// fails because an upstream is down, only because the configuration is wrong. With
    /// several endpoints it spawns the balancer's task, so call it within a tokio runtime.
    pub fn build(self) -> crate::Result<UpstreamChannel> {
        let settings = Settings::try_new(&self.settings)
            .map_err(|e| crate::Error::Config(format!("upstream {}: {e}", self.target)))?;
        let name = self.target.name();
        let channels = self.channels(&settings)?;
        let stack = ServiceBuilder::new()
            .layer(DeadlineLayer::new(name, settings.default_deadline))
            .layer(RetryLayer::new(name, settings.retry.clone()))
            .layer(LimitLayer::new(name, settings.concurrency));

        if let [(addr, channel)] = channels.as_slice() {
            let state = BreakerState::new(name, addr.as_str(), &settings.breaker, false);
            let svc = stack
                .layer(BreakerLayer::new(state))
                .service(endpoint_service(name, addr, channel.clone()));
            return Ok(UpstreamChannel {
                stack: Stack::One(svc),
            });
        }
        let endpoints = channels
            .into_iter()
            .map(|(addr, channel)| {
                let state = BreakerState::new(name, addr.as_str(), &settings.breaker, true);
                (endpoint_service(name, &addr, channel), state)
            })
            .collect();
        let balanced = Balanced::new(name, endpoints, settings.concurrency);
        Ok(UpstreamChannel {
            stack: Stack::Many(stack.service(balanced)),
        })
    }

    fn channels(&self, settings: &Settings) -> crate::Result<Vec<(String, Channel)>> {
        if self.addrs.is_empty() {
            return Err(crate::Error::Config(format!(
                "no address configured for upstream {}",
                self.target
            )));
        }
        self.addrs
            .iter()
            .map(|addr| {
                let endpoint = Endpoint::from_shared(addr.clone()).map_err(|e| {
                    crate::Error::Config(format!("bad address {addr:?} for {}: {e}", self.target))
                })?;
                let channel = endpoint
                    .connect_timeout(settings.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                Ok((addr.clone(), channel))
            })
            .collect()
    }
}

/// One endpoint: the tonic channel, its errors turned into classified statuses, and the
/// per-attempt deadline.
type EndpointService = AttemptDeadline<TransportErrors>;

fn endpoint_service(upstream: &'static str, addr: &str, channel: Channel) -> EndpointService {
    AttemptDeadlineLayer::new(upstream).layer(TransportErrors {
        inner: channel,
        upstream,
        addr: intern(addr),
    })
}

/// `addr` as a `&'static str`, leaked once per distinct address: every call carries its
/// endpoint's address for the error message, and a shared `Arc<str>` would cost two
/// atomic operations on one cache line per call. Addresses come from configuration, so
/// the set stays small (tests add a few bytes per port they bind).
fn intern(addr: &str) -> &'static str {
    static ADDRS: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut addrs = ADDRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = addrs.get(addr) {
        return known;
    }
    let leaked: &'static str = Box::leak(addr.to_owned().into_boxed_str());
    addrs.insert(leaked);
    leaked
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
    type Future = TransportFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| transport_status(self.upstream, self.addr, e))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        TransportFuture {
            inner: self.inner.call(req),
            upstream: self.upstream,
            addr: self.addr,
        }
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
