//! Test kit of the whole-mesh tests and fault drills: a controllable fake upstream
//! ([`fake`]), a proxy that loses responses ([`proxy`]), helpers to build the real
//! outbound client stack against them, and the benches' load runner ([`bench`]).

pub mod bench;
pub mod dns;
pub mod fake;
pub mod proxy;

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
