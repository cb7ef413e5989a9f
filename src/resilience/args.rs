//! What an operator sets for the outbound stack: [`ResilienceArgs`] (clap, one
//! `STOCKMESH_*` variable each, with defaults) and the error naming a bad one.
//!
//! Kept apart from [`super::settings`], which validates these into each layer's typed
//! settings: the layers' own settings types read only this module, so no layer and
//! `settings` import each other.

use std::time::Duration;

/// Timeouts, retry, breaker and concurrency settings for calls to upstream services.
#[derive(Debug, Clone, clap::Args)]
pub struct ResilienceArgs {
    /// Deadline of an upstream call when the caller set none (milliseconds).
    #[arg(
        long,
        env = "STOCKMESH_UPSTREAM_TIMEOUT_MS",
        default_value_t = 2000,
        global = true
    )]
    pub upstream_timeout_ms: u64,
    /// Time allowed to open a TCP connection to an upstream (milliseconds).
    #[arg(
        long,
        env = "STOCKMESH_CONNECT_TIMEOUT_MS",
        default_value_t = 1000,
        global = true
    )]
    pub connect_timeout_ms: u64,
    /// Attempts per call, the first included, for retryable failures (1 disables retries).
    #[arg(
        long,
        env = "STOCKMESH_RETRY_MAX_ATTEMPTS",
        default_value_t = 3,
        global = true
    )]
    pub retry_max_attempts: u32,
    /// First retry waits between this and twice this (milliseconds); later ones double.
    #[arg(
        long,
        env = "STOCKMESH_RETRY_BACKOFF_MS",
        default_value_t = 25,
        global = true
    )]
    pub retry_backoff_ms: u64,
    /// Longest wait between two attempts (milliseconds).
    #[arg(
        long,
        env = "STOCKMESH_RETRY_BACKOFF_MAX_MS",
        default_value_t = 1000,
        global = true
    )]
    pub retry_backoff_max_ms: u64,
    /// Retries allowed per upstream, as a percentage of recent calls (the retry budget).
    #[arg(
        long,
        env = "STOCKMESH_RETRY_BUDGET_PERCENT",
        default_value_t = 20,
        global = true
    )]
    pub retry_budget_percent: u32,
    /// Retries per second always allowed on top of the percentage (the budget's floor).
    #[arg(
        long,
        env = "STOCKMESH_RETRY_BUDGET_MIN_PER_SEC",
        default_value_t = 10,
        global = true
    )]
    pub retry_budget_min_per_sec: u32,
    /// Largest request body kept in memory so that it can be sent again (bytes); larger
    /// requests are sent once.
    #[arg(
        long,
        env = "STOCKMESH_RETRY_BUFFER_BYTES",
        default_value_t = 64 * 1024,
        global = true
    )]
    pub retry_buffer_bytes: usize,
    /// Consecutive failures that open an upstream's circuit breaker.
    #[arg(
        long,
        env = "STOCKMESH_BREAKER_FAILURES",
        default_value_t = 5,
        global = true
    )]
    pub breaker_failures: u32,
    /// How long a breaker stays open before admitting a probe (milliseconds); doubles with
    /// every trip that follows a failed probe, up to `breaker_max_open_ms`.
    #[arg(
        long,
        env = "STOCKMESH_BREAKER_OPEN_MS",
        default_value_t = 5000,
        global = true
    )]
    pub breaker_open_ms: u64,
    /// Longest time a breaker stays open (milliseconds).
    #[arg(
        long,
        env = "STOCKMESH_BREAKER_MAX_OPEN_MS",
        default_value_t = 60_000,
        global = true
    )]
    pub breaker_max_open_ms: u64,
    /// A breaker also opens when the success rate over the window falls below this
    /// percentage (0 disables this rule).
    #[arg(
        long,
        env = "STOCKMESH_BREAKER_SUCCESS_RATE_PERCENT",
        default_value_t = 50,
        global = true
    )]
    pub breaker_success_rate_percent: u32,
    /// Window of the success-rate rule (seconds).
    #[arg(
        long,
        env = "STOCKMESH_BREAKER_WINDOW_SECS",
        default_value_t = 10,
        global = true
    )]
    pub breaker_window_secs: u64,
    /// Calls needed in the window before the success-rate rule may open the breaker.
    #[arg(
        long,
        env = "STOCKMESH_BREAKER_MIN_REQUESTS",
        default_value_t = 20,
        global = true
    )]
    pub breaker_min_requests: u32,
    /// Maximum concurrent in-flight calls per upstream (bulkhead); calls beyond it fail at
    /// once with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "STOCKMESH_UPSTREAM_CONCURRENCY",
        default_value_t = 512,
        global = true
    )]
    pub upstream_concurrency: usize,
    /// How often `dns:///` upstream names are resolved again (milliseconds); a connection
    /// failure also triggers a resolution soon after.
    #[arg(
        long,
        env = "STOCKMESH_DISCOVERY_REFRESH_MS",
        default_value_t = 5000,
        global = true
    )]
    pub discovery_refresh_ms: u64,
    /// Name server for `dns:///` upstream names (`ip:port`); the system's
    /// (`/etc/resolv.conf`) when unset.
    #[arg(long, env = "STOCKMESH_DNS_NAMESERVER", global = true)]
    pub dns_nameserver: Option<String>,
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
            retry_backoff_ms: 25,
            retry_backoff_max_ms: 1000,
            retry_budget_percent: 20,
            retry_budget_min_per_sec: 10,
            retry_buffer_bytes: 64 * 1024,
            breaker_failures: 5,
            breaker_open_ms: 5000,
            breaker_max_open_ms: 60_000,
            breaker_success_rate_percent: 50,
            breaker_window_secs: 10,
            breaker_min_requests: 20,
            upstream_concurrency: 512,
            discovery_refresh_ms: 5000,
            dns_nameserver: None,
        }
    }
}

/// A setting that cannot work, named by its environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{name} must be at least {min}, got {value}")]
    TooSmall {
        name: &'static str,
        min: u64,
        value: u64,
    },
    #[error("{name} must be at most {max}, got {value}")]
    TooLarge {
        name: &'static str,
        max: u64,
        value: u64,
    },
    #[error("{name} must be {expected}, got {value:?}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{name} ({value}) must not be below {other} ({other_value})")]
    BelowOther {
        name: &'static str,
        value: u64,
        other: &'static str,
        other_value: u64,
    },
}

/// Checks `min <= value <= max`.
pub(crate) fn check_range(
    name: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<u64, SettingsError> {
    if value < min {
        Err(SettingsError::TooSmall { name, min, value })
    } else if value > max {
        Err(SettingsError::TooLarge { name, max, value })
    } else {
        Ok(value)
    }
}
