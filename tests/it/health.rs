//! Health-driven balancing: the client follows each endpoint's `grpc.health.v1` Watch.
//! An endpoint that says NOT_SERVING gets no new calls within 500 ms; one that comes back
//! SERVING gets calls again within 500 ms, even when its breaker was open for a minute.
//!
//! Times are measured from the change to the first (or last) call that shows it, with
//! calls flowing all along; the bound (500 ms) is the issue's, and far above what
//! loopback needs (a watch update arrives in well under a millisecond; a dead endpoint's
//! watch is re-opened every 250 ms at most).

use std::time::{Duration, Instant};

use stockmesh::proto::products::v1::GetProductRequest;
use stockmesh::resilience::ResilienceArgs;
use stockmesh_tests::fake::{FakeServer, Script};
use stockmesh_tests::{drill_settings, products_client};

const BOUND: Duration = Duration::from_millis(500);

fn settings() -> ResilienceArgs {
    // A breaker that would stay open for a minute: only health can bring an endpoint
    // back within the bound.
    ResilienceArgs {
        breaker_open_ms: 60_000,
        breaker_max_open_ms: 60_000,
        ..drill_settings()
    }
}

type Client = stockmesh::proto::products::v1::product_service_client::ProductServiceClient<
    stockmesh::client::UpstreamChannel,
>;

async fn call(client: &mut Client) {
    client
        .get_product(GetProductRequest { id: "p".into() })
        .await
        .unwrap_or_else(|s| panic!("a call failed although an endpoint serves: {s:?}"));
}

/// Calls until `done` says so, at most for `limit`; returns how long it took.
async fn call_until(
    client: &mut Client,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        call(client).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_endpoints_get_no_new_calls_and_serving_ones_get_calls_again() {
    let (a, b) = (Script::with_health().await, Script::with_health().await);
    let _server_a = FakeServer::start(a.clone()).await;
    let _server_b = FakeServer::start(b.clone()).await;
    let mut client = products_client(&[_server_a.uri(), _server_b.uri()], settings());
    call_until(&mut client, Duration::from_secs(10), || {
        a.gets() > 0 && b.gets() > 0
    })
    .await;

    // NOT_SERVING: the last call A gets comes within the bound of the change; after
    // that, none (checked over a few hundred more calls).
    a.set_serving(false).await;
    let changed = Instant::now();
    let mut last_a = (a.gets(), changed);
    while changed.elapsed() < BOUND * 2 {
        call(&mut client).await;
        if a.gets() != last_a.0 {
            last_a = (a.gets(), Instant::now());
        }
    }
    let took = last_a.1 - changed;
    assert!(took < BOUND, "A still got calls {took:?} after NOT_SERVING");
    let frozen = a.gets();
    for _ in 0..300 {
        call(&mut client).await;
    }
    assert_eq!(a.gets(), frozen, "a NOT_SERVING endpoint got new calls");

    // SERVING again: A gets calls within the bound.
    a.set_serving(true).await;
    let took = call_until(&mut client, BOUND, || a.gets() > frozen).await;
    println!(
        "NOT_SERVING → no calls after {:?}; SERVING → calls after {took:?}",
        last_a.1 - changed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_endpoint_gets_calls_at_once_although_its_breaker_opened() {
    let (a, b) = (Script::with_health().await, Script::with_health().await);
    let mut server_a = FakeServer::start(a.clone()).await;
    let _server_b = FakeServer::start(b.clone()).await;
    let mut client = products_client(&[server_a.uri(), _server_b.uri()], settings());
    call_until(&mut client, Duration::from_secs(10), || {
        a.gets() > 0 && b.gets() > 0
    })
    .await;
    // The client's watch on A must be live before A's breaker opens: a first SERVING that
    // arrived late (a loaded machine) would reset the breaker in the middle of the test.
    // A says NOT_SERVING until the client stops calling it (20 calls in a row elsewhere),
    // then SERVING until it is called again: both seen through the watch.
    a.set_serving(false).await;
    let mut quiet = (a.gets(), 0);
    call_until(&mut client, Duration::from_secs(10), || {
        quiet = if a.gets() == quiet.0 {
            (quiet.0, quiet.1 + 1)
        } else {
            (a.gets(), 0)
        };
        quiet.1 >= 20
    })
    .await;
    a.set_serving(true).await;
    let seen = a.gets();
    call_until(&mut client, Duration::from_secs(10), || a.gets() > seen).await;

    // A fails every call with UNAVAILABLE while its health still says SERVING: its
    // breaker opens (for a minute) and calls keep succeeding on B through retries.
    a.fail_next(u32::MAX);
    // Open once A has failed `breaker_failures` attempts in a row (each counted by the
    // fake and recorded by the breaker before the retry on B returns); a fixed number of
    // calls would not do, as how often the balancer picks a failing A depends on timing.
    let failing_from = a.gets();
    let threshold = settings().breaker_failures as usize;
    call_until(&mut client, Duration::from_secs(10), || {
        a.gets() >= failing_from + threshold
    })
    .await;
    let before = a.gets();
    for _ in 0..100 {
        call(&mut client).await;
    }
    assert_eq!(
        a.gets(),
        before,
        "A's breaker is open: a SERVING endpoint that fails gets no calls"
    );

    // A is restarted, healthy, and says SERVING again: its breaker is reset, it takes
    // calls within the bound — not after the minute-long open period.
    a.fail_next(0);
    server_a.stop().await;
    server_a.restart().await;
    let took = call_until(&mut client, BOUND, || a.gets() > before).await;
    println!("restarted endpoint took calls again after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_not_serving_endpoint_still_serves() {
    // Every endpoint draining (a one-replica deploy): calls still go to it rather than
    // failing, since it still answers during its drain delay.
    let a = Script::with_health().await;
    let b = Script::with_health().await;
    let _server_a = FakeServer::start(a.clone()).await;
    let _server_b = FakeServer::start(b.clone()).await;
    let mut client = products_client(&[_server_a.uri(), _server_b.uri()], settings());
    call(&mut client).await;
    a.set_serving(false).await;
    b.set_serving(false).await;
    for _ in 0..50 {
        call(&mut client).await;
    }
    assert!(a.gets() + b.gets() >= 51);
}
