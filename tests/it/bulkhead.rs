//! The bulkhead: at most `STOCKMESH_UPSTREAM_CONCURRENCY` calls in flight per upstream;
//! one more fails at once with RESOURCE_EXHAUSTED and never reaches the upstream (and a
//! refusal is neither retried nor held against the upstream's breaker).

use std::time::{Duration, Instant};

use stockmesh::proto::products::v1::GetProductRequest;
use stockmesh::resilience::ResilienceArgs;
use stockmesh_tests::fake::{FakeServer, Mode, Script};
use stockmesh_tests::{drill_settings, products_client};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_beyond_the_concurrency_limit_are_shed_at_once() {
    let script = Script::default();
    let server = FakeServer::start(script.clone()).await;
    let settings = ResilienceArgs {
        upstream_concurrency: 2,
        breaker_failures: 1,
        ..drill_settings()
    };
    let client = products_client(&[server.uri()], settings);
    script.set(Mode::Delay(Duration::from_millis(800)));

    // Two slow calls hold both slots...
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(
                async move { c.get_product(GetProductRequest { id: i.to_string() }).await },
            )
        })
        .collect();
    let start = Instant::now();
    while script.gets() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the slow calls never arrived"
        );
        tokio::task::yield_now().await;
    }
    // ...so the next ones are shed at once, without reaching the upstream.
    for _ in 0..5 {
        let mut c = client.clone();
        let t = Instant::now();
        let err = c
            .get_product(GetProductRequest { id: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "shed at once, not after waiting"
        );
    }
    assert_eq!(script.gets(), 2, "shed calls never reached the upstream");
    for r in futures::future::join_all(slow).await {
        r.unwrap().expect("the calls holding the slots succeed");
    }

    // The refusals did not count against the upstream: with one failure enough to open
    // it, the breaker is still closed and calls go through.
    script.set(Mode::Ok);
    let mut c = client.clone();
    c.get_product(GetProductRequest { id: "after".into() })
        .await
        .expect("the breaker stayed closed");
    assert_eq!(script.gets(), 3);
}
