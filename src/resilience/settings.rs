//! Settings of the outbound resilience stack, shared by every upstream, with defaults and
//! `STOCKMESH_*` environment overrides.
//!
//! [`ResilienceArgs`] is what clap reads; [`Settings::try_new`] validates it once, when a
//! client is built, into the typed settings each layer takes. A bad value (a zero
//! deadline, a success rate above 100 %, a backoff cap below its start…) therefore fails
//! at start-up with a [`SettingsError`] naming the setting, never in the middle of a call.

use std::time::Duration;

use super::args::{ResilienceArgs, SettingsError, check_range};
use super::breaker::BreakerSettings;
use super::retry::RetrySettings;

/// Validated settings of the whole stack, one part per layer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Deadline of a call whose caller set none.
    pub default_deadline: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    pub retry: RetrySettings,
    pub breaker: BreakerSettings,
    /// In-flight calls allowed per upstream.
    pub concurrency: usize,
    pub discovery: DiscoverySettings,
}

/// How `dns:///` upstream names are resolved ([`crate::discovery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// Time between two resolutions of a name.
    pub refresh: Duration,
    /// The name server to ask; the system's when `None`.
    pub nameserver: Option<std::net::SocketAddr>,
}

impl DiscoverySettings {
    pub fn try_new(args: &ResilienceArgs) -> Result<Self, SettingsError> {
        let refresh = check_range(
            "STOCKMESH_DISCOVERY_REFRESH_MS",
            args.discovery_refresh_ms,
            10,
            24 * 3600 * 1000,
        )?;
        let nameserver = match args.dns_nameserver.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(s.parse().map_err(|_| SettingsError::Invalid {
                name: "STOCKMESH_DNS_NAMESERVER",
                value: s.to_string(),
                expected: "an ip:port address, e.g. 10.96.0.10:53",
            })?),
        };
        Ok(Self {
            refresh: Duration::from_millis(refresh),
            nameserver,
        })
    }
}

impl Settings {
    /// Validates every setting; the first bad one is the error.
    pub fn try_new(args: &ResilienceArgs) -> Result<Self, SettingsError> {
        let day_ms = 24 * 3600 * 1000;
        let default_deadline = check_range(
            "STOCKMESH_UPSTREAM_TIMEOUT_MS",
            args.upstream_timeout_ms,
            1,
            day_ms,
        )?;
        let connect_timeout = check_range(
            "STOCKMESH_CONNECT_TIMEOUT_MS",
            args.connect_timeout_ms,
            1,
            day_ms,
        )?;
        let concurrency = check_range(
            "STOCKMESH_UPSTREAM_CONCURRENCY",
            args.upstream_concurrency as u64,
            1,
            // tokio's semaphore limit, comfortably.
            1 << 28,
        )?;
        Ok(Self {
            default_deadline: Duration::from_millis(default_deadline),
            connect_timeout: Duration::from_millis(connect_timeout),
            retry: RetrySettings::try_new(args)?,
            breaker: BreakerSettings::try_new(args)?,
            concurrency: concurrency as usize,
            discovery: DiscoverySettings::try_new(args)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = Settings::try_new(&ResilienceArgs::default()).unwrap();
        assert_eq!(s.default_deadline, Duration::from_secs(2));
        assert_eq!(s.concurrency, 512);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let args = ResilienceArgs {
            upstream_timeout_ms: 0,
            ..ResilienceArgs::default()
        };
        let err = Settings::try_new(&args).unwrap_err();
        assert!(
            err.to_string().contains("STOCKMESH_UPSTREAM_TIMEOUT_MS"),
            "{err}"
        );

        let args = ResilienceArgs {
            breaker_success_rate_percent: 101,
            ..ResilienceArgs::default()
        };
        let err = Settings::try_new(&args).unwrap_err();
        assert!(
            err.to_string()
                .contains("STOCKMESH_BREAKER_SUCCESS_RATE_PERCENT"),
            "{err}"
        );

        let args = ResilienceArgs {
            retry_backoff_max_ms: 10,
            ..ResilienceArgs::default()
        };
        assert!(matches!(
            Settings::try_new(&args),
            Err(SettingsError::BelowOther { .. })
        ));

        let args = ResilienceArgs {
            dns_nameserver: Some("not-an-address".into()),
            ..ResilienceArgs::default()
        };
        let err = Settings::try_new(&args).unwrap_err().to_string();
        assert!(err.contains("STOCKMESH_DNS_NAMESERVER"), "{err}");
        let args = ResilienceArgs {
            dns_nameserver: Some("127.0.0.1:5353".into()),
            ..ResilienceArgs::default()
        };
        let s = Settings::try_new(&args).unwrap();
        assert_eq!(
            s.discovery.nameserver,
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(s.discovery.refresh, Duration::from_secs(5));
    }
}
