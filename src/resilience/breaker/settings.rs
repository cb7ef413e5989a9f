//! The breaker's settings (validated from [`ResilienceArgs`]) and its open periods.

use std::time::Duration;

use crate::resilience::args::{ResilienceArgs, SettingsError, check_range};

/// Validated breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// First open period.
    pub open: Duration,
    /// Longest open period.
    pub max_open: Duration,
    /// Success rate (0..=1) below which the breaker opens; `None` disables the rule.
    pub success_rate: Option<f64>,
    /// Window of the success-rate rule (whole seconds, as failsafe measures it).
    pub window: Duration,
    /// Calls in the window before the success-rate rule applies.
    pub min_requests: u32,
}

impl BreakerSettings {
    pub fn try_new(args: &ResilienceArgs) -> Result<Self, SettingsError> {
        let day_ms = 24 * 3600 * 1000;
        let failures = check_range(
            "STOCKMESH_BREAKER_FAILURES",
            args.breaker_failures.into(),
            1,
            1_000_000,
        )?;
        let open = check_range("STOCKMESH_BREAKER_OPEN_MS", args.breaker_open_ms, 1, day_ms)?;
        let max_open = check_range(
            "STOCKMESH_BREAKER_MAX_OPEN_MS",
            args.breaker_max_open_ms,
            1,
            day_ms,
        )?;
        if max_open < open {
            return Err(SettingsError::BelowOther {
                name: "STOCKMESH_BREAKER_MAX_OPEN_MS",
                value: max_open,
                other: "STOCKMESH_BREAKER_OPEN_MS",
                other_value: open,
            });
        }
        let rate = check_range(
            "STOCKMESH_BREAKER_SUCCESS_RATE_PERCENT",
            args.breaker_success_rate_percent.into(),
            0,
            100,
        )?;
        let window = check_range(
            "STOCKMESH_BREAKER_WINDOW_SECS",
            args.breaker_window_secs,
            1,
            3600,
        )?;
        let min_requests = check_range(
            "STOCKMESH_BREAKER_MIN_REQUESTS",
            args.breaker_min_requests.into(),
            1,
            1_000_000,
        )?;
        Ok(Self {
            failures: failures as u32,
            open: Duration::from_millis(open),
            max_open: Duration::from_millis(max_open),
            success_rate: (rate > 0).then(|| rate as f64 / 100.0),
            window: Duration::from_secs(window),
            min_requests: min_requests as u32,
        })
    }
}

// === open periods ===

/// How long the breaker stays open after its `trip`-th consecutive trip (0 for the first):
/// `base · 2^trip`, never more than `max` (and never less than `base` when `base <= max`).
pub fn open_duration(base: Duration, max: Duration, trip: u32) -> Duration {
    let factor = 1u32.checked_shl(trip).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// The open periods of successive trips, as the iterator failsafe's policies take.
#[derive(Debug, Clone)]
pub(super) struct OpenBackoff {
    pub(super) base: Duration,
    pub(super) max: Duration,
    pub(super) trip: u32,
}

impl Iterator for OpenBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = open_duration(self.base, self.max, self.trip);
        self.trip = self.trip.saturating_add(1);
        Some(d)
    }
}
