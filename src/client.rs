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
//! The channel is a boxed tower service, so generated clients (`FooServiceClient<UpstreamChannel>`)
//! never see which layers are inside. See [`crate::resilience`] for each layer.

use std::sync::Arc;
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::resilience::balance::Balanced;
use crate::resilience::breaker::{BreakerLayer, BreakerState};
use crate::resilience::classify::transport_status;
use crate::resilience::deadline::{AttemptDeadlineLayer, DeadlineLayer};
use crate::resilience::limit::LimitLayer;
use crate::resilience::retry::RetryLayer;
use crate::resilience::{ResilienceArgs, Settings};
use crate::{Config, Target};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A channel to one upstream with the whole outbound stack. Cheap to clone.
///
/// Its error type is [`tonic::Status`]: every failure (connection refused, deadline,
/// open breaker) is already classified as a gRPC status when it leaves the stack, which is
/// what callers act on. (A boxed `dyn Error` here also trips a rustc limitation when
/// proving generated-client futures `Send`.)
pub type UpstreamChannel =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, tonic::Status>;

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
/// ```ignore
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
                .service(endpoint_service(
                    name,
                    Arc::from(addr.as_str()),
                    channel.clone(),
                ));
            return Ok(BoxCloneSyncService::new(svc));
        }
        let endpoints = channels
            .into_iter()
            .map(|(addr, channel)| {
                let state = BreakerState::new(name, addr.as_str(), &settings.breaker, true);
                (endpoint_service(name, Arc::from(addr), channel), state)
            })
            .collect();
        let balanced = Balanced::new(name, endpoints, settings.concurrency);
        Ok(BoxCloneSyncService::new(stack.service(balanced)))
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
fn endpoint_service(
    upstream: &'static str,
    addr: Arc<str>,
    channel: Channel,
) -> impl tower::Service<
    http::Request<Body>,
    Response = http::Response<Body>,
    Error = tonic::Status,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    ServiceBuilder::new()
        .layer(AttemptDeadlineLayer::new(upstream))
        .map_err(move |e| transport_status(upstream, &addr, e))
        .service(channel)
}
