//! Every `serve <service>` process exports Prometheus metrics on its admin port. After a
//! known sequence of calls, the server-side counters and histogram counts parsed from
//! `/metrics` (by a real text-format parser) equal what was sent; an upstream breaker
//! opened by an outage shows in the caller's gauge.

use std::collections::HashMap;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_parse::{Sample, Scrape, Value};
use stockmesh::Target;
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::proto::products::v1::{CreateProductRequest, GetProductRequest};
use stockmesh::testing::{Backend, TestMesh, with_token};
use tonic::Code;

use super::process::{Mesh, channel};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// `GET http://addr/path`: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap()
        .samples
}

/// The value of the sample named `metric` whose labels include `labels`.
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            // A histogram's count is its +Inf bucket.
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

const PRODUCTS: &str = "stockmesh.products.v1.ProductService";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_processes_export_golden_signals_and_breaker_state() {
    let mut mesh = Mesh::new(Backend::Sqlite).await;
    let ports: HashMap<Target, u16> = Target::SERVICES.iter().map(|t| (*t, free_port())).collect();
    for (target, port) in &ports {
        mesh.set_env(
            &format!("STOCKMESH_{}_METRICS_PORT", target.name().to_uppercase()),
            port.to_string(),
        );
    }
    let admin = |t: Target| SocketAddr::from(([127, 0, 0, 1], ports[&t]));
    for target in [Target::Auth, Target::Products, Target::Inventory] {
        mesh.start(target).await;
    }

    let (status, body) = get(admin(Target::Products), "/healthz").await;
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");

    let mut auth = AuthServiceClient::new(channel(mesh.addr(Target::Auth)).await);
    let wrong = auth
        .login(LoginRequest {
            email: TestMesh::ADMIN_EMAIL.into(),
            password: "not-the-password".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let token = auth
        .login(LoginRequest {
            email: TestMesh::ADMIN_EMAIL.into(),
            password: TestMesh::ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let mut products = ProductServiceClient::new(channel(mesh.addr(Target::Products)).await);
    let id = products
        .create_product(with_token(
            CreateProductRequest {
                sku: "SKU-METRICS".into(),
                name: "metrics".into(),
                price_cents: 100,
                currency: "USD".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap()
        .id;
    // A known sequence: 4 found, 3 not found, 2 invalid.
    for (n, id, code) in [
        (4, id.as_str(), Code::Ok),
        (3, "01890000-0000-7000-8000-000000000000", Code::NotFound),
        (2, "", Code::InvalidArgument),
    ] {
        for _ in 0..n {
            let got = products
                .get_product(GetProductRequest { id: id.to_string() })
                .await
                .map(|_| ());
            assert_eq!(got.map_err(|s| s.code()).err().unwrap_or(Code::Ok), code);
        }
    }

    let samples = scrape(admin(Target::Products)).await;
    let handled = |method: &str, code: &str| {
        value(
            &samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", PRODUCTS),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    };
    assert_eq!(handled("GetProduct", "OK"), Some(4.0));
    assert_eq!(handled("GetProduct", "NotFound"), Some(3.0));
    assert_eq!(handled("GetProduct", "InvalidArgument"), Some(2.0));
    assert_eq!(handled("CreateProduct", "OK"), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "grpc_server_handling_seconds",
            &[("grpc_service", PRODUCTS), ("grpc_method", "GetProduct")]
        ),
        Some(9.0),
        "histogram count = calls"
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_started_total",
            &[("grpc_service", PRODUCTS), ("grpc_method", "GetProduct")]
        ),
        Some(9.0)
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_in_flight",
            &[("grpc_service", PRODUCTS)]
        ),
        Some(0.0)
    );
    // No id in any label: every label value is from a bounded set.
    for s in &samples {
        for (k, v) in s.labels.iter() {
            assert!(!v.contains(&id), "{}{{{k}={v}}} carries an id", s.metric);
        }
    }

    // Auth's domain counters: one login issued, one refused for bad credentials.
    let samples = scrape(admin(Target::Auth)).await;
    assert_eq!(
        value(
            &samples,
            "stockmesh_auth_tokens_issued_total",
            &[("kind", "login")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "stockmesh_auth_tokens_refused_total",
            &[("kind", "login"), ("reason", "invalid_credentials")]
        ),
        Some(1.0)
    );

    // Products dies: inventory's Restock (which checks the product) fails, and inventory's
    // breaker for products opens — visible in inventory's own /metrics.
    mesh.kill(Target::Products).await;
    let mut inventory = InventoryServiceClient::new(channel(mesh.addr(Target::Inventory)).await);
    let warehouse = inventory
        .create_warehouse(with_token(
            inv::CreateWarehouseRequest {
                name: "w".into(),
                address: "a".into(),
                latitude: 1.0,
                longitude: 1.0,
                capacity: 0,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .warehouse
        .unwrap()
        .id;
    let mut state = None;
    for i in 0..20 {
        let err = inventory
            .restock(with_token(
                inv::RestockRequest {
                    product_id: id.clone(),
                    warehouse_id: warehouse.clone(),
                    quantity: 1,
                    request_id: format!("r{i}"),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        state = value(
            &scrape(admin(Target::Inventory)).await,
            "stockmesh_upstream_breaker_state",
            &[("caller", "inventory"), ("upstream", "products")],
        );
        if state == Some(2.0) {
            break;
        }
    }
    assert_eq!(
        state,
        Some(2.0),
        "inventory's breaker for products is open (2)"
    );
    let samples = scrape(admin(Target::Inventory)).await;
    assert!(
        value(
            &samples,
            "stockmesh_upstream_breaker_transitions_total",
            &[
                ("caller", "inventory"),
                ("upstream", "products"),
                ("to", "open")
            ]
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert!(
        value(
            &samples,
            "grpc_server_handled_total",
            &[("grpc_method", "Restock"), ("grpc_code", "Unavailable")]
        )
        .is_some_and(|v| v >= 1.0)
    );
    // Client side: inventory's calls to products, by code, and its failed attempts.
    assert!(
        value(
            &samples,
            "stockmesh_upstream_requests_total",
            &[
                ("caller", "inventory"),
                ("upstream", "products"),
                ("grpc_code", "Unavailable")
            ]
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert!(
        value(
            &samples,
            "stockmesh_upstream_attempts_total",
            &[("upstream", "products"), ("outcome", "failure")]
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert!(
        value(
            &samples,
            "stockmesh_upstream_request_duration_seconds",
            &[("upstream", "products")]
        )
        .is_some_and(|v| v >= 1.0)
    );
}

/// Under `stockmesh up` every target shares the gateway's `/metrics`: server series are
/// told apart by `grpc_service`, client series by `caller` (the gateway and orders both
/// call products).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_up_the_gateway_metrics_hold_every_target_labelled_by_caller() {
    let mut mesh = Mesh::new(Backend::Sqlite).await;
    mesh.start_up().await;
    let gateway = mesh.addr(Target::Gateway);
    let token = AuthServiceClient::new(channel(mesh.addr(Target::Auth)).await)
        .login(LoginRequest {
            email: TestMesh::ADMIN_EMAIL.into(),
            password: TestMesh::ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    // The gateway reads a product (gateway → products) and takes an order for a
    // product that does not exist (gateway → orders → auth, products).
    for _ in 0..3 {
        let (status, body) =
            super::traces::rest(gateway, "GET", "/v1/products/missing", &token, "").await;
        assert_eq!(status, 404, "{body}");
    }
    let (status, body) = super::traces::rest(
        gateway,
        "POST",
        "/v1/orders",
        &token,
        r#"{"requestId":"up-metrics-1","items":[{"productId":"missing","quantity":1}]}"#,
    )
    .await;
    assert!((400..500).contains(&status), "{status} {body}");

    let samples = scrape(gateway).await;
    let calls = |caller: &str, upstream: &str| {
        samples
            .iter()
            .filter(|s| {
                s.metric == "stockmesh_upstream_requests_total"
                    && s.labels.get("caller") == Some(caller)
                    && s.labels.get("upstream") == Some(upstream)
            })
            .map(|s| match s.value {
                Value::Counter(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum::<f64>()
    };
    assert_eq!(
        value(
            &samples,
            "stockmesh_upstream_requests_total",
            &[
                ("caller", "gateway"),
                ("upstream", "products"),
                ("grpc_code", "NotFound")
            ]
        ),
        Some(3.0),
        "the gateway's three reads of products"
    );
    assert_eq!(
        calls("gateway", "orders"),
        1.0,
        "one order through the gateway"
    );
    assert!(
        calls("orders", "products") >= 1.0,
        "orders priced the order"
    );
    assert!(
        calls("orders", "auth") >= 1.0,
        "orders fetched its service token"
    );
    // Server side of the same calls, in the same scrape.
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", PRODUCTS),
                ("grpc_method", "GetProduct"),
                ("grpc_code", "NotFound")
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", "stockmesh.orders.v1.OrderService"),
                ("grpc_method", "CreateOrder")
            ]
        ),
        Some(1.0)
    );

    // Every service's pool, with the sampled time its health ping waited for a
    // connection (one probe every 2 s).
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let samples = scrape(gateway).await;
        let pools: HashMap<String, (f64, f64)> = samples
            .iter()
            .filter(|s| {
                s.metric == "stockmesh_db_pool_connections" && s.labels.get("state") == Some("max")
            })
            .filter_map(|s| {
                let service = s.labels.get("service")?.to_string();
                let max = value(
                    &samples,
                    &s.metric,
                    &[("service", &service), ("state", "max")],
                )?;
                let probes = value(
                    &samples,
                    "stockmesh_db_pool_acquire_seconds",
                    &[("service", &service)],
                )?;
                Some((service, (probes, max)))
            })
            .collect();
        if pools.len() == 4
            && pools
                .values()
                .all(|(count, max)| *count >= 1.0 && *max >= 1.0)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "acquire-wait histograms and pool sizes of four services: {pools:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
