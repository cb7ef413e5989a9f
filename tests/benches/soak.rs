//! Soak: does the mesh hold its memory and answer every call through a long mixed load?
//! (issue 14, item 7)
//!
//! Starts the whole mesh as one real `stockmesh-drill up` process (SQLite, a temp data
//! dir, gateway rate limit lifted, logs at `warn`) on free ports, seeds a catalog (20
//! products, two warehouses, 1,000,000 units of each product in each), registers a pool
//! of 16 customers, then for `STOCKMESH_SOAK_SECS` (default 600) runs a fixed-rate mixed
//! load through the gateway (`STOCKMESH_SOAK_RATE` operations per second, default 200; at
//! most 64 in flight, so it stays bounded and never saturates on purpose):
//!
//! * REST `GET /v1/products/{id}`, `GET /v1/products`, `GET /v1/stock/{id}`;
//! * gRPC (h2c to the gateway) GetProduct, ListProducts, GetStock;
//! * an order flow: a customer's REST CreateOrder (1–3 lines), then the admin completes it
//!   (two in three) or the customer cancels it;
//! * customers refreshing their session (rotation: the new refresh token replaces the
//!   old; 10 a second), one logging in again and one new customer registering each second
//!   (each pool customer logs in every 16 s, well inside the login throttle);
//! * the admin restocking a product;
//! * three streams kept open and reopened every 30 s: WatchStock over SSE (reopened with
//!   `Last-Event-ID`), WatchStock over gRPC, WatchOrders over SSE (admin).
//!
//! The mesh process's RSS is sampled every 10 s. Warm-up is the first 60 s (a fifth of the
//! run when it is shorter than 5 min). Every non-2xx REST answer and every non-OK gRPC
//! status is an error: with plenty of stock, a fresh customer pool and every order
//! finished right after it was placed, no business refusal (FAILED_PRECONDITION, the open
//! order cap, the login throttle) is expected, so none is excused. A stream that ends
//! before it is due to be reopened is an error too. At the end, stock is checked for
//! conservation: per product, on hand = seeded + restocked − units of completed orders,
//! reserved = 0, and no order is left PENDING.
//!
//! Goals (exit status 1 when one fails): 0 errors; RSS growth ≤ 10 % — the median of the
//! samples in the last minute (and the final one) against the median of the minute after
//! warm-up (half the rest of a short run each), since RSS swings by tens of MB between
//! two samples; stock conserved.
//!
//! Run: `cargo bench -p stockmesh-tests --bench soak` (10 min);
//! `STOCKMESH_SOAK_SECS=60 cargo bench -p stockmesh-tests --bench soak` (quick).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use stockmesh::Target;
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::orders::v1 as ord;
use stockmesh::proto::orders::v1::order_service_client::OrderServiceClient;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::proto::products::v1::{GetProductRequest, ListProductsRequest};
use stockmesh::testing::with_token;
use stockmesh_tests::bench::{port, rss_mb};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

const ADMIN_PASSWORD: &str = "soak-admin-password";
const SECRET: &str = "soak-service-secret-0123456789abcdef-0123456789";
const PRODUCTS: usize = 20;
const SEED: i64 = 1_000_000;
const CUSTOMERS: usize = 16;
const IN_FLIGHT: usize = 64;
const STREAM_SECS: u64 = 30;

type Http = Client<HttpConnector, Full<bytes::Bytes>>;

/// The kinds of request counted, in report order.
const KINDS: &[&str] = &[
    "REST GetProduct",
    "REST ListProducts",
    "REST GetStock",
    "gRPC GetProduct",
    "gRPC ListProducts",
    "gRPC GetStock",
    "REST CreateOrder",
    "REST CompleteOrder",
    "REST CancelOrder",
    "REST Refresh",
    "REST Login",
    "REST Register",
    "REST Restock",
    "SSE WatchStock (opened)",
    "gRPC WatchStock (opened)",
    "SSE WatchOrders (opened)",
];

/// Counts per kind: requests, errors; and the first few error messages.
struct Stats {
    ok: Vec<AtomicU64>,
    err: Vec<AtomicU64>,
    events: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            ok: KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
            err: KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
            events: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, kind: &str, ok: Result<(), String>) -> bool {
        let i = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        match ok {
            Ok(()) => {
                self.ok[i].fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.err[i].fetch_add(1, Ordering::Relaxed);
                if let Ok(mut s) = self.samples.lock()
                    && s.len() < 20
                {
                    s.push(format!("{kind}: {e}"));
                }
                false
            }
        }
    }

    fn errors(&self) -> u64 {
        self.err.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }
}

/// One REST call: the status and the parsed JSON body (Null when empty or not JSON).
async fn rest(
    http: &Http,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = req
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), http.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{method} {uri}: {status} {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy()
}

/// A signed-in customer: the current token pair (rotated by Refresh).
struct Customer {
    email: String,
    password: String,
    access: String,
    refresh: String,
}

struct Load {
    http: Http,
    base: String,
    products: ProductServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
    ids: Vec<String>,
    warehouses: Vec<String>,
    admin: Mutex<(String, String)>,
    customers: Vec<tokio::sync::Mutex<Customer>>,
    stats: Stats,
    restocked: Vec<AtomicI64>,
    completed: Vec<AtomicI64>,
    registered: AtomicU64,
    stop: tokio_util::sync::CancellationToken,
}

impl Load {
    fn admin_token(&self) -> String {
        self.admin.lock().map(|a| a.0.clone()).unwrap_or_default()
    }

    fn product(&self, seq: u64) -> (usize, &str) {
        let i = (seq as usize * 7 + 3) % self.ids.len();
        (i, &self.ids[i])
    }

    /// One operation of the mix, chosen by `seq`.
    async fn op(&self, seq: u64) {
        let s = &self.stats;
        let b = &self.base;
        let (pi, pid) = self.product(seq);
        // 200 slots: reads dominate, about one in eight is an order flow.
        match seq % 200 {
            0 => {
                let n = self.registered.fetch_add(1, Ordering::Relaxed);
                let r = rest(
                    &self.http,
                    "POST",
                    &format!("{b}/v1/auth/register"),
                    None,
                    Some(json!({"email": format!("soak-new-{n}@example.com"),
                        "password": "soak-customer-password", "displayName": format!("new {n}")})),
                )
                .await;
                s.record("REST Register", r.map(|_| ()));
            }
            1 => {
                let mut c = self.customers[(seq / 200) as usize % CUSTOMERS]
                    .lock()
                    .await;
                let r = rest(
                    &self.http,
                    "POST",
                    &format!("{b}/v1/auth/login"),
                    None,
                    Some(json!({"email": c.email, "password": c.password})),
                )
                .await;
                if let Ok(v) = &r {
                    c.access = v["accessToken"].as_str().unwrap_or_default().into();
                    c.refresh = v["refreshToken"].as_str().unwrap_or_default().into();
                }
                s.record("REST Login", r.map(|_| ()));
            }
            2 | 52 | 102 | 152 => self.restock(pi, pid, seq).await,
            n if n % 20 == 3 => {
                let mut c = self.customers[(seq / 20) as usize % CUSTOMERS].lock().await;
                let r = rest(
                    &self.http,
                    "POST",
                    &format!("{b}/v1/auth/refresh"),
                    None,
                    Some(json!({"refreshToken": c.refresh})),
                )
                .await;
                if let Ok(v) = &r {
                    c.access = v["accessToken"].as_str().unwrap_or_default().into();
                    c.refresh = v["refreshToken"].as_str().unwrap_or_default().into();
                }
                s.record("REST Refresh", r.map(|_| ()));
            }
            n if n % 8 == 4 => self.order_flow(seq).await,
            n if n % 8 == 5 => {
                let r = self
                    .products
                    .clone()
                    .get_product(GetProductRequest { id: pid.into() })
                    .await;
                s.record("gRPC GetProduct", r.map(|_| ()).map_err(|e| e.to_string()));
            }
            n if n % 8 == 6 => {
                let r = self
                    .inventory
                    .clone()
                    .get_stock(inv::GetStockRequest {
                        product_id: pid.into(),
                    })
                    .await;
                s.record("gRPC GetStock", r.map(|_| ()).map_err(|e| e.to_string()));
            }
            n if n % 16 == 7 => {
                let r = self
                    .products
                    .clone()
                    .list_products(ListProductsRequest {
                        page_size: 10,
                        ..Default::default()
                    })
                    .await;
                s.record(
                    "gRPC ListProducts",
                    r.map(|_| ()).map_err(|e| e.to_string()),
                );
            }
            n if n % 16 == 15 => {
                let r = rest(
                    &self.http,
                    "GET",
                    &format!("{b}/v1/products?pageSize=10"),
                    None,
                    None,
                )
                .await;
                s.record("REST ListProducts", r.map(|_| ()));
            }
            n if n % 2 == 0 => {
                let r = rest(
                    &self.http,
                    "GET",
                    &format!("{b}/v1/products/{pid}"),
                    None,
                    None,
                )
                .await;
                s.record("REST GetProduct", r.map(|_| ()));
            }
            _ => {
                let r = rest(
                    &self.http,
                    "GET",
                    &format!("{b}/v1/stock/{pid}"),
                    None,
                    None,
                )
                .await;
                s.record("REST GetStock", r.map(|_| ()));
            }
        }
    }

    async fn restock(&self, pi: usize, pid: &str, seq: u64) {
        let quantity = 1 + (seq % 50) as i64;
        let warehouse = &self.warehouses[(seq / 2) as usize % self.warehouses.len()];
        let r = rest(
            &self.http,
            "POST",
            &format!("{}/v1/stock/{pid}:restock", self.base),
            Some(&self.admin_token()),
            Some(json!({"warehouseId": warehouse, "quantity": quantity,
                "requestId": format!("soak-restock-{seq}")})),
        )
        .await;
        if self.stats.record("REST Restock", r.map(|_| ())) {
            self.restocked[pi].fetch_add(quantity, Ordering::Relaxed);
        }
    }

    /// A customer places an order; the admin completes it, or the customer cancels it.
    async fn order_flow(&self, seq: u64) {
        let b = &self.base;
        let token = self.customers[seq as usize % CUSTOMERS]
            .lock()
            .await
            .access
            .clone();
        let lines = 1 + (seq % 3) as usize;
        let items: Vec<(usize, i64)> = (0..lines)
            .map(|l| {
                (
                    (seq as usize * 3 + l * 5) % self.ids.len(),
                    1 + ((seq + l as u64) % 4) as i64,
                )
            })
            .collect();
        let body = json!({
            "requestId": format!("soak-order-{seq}"),
            "items": items.iter().map(|(i, q)| json!({"productId": self.ids[*i], "quantity": q}))
                .collect::<Vec<_>>(),
        });
        let r = rest(
            &self.http,
            "POST",
            &format!("{b}/v1/orders"),
            Some(&token),
            Some(body),
        )
        .await;
        let id = r
            .as_ref()
            .ok()
            .and_then(|v| v["order"]["id"].as_str().map(str::to_string));
        if !self.stats.record("REST CreateOrder", r.map(|_| ())) {
            return;
        }
        let Some(id) = id else {
            self.stats
                .record("REST CreateOrder", Err("no order id in the answer".into()));
            return;
        };
        if seq % 3 == 2 {
            let r = rest(
                &self.http,
                "POST",
                &format!("{b}/v1/orders/{id}:cancel"),
                Some(&token),
                Some(json!({"reason": "soak"})),
            )
            .await;
            self.stats.record("REST CancelOrder", r.map(|_| ()));
        } else {
            let r = rest(
                &self.http,
                "POST",
                &format!("{b}/v1/orders/{id}:complete"),
                Some(&self.admin_token()),
                Some(json!({})),
            )
            .await;
            if self.stats.record("REST CompleteOrder", r.map(|_| ())) {
                for (i, q) in items {
                    self.completed[i].fetch_add(q, Ordering::Relaxed);
                }
            }
        }
    }

    /// Keeps an SSE stream of `path` open, reopening it every `STREAM_SECS` with the last
    /// event id seen; an end before that, or a non-200, is an error.
    async fn sse(self: Arc<Self>, kind: &'static str, path: String, admin: bool) {
        let mut last_id: Option<String> = None;
        while !self.stop.is_cancelled() {
            let mut req = http::Request::builder()
                .uri(format!("{}{path}", self.base))
                .header("accept", "text/event-stream");
            if admin {
                req = req.header("authorization", format!("Bearer {}", self.admin_token()));
            }
            if let Some(id) = &last_id {
                req = req.header("last-event-id", id.as_str());
            }
            let Ok(req) = req.body(Full::new(bytes::Bytes::new())) else {
                return;
            };
            let resp = match self.http.request(req).await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    self.stats
                        .record(kind, Err(format!("status {}", r.status())));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    self.stats.record(kind, Err(format!("transport: {e}")));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.stats.record(kind, Ok(()));
            let mut body = resp.into_body().into_data_stream();
            let mut buf = String::new();
            let due = tokio::time::sleep(Duration::from_secs(STREAM_SECS));
            tokio::pin!(due);
            loop {
                tokio::select! {
                    _ = &mut due => break,
                    _ = self.stop.cancelled() => break,
                    chunk = body.next() => match chunk {
                        Some(Ok(c)) => {
                            buf.push_str(&String::from_utf8_lossy(&c));
                            while let Some(nl) = buf.find('\n') {
                                let line: String = buf.drain(..=nl).collect();
                                if let Some(id) = line.strip_prefix("id:") {
                                    last_id = Some(id.trim().to_string());
                                } else if line.starts_with("data:") {
                                    self.stats.events.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        other => {
                            self.stats.record(kind, Err(format!("stream ended early: {other:?}")));
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Keeps a gRPC WatchStock stream open through the gateway, reopened every `STREAM_SECS`.
    async fn grpc_watch(self: Arc<Self>, product_ids: Vec<String>) {
        let kind = "gRPC WatchStock (opened)";
        let mut after = String::new();
        while !self.stop.is_cancelled() {
            let r = self
                .inventory
                .clone()
                .watch_stock(inv::WatchStockRequest {
                    product_ids: product_ids.clone(),
                    after_event_id: after.clone(),
                })
                .await;
            let mut stream = match r {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    self.stats.record(kind, Err(e.to_string()));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.stats.record(kind, Ok(()));
            let due = tokio::time::sleep(Duration::from_secs(STREAM_SECS));
            tokio::pin!(due);
            loop {
                tokio::select! {
                    _ = &mut due => break,
                    _ = self.stop.cancelled() => break,
                    m = stream.message() => match m {
                        Ok(Some(m)) => {
                            if !m.event_id.is_empty() {
                                after = m.event_id;
                            }
                            self.stats.events.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            self.stats.record(kind, Err(format!("stream ended early: {other:?}")));
                            break;
                        }
                    }
                }
            }
        }
    }
}

async fn login(http: &Http, base: &str, email: &str, password: &str) -> (String, String) {
    let v = rest(
        http,
        "POST",
        &format!("{base}/v1/auth/login"),
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
    .expect("login");
    (
        v["accessToken"].as_str().expect("accessToken").into(),
        v["refreshToken"].as_str().expect("refreshToken").into(),
    )
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("STOCKMESH_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let rate: u64 = std::env::var("STOCKMESH_SOAK_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .max(1);
    let warmup = if secs >= 300 { 60 } else { (secs / 5).max(10) };
    let dir = std::env::temp_dir().join(format!("stockmesh_soak_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ports: Vec<(Target, u16)> = Target::ALL.iter().map(|t| (*t, port())).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stockmesh-drill"));
    cmd.arg("up")
        .env("STOCKMESH_DATA_DIR", &dir)
        .env("STOCKMESH_BIND", "127.0.0.1")
        .env("STOCKMESH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("STOCKMESH_SERVICE_SECRET", SECRET)
        .env("STOCKMESH_RATE_LIMIT_RPS", "10000000")
        .env("STOCKMESH_RATE_LIMIT_BURST", "10000000")
        .env("STOCKMESH_DRAIN_DELAY_MS", "0")
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for (t, p) in &ports {
        cmd.env(
            format!("STOCKMESH_{}_PORT", t.name().to_uppercase()),
            p.to_string(),
        );
    }
    let mut child = cmd.spawn().expect("start stockmesh-drill up");
    let pid = child.id().expect("pid");
    let addr = |t: Target| {
        ports
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, p)| SocketAddr::from(([127, 0, 0, 1], *p)))
            .expect("port")
    };
    let give_up = Instant::now() + Duration::from_secs(120);
    for t in Target::ALL {
        while stockmesh::health::wait_serving(addr(t), t.grpc_service(), Duration::from_secs(30))
            .await
            .is_err()
        {
            assert!(Instant::now() < give_up, "{} did not start", t.name());
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the mesh exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let gateway = addr(Target::Gateway);
    let base = format!("http://{gateway}");
    let http: Http = Client::builder(TokioExecutor::new()).build_http();

    // Catalog, warehouses, stock, customers — through the gateway, as a shop would.
    let admin = login(&http, &base, "admin@stockmesh.local", ADMIN_PASSWORD).await;
    let mut ids = Vec::new();
    for i in 0..PRODUCTS {
        let v = rest(
            &http,
            "POST",
            &format!("{base}/v1/products"),
            Some(&admin.0),
            Some(
                json!({"sku": format!("SKU-SOAK-{i}"), "name": format!("soak product {i}"),
                "priceCents": 100 + i, "currency": "USD"}),
            ),
        )
        .await
        .expect("create product");
        ids.push(v["product"]["id"].as_str().expect("product id").to_string());
    }
    let mut warehouses = Vec::new();
    for (i, (lat, lon)) in [(52.52, 13.40), (48.14, 11.58)].iter().enumerate() {
        let v = rest(
            &http,
            "POST",
            &format!("{base}/v1/warehouses"),
            Some(&admin.0),
            Some(
                json!({"name": format!("soak warehouse {i}"), "address": "soak street",
                "latitude": lat, "longitude": lon, "capacity": 0}),
            ),
        )
        .await
        .expect("create warehouse");
        warehouses.push(
            v["warehouse"]["id"]
                .as_str()
                .expect("warehouse id")
                .to_string(),
        );
    }
    for id in &ids {
        for w in &warehouses {
            rest(
                &http,
                "POST",
                &format!("{base}/v1/stock/{id}:restock"),
                Some(&admin.0),
                Some(json!({"warehouseId": w, "quantity": SEED,
                    "requestId": format!("soak-seed-{id}-{w}")})),
            )
            .await
            .expect("seed stock");
        }
    }
    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        let email = format!("soak-customer-{i}@example.com");
        let password = "soak-customer-password".to_string();
        rest(
            &http,
            "POST",
            &format!("{base}/v1/auth/register"),
            None,
            Some(json!({"email": email, "password": password, "displayName": format!("soak {i}")})),
        )
        .await
        .expect("register");
        let (access, refresh) = login(&http, &base, &email, &password).await;
        customers.push(tokio::sync::Mutex::new(Customer {
            email,
            password,
            access,
            refresh,
        }));
    }
    let gw = channel(gateway);
    let load = Arc::new(Load {
        http: http.clone(),
        base: base.clone(),
        products: ProductServiceClient::new(gw.clone()),
        inventory: InventoryServiceClient::new(gw.clone()),
        restocked: ids.iter().map(|_| AtomicI64::new(0)).collect(),
        completed: ids.iter().map(|_| AtomicI64::new(0)).collect(),
        ids: ids.clone(),
        warehouses,
        admin: Mutex::new(admin),
        customers,
        stats: Stats::new(),
        registered: AtomicU64::new(0),
        stop: tokio_util::sync::CancellationToken::new(),
    });
    println!(
        "soak: {secs} s at {rate} operations/s (at most {IN_FLIGHT} in flight), warm-up {warmup} s, mesh pid {pid}"
    );

    // Streams.
    let watched: Vec<String> = ids.iter().take(5).cloned().collect();
    let mut streams = vec![
        tokio::spawn(load.clone().sse(
            "SSE WatchStock (opened)",
            format!(
                "/v1/stock:watch?productIds={}",
                watched.join("&productIds=")
            ),
            false,
        )),
        tokio::spawn(
            load.clone()
                .sse("SSE WatchOrders (opened)", "/v1/orders:watch".into(), true),
        ),
    ];
    streams.push(tokio::spawn(load.clone().grpc_watch(watched)));

    // The admin keeps its session fresh (refresh rotation) every minute.
    let refresher = {
        let load = load.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let refresh = load.admin.lock().map(|a| a.1.clone()).unwrap_or_default();
                let r = rest(
                    &load.http,
                    "POST",
                    &format!("{}/v1/auth/refresh", load.base),
                    None,
                    Some(json!({"refreshToken": refresh})),
                )
                .await;
                if let Ok(v) = &r
                    && let Ok(mut a) = load.admin.lock()
                {
                    a.0 = v["accessToken"].as_str().unwrap_or_default().into();
                    a.1 = v["refreshToken"].as_str().unwrap_or_default().into();
                }
                load.stats.record("REST Refresh", r.map(|_| ()));
            }
        })
    };

    // RSS every 10 s.
    let samples: Arc<Mutex<Vec<(u64, f64)>>> = Arc::new(Mutex::new(vec![(0, rss_mb(pid))]));
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            let mut t = 0;
            loop {
                tick.tick().await;
                t += 10;
                let mb = rss_mb(pid);
                println!("  t={t:>4} s  mesh RSS {mb:.1} MB");
                if let Ok(mut s) = samples.lock() {
                    s.push((t, mb));
                }
            }
        })
    };

    // The fixed-rate load: one operation per tick, bounded in flight.
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut late = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                late += 1;
                match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
        };
        let load = load.clone();
        tokio::spawn(async move {
            load.op(seq).await;
            drop(permit);
        });
        seq += 1;
    }
    let _ = permits.acquire_many(IN_FLIGHT as u32).await;
    let elapsed = started.elapsed().as_secs_f64();
    load.stop.cancel();
    for s in streams {
        let _ = s.await;
    }
    refresher.abort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampler.abort();
    let final_mb = rss_mb(pid);

    // Conservation.
    let mut conserved = true;
    let mut stock_lines = Vec::new();
    let token = load.admin_token();
    let mut inventory = InventoryServiceClient::new(channel(addr(Target::Inventory)));
    for (i, id) in ids.iter().enumerate() {
        let stock = inventory
            .get_stock(inv::GetStockRequest {
                product_id: id.clone(),
            })
            .await
            .expect("GetStock")
            .into_inner()
            .stock
            .expect("stock");
        let restocked = load.restocked[i].load(Ordering::Relaxed);
        let completed = load.completed[i].load(Ordering::Relaxed);
        let expected = 2 * SEED + restocked - completed;
        let ok = stock.total_on_hand == expected && stock.total_reserved == 0;
        conserved &= ok;
        if !ok || i < 3 {
            stock_lines.push(format!(
                "  product {i}: on hand {} (expected {expected} = {} seeded + {restocked} restocked - {completed} completed), reserved {}",
                stock.total_on_hand,
                2 * SEED,
                stock.total_reserved
            ));
        }
    }
    let pending = OrderServiceClient::new(channel(addr(Target::Orders)))
        .list_orders(with_token(
            ord::ListOrdersRequest {
                page_size: 100,
                status: ord::OrderStatus::Pending as i32,
                ..Default::default()
            },
            &token,
        ))
        .await
        .map(|r| r.into_inner().orders.len())
        .unwrap_or(usize::MAX);
    conserved &= pending == 0;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);

    // Report.
    let stats = &load.stats;
    let total: u64 = stats.ok.iter().map(|o| o.load(Ordering::Relaxed)).sum();
    println!(
        "\n{total} requests in {elapsed:.0} s ({:.0} req/s; {seq} operations, {late} waited for a free slot), {} stream events",
        total as f64 / elapsed,
        stats.events.load(Ordering::Relaxed)
    );
    println!("{:<28} {:>9} {:>7}", "kind", "requests", "errors");
    for (i, k) in KINDS.iter().enumerate() {
        println!(
            "{k:<28} {:>9} {:>7}",
            stats.ok[i].load(Ordering::Relaxed) + stats.err[i].load(Ordering::Relaxed),
            stats.err[i].load(Ordering::Relaxed)
        );
    }
    let errors = stats.errors();
    if let Ok(s) = stats.samples.lock() {
        for e in s.iter() {
            println!("  error: {e}");
        }
    }
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    // RSS swings by tens of MB within seconds (allocator pages taken and given back), so
    // one sample against another says little: the growth compares the median of the
    // samples just after warm-up with the median of the last ones.
    let window = 60.min(secs.saturating_sub(warmup) / 2).max(10);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(final_mb)
    };
    let at = |lo: u64, hi: u64| -> Vec<f64> {
        samples
            .iter()
            .filter(|(t, _)| *t >= lo && *t <= hi)
            .map(|(_, mb)| *mb)
            .collect()
    };
    let at_warmup = samples
        .iter()
        .find(|(t, _)| *t >= warmup)
        .map_or(final_mb, |(_, mb)| *mb);
    let after_warmup = median(at(warmup, warmup + window));
    let mut last = at(secs.saturating_sub(window), secs);
    last.push(final_mb);
    let at_end = median(last);
    let max_after = samples
        .iter()
        .filter(|(t, _)| *t >= warmup)
        .map(|(_, mb)| *mb)
        .fold(final_mb, f64::max);
    let min_after = samples
        .iter()
        .filter(|(t, _)| *t >= warmup)
        .map(|(_, mb)| *mb)
        .fold(final_mb, f64::min);
    let growth = (at_end - after_warmup) / after_warmup * 100.0;
    println!(
        "mesh RSS: start {:.1} MB, at the end of warm-up ({warmup} s) {at_warmup:.1} MB; after warm-up min {min_after:.1}, max {max_after:.1}, final {final_mb:.1} MB",
        samples.first().map_or(0.0, |s| s.1)
    );
    println!(
        "  median of {warmup}..{} s {after_warmup:.1} MB, of the last {window} s {at_end:.1} MB: growth {growth:+.1} %",
        warmup + window
    );
    let restocked: i64 = load
        .restocked
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .sum();
    let completed: i64 = load
        .completed
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .sum();
    println!(
        "stock: {} units seeded, {restocked} restocked, {completed} sold in completed orders; {pending} orders left PENDING",
        2 * SEED * PRODUCTS as i64
    );
    for l in &stock_lines {
        println!("{l}");
    }
    let goals = [
        ("0 errors", errors == 0),
        ("RSS growth after warm-up <= 10 %", growth <= 10.0),
        ("stock conserved", conserved),
    ];
    let mut failed = false;
    for (goal, met) in goals {
        failed |= !met;
        println!("goal {goal}: {}", if met { "met" } else { "NOT MET" });
    }
    if failed {
        std::process::exit(1);
    }
}
