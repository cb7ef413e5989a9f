//! Outbound clients: one [`UpstreamChannel`] per upstream service, built in one place so
//! that every call between services gets the same treatment.
//!
//! The channel is a boxed tower service, so generated clients (`FooServiceClient<UpstreamChannel>`)
//! never see which layers are inside. Today's stack applies a per-call deadline: when the
//! caller set no `grpc-timeout`, the upstream default is written into the request (so the
//! server knows it too) and enforced locally.

use std::time::Duration;

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::resilience::ResilienceArgs;
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

    /// Connects lazily: building never fails because an upstream is down.
    pub fn build(self) -> crate::Result<UpstreamChannel> {
        let channel = self.channel()?;
        let svc = ServiceBuilder::new()
            .map_err(|e: BoxError| tonic::Status::from_error(e))
            .layer(crate::resilience::deadline::DeadlineLayer::new(
                self.settings.upstream_timeout(),
            ))
            .service(channel);
        Ok(BoxCloneSyncService::new(svc))
    }

    fn channel(&self) -> crate::Result<Channel> {
        let endpoints = self
            .addrs
            .iter()
            .map(|addr| self.endpoint(addr))
            .collect::<crate::Result<Vec<_>>>()?;
        match endpoints.as_slice() {
            [] => Err(crate::Error::Config(format!(
                "no address configured for upstream {}",
                self.target
            ))),
            [one] => Ok(one.connect_lazy()),
            _ => Ok(Channel::balance_list(endpoints.into_iter())),
        }
    }

    fn endpoint(&self, addr: &str) -> crate::Result<Endpoint> {
        let endpoint = Endpoint::from_shared(addr.to_string()).map_err(|e| {
            crate::Error::Config(format!("bad address {addr:?} for {}: {e}", self.target))
        })?;
        Ok(endpoint
            .connect_timeout(self.settings.connect_timeout())
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true))
    }
}
