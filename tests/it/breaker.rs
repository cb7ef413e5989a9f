//! Upstream killed: UNAVAILABLE, then the breaker opens and fails fast, then one probe
//! closes it when the upstream is back; half-open admits exactly one probe.

use std::time::{Duration, Instant};

use stockmesh::proto::products::v1::GetProductRequest;
use stockmesh::resilience::ResilienceArgs;
use stockmesh_tests::fake::{FakeServer, Mode, Script};
use stockmesh_tests::{drill_settings, products_client};
use tonic::Code;

fn get(id: &str) -> GetProductRequest {
    GetProductRequest { id: id.into() }
}

fn is_breaker_refusal(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && status.message().contains("circuit breaker open")
}

/// Calls until the breaker admits its probe (the open period is time-based, so there is
/// no readiness signal to wait on), returning the first answer that is not a refusal.
async fn first_admitted(
    client: &mut stockmesh::proto::products::v1::product_service_client::ProductServiceClient<
        stockmesh::client::UpstreamChannel,
    >,
) -> Result<tonic::Response<stockmesh::proto::products::v1::GetProductResponse>, tonic::Status> {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_product(get("p")).await {
            Err(s) if is_breaker_refusal(&s) && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_upstream_opens_the_breaker_fails_fast_and_recovers_with_one_probe() {
    let script = Script::default();
    let mut server = FakeServer::start(script.clone()).await;
    let settings = ResilienceArgs {
        // One attempt per call, so that each call is one failure for the breaker.
        retry_max_attempts: 1,
        breaker_failures: 5,
        ..drill_settings()
    };
    let mut client = products_client(&[server.uri()], settings);
    client.get_product(get("p")).await.unwrap();

    server.stop().await;
    for i in 0..5 {
        let err = client.get_product(get("p")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "call {i}: {err:?}");
        assert!(
            !is_breaker_refusal(&err),
            "call {i} refused too early: {err:?}"
        );
        assert!(
            err.message().contains("products"),
            "names the upstream: {err:?}"
        );
    }

    // Open: every call is refused at once, naming the upstream, without a connection
    // attempt.
    let mut took = Vec::new();
    for _ in 0..100 {
        let start = Instant::now();
        let err = client.get_product(get("p")).await.unwrap_err();
        took.push(start.elapsed());
        assert!(is_breaker_refusal(&err), "{err:?}");
        assert!(err.message().contains("upstream products"), "{err:?}");
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(2),
        "median fail-fast {median:?}"
    );
    assert!(
        took[took.len() - 1] < Duration::from_millis(50),
        "slowest {:?}",
        took[took.len() - 1]
    );

    // Back: the first admitted call is the probe; it succeeds, closes the breaker, and
    // only that one call reached the server before it.
    server.restart().await;
    let before = script.gets();
    first_admitted(&mut client).await.unwrap();
    assert_eq!(
        script.gets(),
        before + 1,
        "exactly one probe reached the upstream"
    );
    for _ in 0..20 {
        client.get_product(get("p")).await.unwrap();
    }
    assert_eq!(script.gets(), before + 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_admits_exactly_one_probe_among_100_concurrent_callers() {
    let script = Script::default();
    let mut server = FakeServer::start(script.clone()).await;
    let open = Duration::from_millis(300);
    let settings = ResilienceArgs {
        breaker_failures: 5,
        breaker_open_ms: open.as_millis() as u64,
        ..drill_settings()
    };
    let client = products_client(&[server.uri()], settings);

    server.stop().await;
    let mut refused = false;
    for _ in 0..20 {
        if let Err(e) = client.clone().get_product(get("p")).await
            && is_breaker_refusal(&e)
        {
            refused = true;
            break;
        }
    }
    assert!(refused, "the breaker never opened");
    let opened_at = Instant::now();

    // The upstream is back but slow, so the probe stays in flight while the others ask.
    script.set(Mode::Delay(Duration::from_millis(500)));
    server.restart().await;
    let before = script.gets();
    tokio::time::sleep_until((opened_at + open + Duration::from_millis(50)).into()).await;

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let calls = (0..100).map(|_| {
        let mut client = client.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            let start = Instant::now();
            let res = client.get_product(get("p")).await;
            (res, start.elapsed())
        })
    });
    let results = futures::future::join_all(calls).await;
    let mut ok = 0;
    let mut refused = 0;
    for r in results {
        let (res, took) = r.unwrap();
        match res {
            Ok(_) => {
                ok += 1;
                assert!(
                    took >= Duration::from_millis(450),
                    "the probe waited for the slow upstream"
                );
            }
            Err(e) => {
                assert!(is_breaker_refusal(&e), "{e:?}");
                assert!(took < Duration::from_millis(250), "refusal took {took:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (1, 99));
    assert_eq!(
        script.gets(),
        before + 1,
        "exactly one probe reached the upstream"
    );
}
