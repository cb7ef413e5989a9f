//! Settings of the outbound resilience stack, shared by every upstream, with defaults and
//! `STOCKMESH_*` environment overrides.

use std::time::Duration;

/// Timeouts, retry, breaker and concurrency settings for calls to upstream services.
#[derive(Debug, Clone, clap::Args)]
pub struct ResilienceArgs {
    /// Deadline of an upstream call when the caller set none (milliseconds).
    #[arg(long, env = "STOCKMESH_UPSTREAM_TIMEOUT_MS", default_value_t = 2000)]
    pub upstream_timeout_ms: u64,
    /// Time allowed to open a TCP connection to an upstream (milliseconds).
    #[arg(long, env = "STOCKMESH_CONNECT_TIMEOUT_MS", default_value_t = 1000)]
    pub connect_timeout_ms: u64,
    /// Attempts per call, the first included, for retryable failures.
    #[arg(long, env = "STOCKMESH_RETRY_MAX_ATTEMPTS", default_value_t = 3)]
    pub retry_max_attempts: u32,
    /// Consecutive failures that open an upstream's circuit breaker.
    #[arg(long, env = "STOCKMESH_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long a breaker stays open before admitting a probe (milliseconds); grows with
    /// repeated trips up to 60 s.
    #[arg(long, env = "STOCKMESH_BREAKER_OPEN_MS", default_value_t = 5000)]
    pub breaker_open_ms: u64,
    /// Maximum concurrent in-flight calls per upstream (bulkhead).
    #[arg(long, env = "STOCKMESH_UPSTREAM_CONCURRENCY", default_value_t = 512)]
    pub upstream_concurrency: usize,
}

impl ResilienceArgs {
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl Default for ResilienceArgs {
    fn default() -> Self {
        Self {
            upstream_timeout_ms: 2000,
            connect_timeout_ms: 1000,
            retry_max_attempts: 3,
            breaker_failures: 5,
            breaker_open_ms: 5000,
            upstream_concurrency: 512,
        }
    }
}
