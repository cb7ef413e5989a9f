//! Slow upstream: calls end with DEADLINE_EXCEEDED at their deadline, retries included,
//! and the deadline travels: the server is told the time left, and a handler's outbound
//! calls inherit what is left of its own caller's deadline.

use std::time::{Duration, Instant};

use stockmesh::client::{UpstreamChannel, with_deadline_from};
use stockmesh::proto::products::v1 as pb;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::proto::products::v1::product_service_server::ProductServiceServer;
use stockmesh::resilience::ResilienceArgs;
use stockmesh::resilience::deadline::InboundDeadlineLayer;
use stockmesh_tests::fake::{FakeServer, Mode, Script};
use stockmesh_tests::{drill_settings, products_client};
use tonic::{Code, Request, Response, Status};

fn get(id: &str) -> pb::GetProductRequest {
    pb::GetProductRequest { id: id.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_upstream_ends_at_the_default_deadline() {
    let script = Script::default();
    script.set(Mode::Delay(Duration::from_secs(5)));
    let server = FakeServer::start(script.clone()).await;
    let settings = ResilienceArgs {
        upstream_timeout_ms: 300,
        ..drill_settings()
    };
    let mut client = products_client(&[server.uri()], settings);

    let start = Instant::now();
    let err = client.get_product(get("p")).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(took >= Duration::from_millis(300), "ended early: {took:?}");
    assert!(
        took < Duration::from_millis(800),
        "outlived its deadline: {took:?}"
    );
    // The server was told the deadline, and DEADLINE_EXCEEDED is never retried.
    let told = script.last_timeout().expect("grpc-timeout sent");
    assert!(
        told <= Duration::from_millis(300) && told > Duration::from_millis(200),
        "{told:?}"
    );
    assert_eq!(script.gets(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_callers_timeout_wins_over_the_default() {
    let script = Script::default();
    script.set(Mode::Delay(Duration::from_secs(5)));
    let server = FakeServer::start(script.clone()).await;
    let mut client = products_client(&[server.uri()], drill_settings());

    let mut req = Request::new(get("p"));
    req.set_timeout(Duration::from_millis(150));
    let start = Instant::now();
    let err = client.get_product(req).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(650),
        "{took:?}"
    );
    assert!(script.last_timeout().unwrap() <= Duration::from_millis(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_never_outlive_the_deadline() {
    // Every attempt fails at once with UNAVAILABLE (retryable), and the backoff is long:
    // the call must give up before its deadline rather than sleep past it.
    let script = Script::default();
    let server = FakeServer::start(script.clone()).await;
    let settings = ResilienceArgs {
        upstream_timeout_ms: 400,
        retry_max_attempts: 10,
        retry_backoff_ms: 100,
        retry_backoff_max_ms: 1000,
        breaker_failures: 100,
        ..drill_settings()
    };
    let mut client = products_client(&[server.uri()], settings);
    // Connected first: on a loaded machine the lazy connect alone could eat the deadline
    // and turn the answer into DEADLINE_EXCEEDED, which is not what this test is about.
    client.get_product(get("p")).await.unwrap();
    let connected = script.gets();
    script.set(Mode::Fail(Code::Unavailable));

    let start = Instant::now();
    let err = client.get_product(get("p")).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        took < Duration::from_millis(400),
        "outlived its deadline: {took:?}"
    );
    // Waits of 100–200 ms then 200–400 ms: two or three attempts fit, never ten.
    let attempts = script.gets() - connected;
    assert!((2..=3).contains(&attempts), "{attempts} attempts");

    // A slow answer after retries still ends at the deadline.
    script.fail_next(1);
    script.set(Mode::Delay(Duration::from_secs(5)));
    let start = Instant::now();
    let err = client.get_product(get("p")).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(900),
        "{took:?}"
    );
}

/// A front service whose `GetProduct` calls the fake behind it through the real stack
/// and answers with the `grpc-timeout` the fake received (in the product name).
#[derive(Clone)]
struct Front {
    upstream: ProductServiceClient<UpstreamChannel>,
    script: Script,
    explicit: bool,
}

stockmesh_tests::product_service!(Front {
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let outbound = if self.explicit {
            with_deadline_from(&request, Request::new(get("inner")))
        } else {
            Request::new(get("inner"))
        };
        self.upstream.clone().get_product(outbound).await?;
        let told = self.script.last_timeout().map(|d| d.as_micros()).unwrap_or(0);
        Ok(Response::new(pb::GetProductResponse {
            product: Some(pb::Product {
                name: told.to_string(),
                ..Default::default()
            }),
        }))
    }

    async fn create_product(
        &self,
        _: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        Err(Status::unimplemented("front"))
    }
});

/// Starts a [`Front`] (with or without [`InboundDeadlineLayer`]) and returns the
/// `grpc-timeout` the fake behind it received when called with `timeout`.
async fn propagated(with_layer: bool, explicit: bool, timeout: Duration) -> Duration {
    let script = Script::default();
    let back = FakeServer::start(script.clone()).await;
    let front = Front {
        upstream: products_client(&[back.uri()], drill_settings()),
        script,
        explicit,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let svc = ProductServiceServer::new(front);
    let server = if with_layer {
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(InboundDeadlineLayer)
                .add_service(svc)
                .serve_with_incoming(incoming),
        )
    } else {
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming),
        )
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let mut client = ProductServiceClient::new(channel);
    let mut req = Request::new(get("outer"));
    req.set_timeout(timeout);
    let told = client
        .get_product(req)
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap()
        .name;
    server.abort();
    Duration::from_micros(told.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handlers_inherit_the_inbound_deadline() {
    // The default for the outbound call is 2 s; the inbound caller allows 700 ms.
    let told = propagated(true, false, Duration::from_millis(700)).await;
    assert!(
        told > Duration::ZERO && told <= Duration::from_millis(700),
        "{told:?}"
    );
    // Without the server layer and without `with_deadline_from`: the default applies.
    let told = propagated(false, false, Duration::from_millis(700)).await;
    assert!(told > Duration::from_millis(1500), "{told:?}");
    // `with_deadline_from` alone copies the inbound grpc-timeout.
    let told = propagated(false, true, Duration::from_millis(700)).await;
    assert!(
        told > Duration::ZERO && told <= Duration::from_millis(700),
        "{told:?}"
    );
}
