//! Test kit of the whole-mesh tests and fault drills: a controllable fake upstream
//! ([`fake`]), a proxy that loses responses ([`proxy`]), helpers to build the real
//! outbound client stack against them, the benches' load runner ([`bench`]) and the
//! drills' stocked products ([`seed`]).

pub mod bench;
pub mod dns;
pub mod fake;
pub mod proxy;
pub mod seed;

use stockmesh::Target;
use stockmesh::client::{ClientBuilder, UpstreamChannel};
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::resilience::ResilienceArgs;

/// Settings for drills: the defaults with a short breaker open period, so that recovery
/// fits in a test.
pub fn drill_settings() -> ResilienceArgs {
    ResilienceArgs {
        breaker_open_ms: 300,
        ..ResilienceArgs::default()
    }
}

/// The real outbound stack (`ClientBuilder::build`) to `addrs`, as a products upstream.
pub fn channel(addrs: &[String], settings: ResilienceArgs) -> UpstreamChannel {
    ClientBuilder::new(Target::Products, addrs.to_vec(), settings)
        .build()
        .unwrap()
}

/// A generated products client over the real outbound stack.
pub fn products_client(
    addrs: &[String],
    settings: ResilienceArgs,
) -> ProductServiceClient<UpstreamChannel> {
    ProductServiceClient::new(channel(addrs, settings))
}

/// Installs this process's metrics recorder (if no test did yet), so that the outbound
/// stack's counters are kept from now on: call it before building the client a test
/// counts. Counters are per process; the `endpoint` label (a fake's unique address) keeps
/// tests running in parallel apart.
pub fn record_metrics() {
    let _ = stockmesh::metrics::handle();
}

/// Attempts the outbound stack of this process made on `endpoint` (a URI as given to the
/// client) with `outcome` (`success`, `failure`, `neutral`), from
/// `stockmesh_upstream_attempts_total`: what the client sent, counted whether or not
/// anything was listening.
pub fn attempts(endpoint: &str, outcome: &str) -> u64 {
    let text = stockmesh::metrics::render();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("metrics do not parse: {e}"));
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "stockmesh_upstream_attempts_total"
                && s.labels.get("endpoint") == Some(endpoint)
                && s.labels.get("outcome") == Some(outcome)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v as u64,
            _ => 0,
        })
        .sum()
}

/// Every attempt on `endpoint`, whatever its outcome.
pub fn all_attempts(endpoint: &str) -> u64 {
    ["success", "failure", "neutral"]
        .iter()
        .map(|o| attempts(endpoint, o))
        .sum()
}
