//! Several endpoints per upstream: one killed, the others keep serving; all killed, the
//! upstream fails fast naming itself.

use std::time::{Duration, Instant};

use stockmesh::proto::products::v1::GetProductRequest;
use stockmesh::resilience::ResilienceArgs;
use stockmesh_tests::fake::{FakeServer, Script};
use stockmesh_tests::{all_attempts, attempts, drill_settings, products_client, record_metrics};
use tonic::Code;

fn get(id: &str) -> GetProductRequest {
    GetProductRequest { id: id.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_endpoints_one_killed_requests_keep_succeeding() {
    record_metrics();
    let (a, b) = (Script::default(), Script::default());
    let mut server_a = FakeServer::start(a.clone()).await;
    let server_b = FakeServer::start(b.clone()).await;
    let settings = ResilienceArgs {
        breaker_open_ms: 60_000,
        ..drill_settings()
    };
    let client = products_client(&[server_a.uri(), server_b.uri()], settings);

    // Concurrent callers, so that both endpoints carry load.
    let burst = |n: usize| {
        let client = client.clone();
        async move {
            let calls = (0..n).map(|i| {
                let mut client = client.clone();
                tokio::spawn(async move { client.get_product(get(&i.to_string())).await })
            });
            futures::future::join_all(calls).await
        }
    };
    for r in burst(100).await {
        r.unwrap().unwrap();
    }
    assert_eq!(a.gets() + b.gets(), 100);
    assert!(
        a.gets() > 0 && b.gets() > 0,
        "both endpoints served: {} / {}",
        a.gets(),
        b.gets()
    );

    // Every call so far was one successful attempt on the endpoint that served it.
    let (uri_a, uri_b) = (server_a.uri(), server_b.uri());
    assert_eq!(attempts(&uri_a, "success"), a.gets() as u64);
    assert_eq!(attempts(&uri_b, "success"), b.gets() as u64);
    assert_eq!(all_attempts(&uri_a) + all_attempts(&uri_b), 100);

    server_a.stop().await;
    let b_before = b.gets();
    let a_attempts_before = all_attempts(&uri_a);
    for _ in 0..5 {
        for r in burst(40).await {
            r.unwrap()
                .expect("a call failed although one endpoint is up");
        }
    }
    // B served each of the 200 calls exactly once; every attempt sent to the dead A
    // failed and was retried exactly once, on B.
    assert_eq!(b.gets() - b_before, 200, "B served every call once");
    let a_failed = attempts(&uri_a, "failure");
    assert_eq!(
        all_attempts(&uri_a) - a_attempts_before,
        a_failed,
        "nothing succeeded on the dead endpoint"
    );
    assert_eq!(
        all_attempts(&uri_b),
        b.gets() as u64,
        "B's attempts all arrived"
    );
    assert_eq!(
        all_attempts(&uri_a) + all_attempts(&uri_b),
        100 + 200 + a_failed,
        "one attempt per call, plus one retry per failure on A"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_dead_fails_fast_naming_the_upstream() {
    let mut server_a = FakeServer::start(Script::default()).await;
    let mut server_b = FakeServer::start(Script::default()).await;
    let settings = ResilienceArgs {
        breaker_open_ms: 60_000,
        ..drill_settings()
    };
    let mut client = products_client(&[server_a.uri(), server_b.uri()], settings);
    client.get_product(get("p")).await.unwrap();
    server_a.stop().await;
    server_b.stop().await;

    let mut ejected = None;
    for _ in 0..10 {
        let err = client.get_product(get("p")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        if err.message().contains("every endpoint") {
            ejected = Some(err);
            break;
        }
    }
    let err = ejected.expect("the upstream never failed fast");
    assert!(err.message().contains("upstream products"), "{err:?}");
    let start = Instant::now();
    for _ in 0..100 {
        let err = client.get_product(get("p")).await.unwrap_err();
        assert!(err.message().contains("every endpoint"), "{err:?}");
    }
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
}
