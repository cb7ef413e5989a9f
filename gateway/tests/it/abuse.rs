//! Abuse limits at the edge: bodies capped while they stream (no `Content-Length`),
//! bounded metric labels, rate limits on the gateway's own gRPC services, and client
//! addresses behind trusted proxies.

use std::convert::Infallible;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http::{Method, Request};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stockmesh::proto::products::v1 as pb;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::testing::Backend;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{Env, Resp, grpc_web_frames};

/// The body cap of the body tests.
const LIMIT: usize = 1024;

type StreamedBody = UnsyncBoxBody<Bytes, Infallible>;

/// A body sent in `chunks` (a little apart, so they arrive as separate frames), without a
/// length; with `then_hang` it never ends.
fn streamed(chunks: Vec<Bytes>, then_hang: bool) -> StreamedBody {
    let chunks = futures::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, Infallible>(Frame::data(c))
    });
    let body = if then_hang {
        chunks.chain(futures::stream::pending()).boxed()
    } else {
        chunks.boxed()
    };
    BodyExt::boxed_unsync(StreamBody::new(body))
}

/// Sends `body` to the gateway over h2c (`h2`) or HTTP/1.1 (chunked).
async fn send_streamed(
    env: &Env,
    h2: bool,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: StreamedBody,
) -> Resp {
    let client: Client<HttpConnector, StreamedBody> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", env.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).unwrap();
    let call = async {
        let resp = client.request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.unwrap();
        let mut headers = parts.headers;
        if let Some(t) = collected.trailers() {
            headers.extend(t.clone());
        }
        Resp {
            status: parts.status,
            headers,
            body: collected.to_bytes(),
        }
    };
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within 20 s"))
}

fn prefix(len: u32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0);
    b.put_u32(len);
    b.freeze()
}

fn pieces(total: usize, size: usize) -> Vec<Bytes> {
    (0..total.div_ceil(size))
        .map(|i| Bytes::from(vec![0u8; size.min(total - i * size)]))
        .collect()
}

#[track_caller]
fn assert_too_large(resp: &Resp, what: &str) {
    assert_eq!(resp.status.as_u16(), 200, "{what}: {resp:?}");
    assert_eq!(resp.header("grpc-status"), Some("8"), "{what}: {resp:?}");
    let msg = resp.header("grpc-message").unwrap_or_default();
    assert!(
        msg.contains("exceeds") && msg.contains("1024"),
        "{what}: {msg}"
    );
}

/// gRPC and gRPC-web bodies without `Content-Length` are cut off at the limit
/// (RESOURCE_EXHAUSTED), a declared message length over it at once; chunked REST bodies
/// get 413. None of it opens the upstream's breaker.
pub async fn streamed_bodies_are_capped(backend: Backend) {
    let env = Env::start_with(backend, |c| c.gateway.max_body_bytes = LIMIT).await;
    bodies_are_capped(&env, false).await;
}

/// The same with retries off, so the body goes straight to the HTTP/2 client instead of
/// the retry layer's buffer: the refusal must still not count against the upstream
/// (the kernel classifies a `Status` in a transport error's chain as neutral).
pub async fn streamed_bodies_are_capped_without_retry(backend: Backend) {
    let env = Env::start_with(backend, |c| {
        c.gateway.max_body_bytes = LIMIT;
        c.resilience.retry_max_attempts = 1;
    })
    .await;
    bodies_are_capped(&env, true).await;
}

/// `streams_through`: no retry buffer sits in between, so an upstream may answer a
/// complete (here malformed) first message before the rest of the body is refused.
async fn bodies_are_capped(env: &Env, streams_through: bool) {
    let get = "/stockmesh.products.v1.ProductService/GetProduct";
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];

    // More refusals than the breaker's failure threshold.
    let rounds = env.mesh.config.resilience.breaker_failures as usize + 2;
    for _ in 0..rounds {
        // A message declared larger than the limit, whose bytes never come.
        let resp = send_streamed(
            env,
            true,
            Method::POST,
            get,
            &grpc,
            streamed(vec![prefix(4096)], true),
        )
        .await;
        assert_too_large(&resp, "declared length, h2c");

        // Many small messages, streamed: only the running count catches them.
        let resp = send_streamed(
            env,
            true,
            Method::POST,
            get,
            &grpc,
            streamed(pieces(4 * LIMIT, 256), false),
        )
        .await;
        assert_too_large(&resp, "counted, h2c");
    }

    // gRPC-web over chunked HTTP/1.1.
    let mut chunks = vec![prefix(200)];
    chunks.extend(pieces(200, 100));
    chunks.extend(pieces(4 * LIMIT, 256));
    let resp = send_streamed(
        env,
        false,
        Method::POST,
        get,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
        ],
        streamed(chunks, false),
    )
    .await;
    assert_eq!(resp.status.as_u16(), 200, "{resp:?}");
    let (_, trailers) = grpc_web_frames(resp.body.clone());
    let status = resp.header("grpc-status").map(str::to_string).or_else(|| {
        trailers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    });
    let allowed: &[&str] = if streams_through {
        &["8", "13"]
    } else {
        &["8"]
    };
    assert!(
        status.as_deref().is_some_and(|s| allowed.contains(&s)),
        "gRPC-web: {resp:?}"
    );

    // REST, chunked: 413.
    let json = serde_json::json!({
        "sku": "BIG",
        "name": "big",
        "description": "x".repeat(4 * LIMIT),
        "priceCents": "1",
    })
    .to_string();
    let chunks: Vec<Bytes> = json
        .as_bytes()
        .chunks(256)
        .map(Bytes::copy_from_slice)
        .collect();
    let auth = format!("Bearer {}", env.admin);
    let resp = send_streamed(
        env,
        false,
        Method::POST,
        "/v1/products",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        streamed(chunks, false),
    )
    .await;
    resp.assert_error(413, 8);

    // The upstream was never blamed: its breaker is closed and calls go through.
    let mut products = ProductServiceClient::new(env.channel().await);
    products
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap();
    let err = products
        .get_product(pb::GetProductRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// `route` label → summed `gateway_requests_total` over that route's series.
fn requests_by_route(metrics: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("gateway_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let route = labels
            .split("route=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string();
        out.push((route, value.trim().parse().unwrap_or(0.0)));
    }
    out
}

async fn metrics(env: &Env) -> Vec<(String, f64)> {
    let resp = env.get("/metrics", None).await;
    assert!(resp.status.is_success());
    requests_by_route(&String::from_utf8_lossy(&resp.body))
}

fn unknown_total(series: &[(String, f64)]) -> f64 {
    series
        .iter()
        .filter(|(r, _)| r == "unknown")
        .map(|(_, v)| v)
        .sum()
}

/// Random method names, on the gateway's own health service and on a service nobody has,
/// all count as `unknown`: none of them becomes a label.
pub async fn metric_labels_stay_bounded(backend: Backend) {
    let env = Env::start(backend).await;
    let before = unknown_total(&metrics(&env).await);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut paths = Vec::new();
    for i in 0..50 {
        paths.push(format!("/grpc.health.v1.Health/Probe{tag}x{i}"));
        paths.push(format!("/no.such.Service{tag}x{i}/Call"));
    }
    for path in &paths {
        let resp = env.h2c(path, &[], prefix(0)).await;
        assert_eq!(resp.header("grpc-status"), Some("12"), "{path}: {resp:?}");
    }
    // A real local method keeps its label.
    let mut health = HealthClient::new(env.channel().await);
    health.check(HealthCheckRequest::default()).await.unwrap();

    // Metrics are recorded when the response body is dropped: allow a moment.
    let mut series = metrics(&env).await;
    for _ in 0..40 {
        if unknown_total(&series) >= before + paths.len() as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        series = metrics(&env).await;
    }
    for (route, _) in &series {
        assert!(!route.contains(&tag), "raw path became a label: {route}");
    }
    let after = unknown_total(&series);
    assert!(
        after >= before + paths.len() as f64,
        "unknown series went from {before} to {after}"
    );
    assert!(
        series
            .iter()
            .any(|(r, _)| r == "/grpc.health.v1.Health/Check"),
        "{series:?}"
    );
}

/// The gateway's own health (and reflection) are rate limited like proxied calls.
pub async fn health_calls_are_rate_limited(backend: Backend) {
    let env = Env::start_with(backend, |c| {
        c.gateway.rate_limit_rps = 1;
        c.gateway.rate_limit_burst = 3;
    })
    .await;
    let mut health = HealthClient::new(env.channel().await);
    let mut exhausted = None;
    for _ in 0..10 {
        match health.check(HealthCheckRequest::default()).await {
            Ok(_) => {}
            Err(s) => {
                exhausted = Some(s);
                break;
            }
        }
    }
    let status = exhausted.expect("health checks beyond the burst are refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
}

/// Sends anonymous GETs as `xff` until one is refused; returns how many passed.
async fn passes_until_limited(env: &Env, xff: &str) -> usize {
    for n in 0..10 {
        let resp = env
            .send(Method::GET, "/v1/products", &[("x-forwarded-for", xff)], "")
            .await;
        match resp.status.as_u16() {
            200 => {}
            429 => return n,
            other => panic!("{xff}: unexpected {other}"),
        }
    }
    panic!("{xff}: never limited");
}

async fn one_passes(env: &Env, xff: &str) -> bool {
    let resp = env
        .send(Method::GET, "/v1/products", &[("x-forwarded-for", xff)], "")
        .await;
    match resp.status.as_u16() {
        200 => true,
        429 => false,
        other => panic!("{xff}: unexpected {other}"),
    }
}

/// Behind a trusted proxy (127.0.0.1 here), clients named in `X-Forwarded-For` get their
/// own buckets (IPv6 per /64), and a spoofed left part changes nothing; without the
/// setting the header is ignored and everyone shares the peer's bucket.
pub async fn trusted_proxies_separate_forwarded_clients(backend: Backend) {
    fn limits(c: &mut stockmesh::Config) {
        c.gateway.rate_limit_rps = 1;
        c.gateway.rate_limit_burst = 2;
    }
    let env = Env::start_with(backend, |c| {
        limits(c);
        c.gateway.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    passes_until_limited(&env, "203.0.113.1").await;
    // The rightmost untrusted entry counts, whatever the client put on the left.
    assert!(!one_passes(&env, "203.0.113.2, 203.0.113.1").await);
    assert!(one_passes(&env, "203.0.113.2").await, "own bucket");
    passes_until_limited(&env, "2001:db8:0:1::1").await;
    assert!(!one_passes(&env, "2001:db8:0:1::ffff").await, "same /64");
    assert!(one_passes(&env, "2001:db8:0:2::1").await, "other /64");
    drop(env);

    let env = Env::start_with(backend, limits).await;
    passes_until_limited(&env, "203.0.113.1").await;
    assert!(
        !one_passes(&env, "203.0.113.2").await,
        "untrusted peer: X-Forwarded-For ignored, one shared bucket"
    );
}
