//! Retry only what is safe and useful: transient UNAVAILABLE on reads is hidden from the
//! caller; business errors are never retried and never open the breaker; writes without
//! an idempotency key are sent once; the budget stops retry storms.

use stockmesh::proto::products::v1::{CreateProductRequest, GetProductRequest};
use stockmesh::resilience::ResilienceArgs;
use stockmesh_tests::fake::{FakeServer, Mode, Script};
use stockmesh_tests::{all_attempts, attempts, drill_settings, products_client, record_metrics};
use tonic::Code;

fn get(id: &str) -> GetProductRequest {
    GetProductRequest { id: id.into() }
}

fn create(name: &str) -> CreateProductRequest {
    CreateProductRequest {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn business_errors_never_open_the_breaker_and_are_never_retried() {
    let script = Script::default();
    let server = FakeServer::start(script.clone()).await;
    let settings = ResilienceArgs {
        breaker_failures: 3,
        breaker_min_requests: 5,
        breaker_window_secs: 1,
        ..drill_settings()
    };
    let mut client = products_client(&[server.uri()], settings);

    let mut sent = 0;
    for code in [
        Code::NotFound,
        Code::FailedPrecondition,
        Code::InvalidArgument,
        Code::AlreadyExists,
    ] {
        script.set(Mode::Fail(code));
        for _ in 0..150 {
            let err = client.get_product(get("p")).await.unwrap_err();
            assert_eq!(err.code(), code, "{err:?}");
            let err = client.create_product(create("p")).await.unwrap_err();
            assert_eq!(err.code(), code, "{err:?}");
            sent += 1;
        }
    }
    // Every call reached the server exactly once: never refused, never repeated.
    assert_eq!(script.gets(), sent);
    assert_eq!(script.creates(), sent);
    script.set(Mode::Ok);
    client.get_product(get("p")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_unavailable_is_retried_for_reads_only() {
    let script = Script::default();
    let server = FakeServer::start(script.clone()).await;
    let mut client = products_client(&[server.uri()], drill_settings());

    // Two failures then success: the read succeeds on its third attempt.
    script.fail_next(2);
    client.get_product(get("p")).await.unwrap();
    assert_eq!(script.gets(), 3);

    // Always failing: the read gives up after STOCKMESH_RETRY_MAX_ATTEMPTS (3).
    script.set(Mode::Fail(Code::Unavailable));
    let err = client.get_product(get("p")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(script.gets(), 6);

    // A write without an idempotency key may have been acted on: sent once.
    let err = client.create_product(create("p")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(script.creates(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_are_retried_when_the_request_never_left() {
    // Connection refused: nothing reached the server, so even a write is safe to resend,
    // and it succeeds once the server is up (here: never, so all attempts are refused).
    // Nothing listens, so the client's own per-attempt counter is what counts.
    record_metrics();
    let script = Script::default();
    let mut server = FakeServer::start(script.clone()).await;
    let addr = server.uri();
    server.stop().await;
    let settings = ResilienceArgs {
        breaker_failures: 100,
        ..drill_settings()
    };
    let mut client = products_client(std::slice::from_ref(&addr), settings);
    let start = std::time::Instant::now();
    let err = client.create_product(create("p")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("cannot connect"), "{err:?}");
    // Exactly STOCKMESH_RETRY_MAX_ATTEMPTS (3) attempts, each refused.
    assert_eq!(attempts(&addr, "failure"), 3);
    assert_eq!(all_attempts(&addr), 3);
    // Three attempts means two backoff waits of at least 25 and 50 ms.
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(75),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_budget_stops_retry_storms() {
    let script = Script::default();
    script.set(Mode::Fail(Code::Unavailable));
    let server = FakeServer::start(script.clone()).await;
    let settings = ResilienceArgs {
        retry_budget_percent: 20,
        retry_budget_min_per_sec: 0,
        retry_backoff_ms: 1,
        retry_backoff_max_ms: 2,
        breaker_failures: 1_000_000,
        breaker_success_rate_percent: 0,
        ..drill_settings()
    };
    record_metrics();
    let mut client = products_client(&[server.uri()], settings);
    for _ in 0..200 {
        let err = client.get_product(get("p")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
    // Each call deposits 1 and a retry costs 5 (20 %), with no floor: calls run one after
    // another within the budget's 10 s window, so every fifth call gets exactly one retry
    // (its second would find the budget empty). 200 calls → 40 retries, where retries off
    // would give 200 attempts and an unbounded retry 600.
    let calls = script.gets();
    assert_eq!(calls, 240, "attempts that reached the server");
    assert_eq!(attempts(&server.uri(), "failure"), 240, "attempts sent");
}
