//! Several endpoints per upstream: one killed, the others keep serving; all killed, the
//! upstream fails fast naming itself.

use std::time::{Duration, Instant};

use stockmesh::proto::products::v1::GetProductRequest;
use stockmesh::resilience::ResilienceArgs;
use stockmesh_tests::fake::{FakeServer, Script};
use stockmesh_tests::{drill_settings, products_client};
use tonic::Code;

fn get(id: &str) -> GetProductRequest {
    GetProductRequest { id: id.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_endpoints_one_killed_requests_keep_succeeding() {
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

    server_a.stop().await;
    let a_before = a.gets();
    for _ in 0..5 {
        for r in burst(40).await {
            r.unwrap()
                .expect("a call failed although one endpoint is up");
        }
    }
    assert_eq!(a.gets(), a_before, "the dead endpoint served nothing");
    assert!(b.gets() >= 300 - a_before);
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
