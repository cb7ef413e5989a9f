//! The outbound resilience stack, one tower layer per file. [`crate::client`] assembles
//! them in one place, so their order reads in a few lines:
//!
//! ```text
//! deadline  → retry → limit → [balance →] breaker → attempt deadline → tonic Channel
//! ```
//!
//! * [`deadline`]: every call has a deadline (the caller's, the inbound request's, or
//!   the upstream default); nothing outlives it.
//! * [`retry`]: retries UNAVAILABLE/transport failures of methods that are safe to repeat
//!   ([`idempotency`]), with jittered exponential backoff, inside a retry budget.
//! * [`limit`]: bulkhead; sheds calls beyond the upstream's concurrency limit.
//! * [`balance`]: power-of-two-choices over peak-EWMA across the upstream's endpoints
//!   (fixed, or discovered by [`crate::discovery`]); an endpoint whose breaker is open,
//!   or whose health says NOT_SERVING ([`health_watch`]), is left out; a retry avoids the
//!   endpoints the call already failed on.
//! * [`breaker`]: failsafe's circuit breaker with a one-probe half-open gate, per
//!   endpoint; with one endpoint it is the upstream's breaker and fails calls fast.
//! * [`classify`]: the one table saying what a result means to retry and breaker.
//!
//! Every setting is in [`ResilienceArgs`] (`STOCKMESH_*`), validated once by
//! [`Settings::try_new`]. Metrics (through the `metrics` facade):
//! `stockmesh_upstream_breaker_state` (gauge: 0 closed, 1 half-open, 2 open),
//! `stockmesh_upstream_breaker_transitions_total`, `stockmesh_upstream_breaker_rejected_total`,
//! `stockmesh_upstream_retries_total`, `stockmesh_upstream_retry_budget_exhausted_total`,
//! `stockmesh_upstream_shed_total`, `stockmesh_upstream_endpoint_ready` (1 in rotation,
//! 0 out), `stockmesh_upstream_attempts_total` (by outcome), labelled by `upstream` (and
//! `endpoint`); [`crate::client`] adds `stockmesh_upstream_requests_total` (by
//! `grpc_code`) and `stockmesh_upstream_request_duration_seconds`.

mod args;
pub mod balance;
pub mod breaker;
pub mod classify;
pub mod deadline;
pub mod health_watch;
pub mod idempotency;
pub mod limit;
pub mod retry;
mod settings;

pub use args::{ResilienceArgs, SettingsError};

/// Who calls which upstream: the `caller` and `upstream` labels of every client-side
/// metric. Under `stockmesh up` several targets share one process and one `/metrics`, and
/// both the gateway and orders call products: the upstream alone would merge them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The calling target (`gateway`, `orders`…), or what built the channel.
    pub caller: &'static str,
    pub upstream: &'static str,
}

impl Route {
    pub const fn new(caller: &'static str, upstream: &'static str) -> Self {
        Self { caller, upstream }
    }
}

/// Counts one attempt on one endpoint by what its result says about the endpoint:
/// `stockmesh_upstream_attempts_total{caller,upstream,endpoint,outcome}` (`success`,
/// `failure`, `neutral`). A retried call is several attempts.
pub fn count_attempt(route: Route, endpoint: &str, outcome: classify::Outcome) {
    let outcome = match outcome {
        classify::Outcome::Success => "success",
        classify::Outcome::Failure(_) => "failure",
        classify::Outcome::Neutral => "neutral",
    };
    metrics::counter!(
        "stockmesh_upstream_attempts_total",
        "caller" => route.caller,
        "upstream" => route.upstream,
        "endpoint" => endpoint.to_string(),
        "outcome" => outcome
    )
    .increment(1);
}
pub use settings::{DiscoverySettings, Settings};
