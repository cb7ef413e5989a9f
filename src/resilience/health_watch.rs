//! Endpoint health, as each endpoint reports it: the client follows
//! `grpc.health.v1.Health/Watch` (for the upstream's full service name) on every endpoint
//! it balances over, as gRPC's client-side health checking does.
//!
//! * NOT_SERVING, SERVICE_UNKNOWN, or the watch failing (connection refused or reset, the
//!   stream ending) takes the endpoint **out of rotation at once**: a server starting its
//!   drain says NOT_SERVING before it stops answering, so callers move away before a single
//!   call fails, and a killed one is noticed when its connection resets rather than when
//!   its breaker has seen enough failures.
//! * SERVING puts it **back at once and resets its breaker**: a restarted replica that says
//!   it is healthy takes calls again without waiting out an open period sized for an
//!   outage. The breaker still guards an endpoint that says SERVING but fails.
//! * UNIMPLEMENTED (a server without the health service) means "cannot tell": the endpoint
//!   stays in rotation and its breaker alone decides, as the gRPC health-checking spec
//!   says.
//!
//! A failed watch is re-opened after a short backoff ([`RETRY_MIN`] doubling to
//! [`RETRY_MAX`]), so an endpoint that comes back is seen within about half a second.
//! Each re-open of a watch on an unreachable endpoint also asks discovery to resolve the
//! upstream's name again, soon ([`crate::discovery`]).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::Route;
use super::breaker::BreakerState;

/// First wait before a failed watch is opened again.
pub const RETRY_MIN: Duration = Duration::from_millis(25);
/// Longest wait between two attempts to open a watch.
pub const RETRY_MAX: Duration = Duration::from_millis(250);

const UNKNOWN: u8 = 0;
const SERVING: u8 = 1;
const NOT_SERVING: u8 = 2;
const UNCHECKED: u8 = 3;

/// What an endpoint last said about its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not heard yet (a new endpoint): in rotation, like an endpoint without health.
    Unknown,
    Serving,
    /// NOT_SERVING, unknown service, or the watch failed: out of rotation.
    NotServing,
    /// The endpoint has no health service: in rotation, its breaker decides.
    Unchecked,
}

/// One endpoint's health, shared by its watcher and the balancer.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    state: AtomicU8,
    /// Times the endpoint came back SERVING after being out of rotation.
    generation: AtomicU64,
}

impl EndpointHealth {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self) -> Health {
        match self.state.load(Ordering::Acquire) {
            SERVING => Health::Serving,
            NOT_SERVING => Health::NotServing,
            UNCHECKED => Health::Unchecked,
            UNKNOWN => Health::Unknown,
            _ => Health::Unknown,
        }
    }

    /// Times the endpoint came back into rotation (the balancer forgets its latency
    /// history then).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Whether the balancer may pick this endpoint while others are in rotation.
    pub fn in_rotation(&self) -> bool {
        self.state.load(Ordering::Acquire) != NOT_SERVING
    }

    /// Sets the state without a watch (tests of the balancer).
    #[cfg(test)]
    pub(crate) fn force(&self, health: Health) {
        let to = match health {
            Health::Unknown => UNKNOWN,
            Health::Serving => SERVING,
            Health::NotServing => NOT_SERVING,
            Health::Unchecked => UNCHECKED,
        };
        self.state.store(to, Ordering::Release);
    }

    /// Records `to`; returns what it was.
    fn set(&self, to: u8) -> u8 {
        self.state.swap(to, Ordering::AcqRel)
    }
}

/// What a watcher needs to know about the endpoint it watches.
pub struct Watched {
    pub route: Route,
    pub endpoint: &'static str,
    /// Full gRPC name of the service whose health to follow.
    pub service: &'static str,
    pub health: Arc<EndpointHealth>,
    /// The endpoint's breaker, reset on SERVING. Weak: when the last channel to the
    /// upstream is dropped the breaker goes, and the watch ends with it.
    pub breaker: Weak<BreakerState>,
    /// Called when the endpoint cannot be reached (discovery re-resolves soon).
    pub on_unreachable: Arc<dyn Fn() + Send + Sync>,
}

/// How often a watcher checks that its endpoint is still used.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// Follows the endpoint's health on `channel` until `stop`, or until the endpoint's
/// breaker is dropped.
pub fn spawn(channel: Channel, watched: Watched, stop: CancellationToken) {
    tokio::spawn(async move {
        let gone = async {
            while watched.breaker.strong_count() > 0 {
                tokio::time::sleep(LIVENESS_EVERY).await;
            }
        };
        // Without a health service `run` returns: nothing more to learn, but the task
        // stays until the endpoint goes, so the gauge is cleared in one place.
        let watch = async {
            run(channel, &watched).await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = gone => {}
            () = watch => {}
        }
        gauge(&watched, None);
    });
}

async fn run(channel: Channel, w: &Watched) {
    let mut wait = RETRY_MIN;
    loop {
        let request = HealthCheckRequest {
            service: w.service.to_string(),
        };
        match HealthClient::new(channel.clone()).watch(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            apply(w, msg.status);
                            wait = RETRY_MIN;
                        }
                        Ok(None) => {
                            out(w, "health watch ended");
                            break;
                        }
                        Err(status) => {
                            out(w, status.message());
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == Code::Unimplemented => {
                let before = w.health.set(UNCHECKED);
                if before != UNCHECKED {
                    tracing::debug!(
                        upstream = w.route.upstream,
                        endpoint = w.endpoint,
                        "endpoint has no health service: its breaker alone decides"
                    );
                }
                gauge(w, Some(true));
                return;
            }
            Err(status) => {
                out(w, status.message());
                (w.on_unreachable)();
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Applies a status the endpoint sent.
fn apply(w: &Watched, status: i32) {
    if status == ServingStatus::Serving as i32 {
        let before = w.health.set(SERVING);
        if before == NOT_SERVING {
            w.health.generation.fetch_add(1, Ordering::Relaxed);
        }
        if before != SERVING {
            if let Some(breaker) = w.breaker.upgrade() {
                breaker.reset();
            }
            if before == NOT_SERVING {
                tracing::info!(
                    upstream = w.route.upstream,
                    endpoint = w.endpoint,
                    "endpoint SERVING: back in rotation, breaker reset"
                );
            }
            gauge(w, Some(true));
        }
    } else {
        let name = ServingStatus::try_from(status).map_or("UNKNOWN", |s| s.as_str_name());
        out(w, name);
    }
}

/// Takes the endpoint out of rotation, saying why.
fn out(w: &Watched, why: &str) {
    if w.health.set(NOT_SERVING) != NOT_SERVING {
        tracing::info!(
            upstream = w.route.upstream,
            endpoint = w.endpoint,
            why,
            "endpoint out of rotation"
        );
        gauge(w, Some(false));
    }
}

/// `stockmesh_upstream_endpoint_ready{caller,upstream,endpoint}`: 1 in rotation, 0 out; removed
/// with the endpoint (`None`).
fn gauge(w: &Watched, ready: Option<bool>) {
    let g = metrics::gauge!(
        "stockmesh_upstream_endpoint_ready",
        "caller" => w.route.caller,
        "upstream" => w.route.upstream,
        "endpoint" => w.endpoint
    );
    match ready {
        Some(r) => g.set(if r { 1.0 } else { 0.0 }),
        None => g.set(0.0),
    }
}
