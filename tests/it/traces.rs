//! OpenTelemetry traces across the mesh: an OTLP collector started by the test (a tonic
//! `TraceService` from `opentelemetry-proto`) receives the spans of `serve` processes.
//!
//! * One CreateOrder sent through the gateway (REST) is one trace, with spans from the
//!   gateway, orders, products and inventory, each service's server span the child of
//!   its caller's attempt span.
//! * A read the gateway retries (its products upstream is a fake that fails once) shows
//!   each attempt as its own span, numbered, the failed one marked as an error.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use stockmesh::Target;
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::testing::{Backend, TestMesh};
use stockmesh_tests::fake::{FakeServer, Script};
use tokio::process::Command;

use super::process::{Mesh, channel};
use stockmesh_tests::seed::{Stocked, stocked_product};

/// Spans received, with the `service.name` of the process that sent them.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(
                    |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(AnyValue::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    },
                )
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Self::default();
        let svc = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, addr)
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received (spans are exported in batches).
    async fn wait_for<T>(
        &self,
        what: &str,
        mut done: impl FnMut(&[(String, Span)]) -> Option<T>,
    ) -> T {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = done(&self.spans()) {
                return t;
            }
            assert!(
                Instant::now() < give_up,
                "{what}: spans received {:#?}",
                summary(&self.spans())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn summary(spans: &[(String, Span)]) -> Vec<String> {
    spans
        .iter()
        .map(|(svc, s)| {
            format!(
                "{svc} {} trace={} parent={}",
                s.name,
                hex(&s.trace_id),
                hex(&s.parent_span_id)
            )
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref().and_then(|v| v.value.as_ref()))
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

pub(super) async fn rest(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_create_order_is_one_trace_across_the_mesh_and_retries_are_spans() {
    let (collector, collector_addr) = Collector::start().await;
    let mut mesh = Mesh::new(Backend::Sqlite).await;
    mesh.set_env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://{collector_addr}"),
    );
    mesh.set_env("OTEL_BSP_SCHEDULE_DELAY", "100".into());
    mesh.set_env("OTEL_TRACES_SAMPLER", "always_on".into());
    mesh.set_env("STOCKMESH_LOG_FORMAT", "json".into());
    mesh.set_env("RUST_LOG", "warn,stockmesh_gateway::access=info".into());
    for target in Target::ALL {
        mesh.start(target).await;
    }
    let token = AuthServiceClient::new(channel(mesh.addr(Target::Auth)).await)
        .login(LoginRequest {
            email: TestMesh::ADMIN_EMAIL.into(),
            password: TestMesh::ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let Stocked { product, .. } = stocked_product(
        channel(mesh.addr(Target::Products)).await,
        channel(mesh.addr(Target::Inventory)).await,
        &token,
        10,
    )
    .await;

    let (status, body) = rest(
        mesh.addr(Target::Gateway),
        "POST",
        "/v1/orders",
        &token,
        &format!(
            r#"{{"requestId":"traced-1","items":[{{"productId":"{product}","quantity":2}}]}}"#
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The trace of that request: the gateway's server span for POST /v1/orders.
    let (trace, spans) = collector
        .wait_for("the CreateOrder trace from all four processes", |all| {
            let root = all.iter().find(|(svc, s)| {
                svc == "stockmesh-gateway"
                    && s.kind == SERVER
                    && s.name.starts_with("POST /v1/orders")
            })?;
            let trace = root.1.trace_id.clone();
            let spans: Vec<(String, Span)> = all
                .iter()
                .filter(|(_, s)| s.trace_id == trace)
                .cloned()
                .collect();
            let services: HashSet<&str> = spans.iter().map(|(svc, _)| svc.as_str()).collect();
            let want = [
                "stockmesh-gateway",
                "stockmesh-orders",
                "stockmesh-products",
                "stockmesh-inventory",
            ];
            // Each process exports its spans in its own batches, so wait until every
            // span the checks below read has arrived, not just one from each service.
            let server = |svc: &str, method: &str| {
                spans
                    .iter()
                    .any(|(s, span)| s == svc && span.kind == SERVER && span.name.ends_with(method))
            };
            let complete = server("stockmesh-orders", "/CreateOrder")
                && server("stockmesh-products", "/BatchGetProducts")
                && server("stockmesh-inventory", "/Reserve")
                && [
                    "saga.price_snapshot",
                    "saga.insert_intent",
                    "saga.reserve",
                    "saga.pending",
                ]
                .iter()
                .all(|step| {
                    spans
                        .iter()
                        .any(|(s, span)| s == "stockmesh-orders" && span.name == *step)
                });
            // Products answers BatchGetProducts from its cache here (inventory's
            // Restock read the product just before), so its database is not asked.
            let databases = ["stockmesh-orders", "stockmesh-inventory"]
                .iter()
                .all(|svc| {
                    spans
                        .iter()
                        .any(|(s, span)| s == svc && attr(span, "db.system").is_some())
                });
            (want.iter().all(|w| services.contains(w)) && complete && databases)
                .then_some((trace, spans))
        })
        .await;
    assert!(!trace.is_empty());
    // The gateway's JSON access log line for that request carries its trace and span ids.
    let trace_hex = hex(&trace);
    let logs = mesh.logs(Target::Gateway);
    let access: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["route"] == "POST /v1/orders")
        .unwrap_or_else(|| panic!("no JSON access log line for POST /v1/orders:\n{logs}"));
    assert_eq!(access["trace_id"], trace_hex.as_str(), "{access}");
    let root = spans
        .iter()
        .find(|(svc, s)| {
            svc == "stockmesh-gateway" && s.kind == SERVER && s.parent_span_id.is_empty()
        })
        .map(|(_, s)| hex(&s.span_id));
    assert_eq!(access["span_id"].as_str(), root.as_deref(), "{access}");
    // Every server span in a service is the child of an attempt (client) span of its
    // caller: gateway → orders, orders → products and inventory.
    let child_of = |server_svc: &str, method: &str, caller: &str| {
        let server = spans
            .iter()
            .find(|(svc, s)| svc == server_svc && s.kind == SERVER && s.name.ends_with(method))
            .unwrap_or_else(|| panic!("no {server_svc} span for {method}: {:#?}", summary(&spans)));
        let parent = spans
            .iter()
            .find(|(_, s)| s.span_id == server.1.parent_span_id)
            .unwrap_or_else(|| panic!("{method} on {server_svc}: parent not in the trace"));
        assert_eq!(parent.0, caller, "{method}: parent from {caller}");
        assert_eq!(parent.1.kind, CLIENT, "{method}: parent is an attempt span");
        assert!(parent.1.name.ends_with(method), "{}", parent.1.name);
    };
    child_of("stockmesh-orders", "/CreateOrder", "stockmesh-gateway");
    child_of(
        "stockmesh-products",
        "/BatchGetProducts",
        "stockmesh-orders",
    );
    child_of("stockmesh-inventory", "/Reserve", "stockmesh-orders");
    // The saga's steps are spans of orders.
    for step in [
        "saga.price_snapshot",
        "saga.insert_intent",
        "saga.reserve",
        "saga.pending",
    ] {
        assert!(
            spans
                .iter()
                .any(|(svc, s)| svc == "stockmesh-orders" && s.name == step),
            "no {step} span: {:#?}",
            summary(&spans)
        );
    }
    // Database work on the request path is in the trace too (sea-orm's spans).
    for svc in ["stockmesh-orders", "stockmesh-inventory"] {
        assert!(
            spans
                .iter()
                .any(|(s, span)| s == svc && attr(span, "db.system").as_deref() == Some("sqlite")),
            "{svc}: no database span in the trace: {:#?}",
            summary(&spans)
        );
    }

    // Retries as spans: a second gateway whose products upstream fails the first call.
    let script = Script::default();
    let fake = FakeServer::start(script.clone()).await;
    script.fail_next(1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw2: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut gateway2 = Command::new(env!("CARGO_BIN_EXE_stockmesh-drill"))
        .args(["serve", "gateway"])
        .envs(mesh.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("STOCKMESH_GATEWAY_PORT", port.to_string())
        .env("STOCKMESH_PRODUCTS_ADDRS", fake.uri())
        .env("OTEL_SERVICE_NAME", "stockmesh-gateway-retry")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let give_up = Instant::now() + Duration::from_secs(60);
    while let Err(e) = stockmesh::health::wait_serving(
        gw2,
        Target::Gateway.grpc_service(),
        Duration::from_secs(60),
    )
    .await
    {
        assert!(
            Instant::now() < give_up,
            "second gateway did not start: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = rest(gw2, "GET", "/v1/products/p1", &token, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(script.gets(), 2, "one failed attempt, one retry");
    let attempts = collector
        .wait_for("two attempt spans of the retried read", |all| {
            let mut attempts: Vec<&Span> = all
                .iter()
                .filter(|(svc, s)| {
                    svc == "stockmesh-gateway-retry"
                        && s.kind == CLIENT
                        && s.name.ends_with("/GetProduct")
                })
                .map(|(_, s)| s)
                .collect();
            attempts.sort_by_key(|s| attr(s, "stockmesh.attempt"));
            (attempts.len() >= 2).then(|| attempts.into_iter().cloned().collect::<Vec<Span>>())
        })
        .await;
    assert_eq!(
        attr(&attempts[0], "stockmesh.attempt").as_deref(),
        Some("1")
    );
    assert_eq!(
        attr(&attempts[1], "stockmesh.attempt").as_deref(),
        Some("2")
    );
    assert_eq!(attempts[0].trace_id, attempts[1].trace_id, "one trace");
    assert_eq!(
        attempts[0].parent_span_id, attempts[1].parent_span_id,
        "siblings under the request"
    );
    assert_eq!(
        attr(&attempts[0], "rpc.grpc.status_code").as_deref(),
        Some("14")
    );
    assert_eq!(
        attempts[0].status.as_ref().map(|s| s.code),
        Some(2),
        "the failed attempt is an error"
    );
    let _ = gateway2.kill().await;
}
