//! The mesh's hot paths side by side in one run (issue 9): the whole mesh
//! (`stockmesh-drill up`, release) pinned to CPU 0, this load generator to CPU 1 (when
//! there are two), and for each row requests per second, the mesh's CPU time per request
//! and client-side p50 / p99:
//!
//! * `grpc.health.v1.Health/Check` on the products port — a bare tonic handler on the
//!   same server, the baseline the reads are compared with;
//! * `GetProduct`, `ListProducts` (page of 50) direct over gRPC; `GetStock` on inventory;
//! * `GET /v1/products/{id}` through the gateway (REST);
//! * `CreateOrder` through the gateway (REST, one line, each order for a new customer —
//!   placed by the admin — so the open-order cap keeps its default) at 8 and 50
//!   concurrent clients;
//! * fail-fast: CreateOrder on a second orders process whose inventory is unreachable and
//!   whose breaker is open — p99 measured server-side (its own
//!   `grpc_server_handling_seconds` histogram) and client-side;
//! * the mesh's resident memory idle and after the CreateOrder rows.
//!
//! Run: `cargo bench -p stockmesh-tests --bench mesh` (SQLite), `DB=postgres cargo bench
//! -p stockmesh-tests --bench mesh` (fresh PostgreSQL databases, dropped afterwards).
//! `STOCKMESH_BENCH_SECS` (default 5) per row. `STOCKMESH_BENCH_ONLY=createorder,breaker`
//! runs only the rows whose names contain one of the words (case-insensitive), besides the
//! Check baseline: for profiling one path (`perf record -C 0` sees only the mesh).
//! `STOCKMESH_BENCH_BASELINE=<path of an older stockmesh binary>` runs the Check and
//! CreateOrder rows again against that build's mesh afterwards, in the same run, and prints
//! the ratios (issue 9 asks "4× today's orders/s on the same machine": `git worktree add
//! /tmp/base <commit> && cargo build --release -p stockmesh-cli` there).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_parse::{Scrape, Value};
use stockmesh::Target;
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::proto::products::v1::{
    CreateProductRequest, GetProductRequest, ListProductsRequest,
};
use stockmesh::testing::{Backend, TestDb, with_token};
use stockmesh_tests::bench::{Load, cpu_secs, port, rss_mb, run};
use stockmesh_tests::seed::stocked_product;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const ADMIN_PASSWORD: &str = "bench-admin-password";
const SECRET: &str = "bench-service-secret-0123456789abcdef-0123456789";

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>;

/// Whether the mesh and the load get a CPU each. Decided once, before this process pins
/// itself (after which it sees one CPU).
fn two_cpus() -> bool {
    static TWO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TWO.get_or_init(|| {
        std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
            && std::path::Path::new("/usr/bin/taskset").exists()
    })
}

/// A process pinned to CPU 0 when this machine has two.
fn pinned(program: &str) -> Command {
    if two_cpus() {
        let mut cmd = Command::new("/usr/bin/taskset");
        cmd.args(["-c", "0", program]);
        cmd
    } else {
        Command::new(program)
    }
}

fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

async fn wait_serving(addr: SocketAddr, service: &str, child: &mut Child) {
    let give_up = Instant::now() + Duration::from_secs(120);
    while stockmesh::health::wait_serving(addr, service, Duration::from_secs(60))
        .await
        .is_err()
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{service} exited: {status}");
        }
        assert!(Instant::now() < give_up, "{service} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Row {
    name: String,
    load: Load,
    cpu_us: f64,
}

impl Row {
    /// The row's line of the table, its rate compared with `check` req/s.
    fn line(&self, check: f64) -> String {
        format!(
            "{:<34} {:>9.0} {:>9.2} {:>12.0} {:>9.2} {:>9.2} {:>7}",
            self.name,
            self.load.per_sec(),
            self.load.per_sec() / check,
            self.cpu_us,
            self.load.quantile(0.5).as_secs_f64() * 1e3,
            self.load.quantile(0.99).as_secs_f64() * 1e3,
            self.load.errors
        )
    }
}

/// Whether the row `name` is to run (`STOCKMESH_BENCH_ONLY`, see the module docs).
fn wanted(name: &str) -> bool {
    let name = name.to_lowercase();
    match std::env::var("STOCKMESH_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() && !name.starts_with("health/check") => only
            .split(',')
            .map(|w| w.trim().to_lowercase())
            .any(|w| !w.is_empty() && name.contains(&w)),
        _ => true,
    }
}

/// Runs one row against the mesh process `pid`, unless it is not [`wanted`].
async fn row<F, Fut>(name: &str, pid: u32, clients: usize, secs: f64, call: F) -> Option<Row>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    if !wanted(name) {
        return None;
    }
    run(clients, 0.5, call.clone()).await; // warm-up
    let cpu = cpu_secs(pid);
    let load = run(clients, secs, call).await;
    let cpu = cpu_secs(pid) - cpu;
    assert!(
        load.ok > 0,
        "{name}: no call succeeded ({} failed)",
        load.errors
    );
    Some(Row {
        name: name.to_string(),
        cpu_us: cpu * 1e6 / load.ok.max(1) as f64,
        load,
    })
}

async fn rest(http: &Http, method: &str, uri: &str, token: &str, body: String) -> u16 {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    match http.request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}

/// The smallest histogram bound under which 99 % of the calls counted between two
/// scrapes of `grpc_server_handling_seconds{grpc_method}` fall.
fn server_p99(before: &str, after: &str, method: &str) -> Option<f64> {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .ok()
            .and_then(|s| {
                s.samples.into_iter().find_map(|s| {
                    (s.metric == "grpc_server_handling_seconds"
                        && s.labels.get("grpc_method") == Some(method))
                    .then_some(s.value)
                })
            })
            .and_then(|v| match v {
                Value::Histogram(b) => Some(b.iter().map(|b| (b.less_than, b.count)).collect()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let delta: Vec<(f64, f64)> = b1
        .iter()
        .map(|(le, c)| {
            let was = b0.iter().find(|(l, _)| l == le).map_or(0.0, |(_, c)| *c);
            (*le, c - was)
        })
        .collect();
    let total = delta.last()?.1;
    delta
        .iter()
        .find(|(_, c)| *c >= 0.99 * total)
        .map(|(le, _)| *le)
}

async fn scrape(addr: SocketAddr) -> String {
    let http: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    match http
        .get(format!("http://{addr}/metrics").parse().unwrap())
        .await
    {
        Ok(r) => {
            String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned()
        }
        Err(_) => String::new(),
    }
}

/// A whole mesh (`<program> up`) pinned to CPU 0, with the catalog the rows use.
struct Mesh {
    child: Child,
    pid: u32,
    ports: Vec<(Target, u16)>,
    env: Vec<(String, String)>,
    dir: std::path::PathBuf,
    dbs: Vec<TestDb>,
    /// The admin's access token.
    token: String,
    /// A product with plenty of stock in the one warehouse.
    product: String,
}

impl Mesh {
    fn addr(&self, t: Target) -> SocketAddr {
        let port = self.ports.iter().find(|(x, _)| *x == t).map_or(0, |p| p.1);
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Starts `program up` on fresh databases (`tag` names its data directory) and seeds
    /// 60 products and one warehouse with plenty of the first.
    async fn start(program: &str, backend: Backend, tag: &str) -> Mesh {
        let dir =
            std::env::temp_dir().join(format!("stockmesh_mesh_bench_{}_{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(Target, u16)> = Target::ALL.iter().map(|t| (*t, port())).collect();
        let mut env: Vec<(String, String)> = vec![
            ("STOCKMESH_DATA_DIR".into(), dir.display().to_string()),
            ("STOCKMESH_BIND".into(), "127.0.0.1".into()),
            ("STOCKMESH_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ("STOCKMESH_SERVICE_SECRET".into(), SECRET.into()),
            ("STOCKMESH_RATE_LIMIT_RPS".into(), "10000000".into()),
            ("STOCKMESH_RATE_LIMIT_BURST".into(), "10000000".into()),
            ("STOCKMESH_DRAIN_DELAY_MS".into(), "0".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        for (t, p) in &ports {
            env.push((
                format!("STOCKMESH_{}_PORT", t.name().to_uppercase()),
                p.to_string(),
            ));
        }
        let mut dbs = Vec::new();
        if backend == Backend::Postgres {
            for t in Target::SERVICES {
                let db = TestDb::new(Backend::Postgres).await;
                env.push((
                    format!("STOCKMESH_{}_DATABASE_URL", t.name().to_uppercase()),
                    db.url.clone(),
                ));
                dbs.push(db);
            }
        }
        let child = pinned(program)
            .arg("up")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap_or(0);
        let mut mesh = Mesh {
            child,
            pid,
            ports,
            env,
            dir,
            dbs,
            token: String::new(),
            product: String::new(),
        };
        for t in Target::ALL {
            let addr = mesh.addr(t);
            wait_serving(addr, t.grpc_service(), &mut mesh.child).await;
        }
        mesh.seed().await;
        mesh
    }

    async fn seed(&mut self) {
        let token = AuthServiceClient::new(channel(self.addr(Target::Auth)))
            .login(LoginRequest {
                email: "admin@stockmesh.local".into(),
                password: ADMIN_PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let stocked = stocked_product(
            channel(self.addr(Target::Products)),
            channel(self.addr(Target::Inventory)),
            &token,
            1_000_000_000,
        )
        .await;
        // 59 more, for ListProducts' page of 50.
        let products = ProductServiceClient::new(channel(self.addr(Target::Products)));
        for i in 1..60 {
            products
                .clone()
                .create_product(with_token(
                    CreateProductRequest {
                        sku: format!("SKU-BENCH-{i}"),
                        name: format!("bench product {i}"),
                        price_cents: 100 + i,
                        currency: "USD".into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .unwrap();
        }
        self.token = token;
        self.product = stocked.product;
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        drop(self.dbs);
    }
}

/// The bare Check on the products port, the baseline of every row.
async fn check_row(mesh: &Mesh, secs: f64) -> Option<Row> {
    let health = HealthClient::new(channel(mesh.addr(Target::Products)));
    row(
        "Health/Check (products port)",
        mesh.pid,
        16,
        secs,
        move |_, _| {
            let mut c = health.clone();
            async move {
                c.check(HealthCheckRequest {
                    service: Target::Products.grpc_service().into(),
                })
                .await
                .is_ok()
            }
        },
    )
    .await
}

/// CreateOrder through the gateway at 8 and 50 concurrent clients.
async fn order_rows(mesh: &Mesh, secs: f64) -> Vec<Row> {
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut rows = Vec::new();
    for clients in [8, 50] {
        let (h, uri, t, id) = (
            http.clone(),
            format!("http://{}/v1/orders", mesh.addr(Target::Gateway)),
            mesh.token.clone(),
            mesh.product.clone(),
        );
        rows.extend(
            row(
                &format!("CreateOrder, c={clients} (gateway)"),
                mesh.pid,
                clients,
                secs,
                move |client, seq| {
                    let (h, uri, t) = (h.clone(), uri.clone(), t.clone());
                    // Placed by the admin for a customer of its own each (as a shop's
                    // many customers would), so the open-order cap stays at its default.
                    let body = format!(
                        r#"{{"requestId":"bench","customerId":"bench-{clients}-{client}-{seq}","items":[{{"productId":"{id}","quantity":1}}]}}"#
                    );
                    async move { rest(&h, "POST", &uri, &t, body).await == 200 }
                },
            )
            .await,
        );
    }
    rows
}

#[tokio::main]
async fn main() {
    let secs: f64 = std::env::var("STOCKMESH_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let backend = match std::env::var("DB").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    if two_cpus() {
        // This process (every thread) on CPU 1, the mesh on CPU 0.
        let _ = std::process::Command::new("/usr/bin/taskset")
            .args(["-a", "-cp", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let drill = env!("CARGO_BIN_EXE_stockmesh-drill");
    let mut mesh = Mesh::start(drill, backend, "now").await;
    let pid = mesh.pid;
    let (token, id) = (mesh.token.clone(), mesh.product.clone());
    let products = ProductServiceClient::new(channel(mesh.addr(Target::Products)));
    let inventory = InventoryServiceClient::new(channel(mesh.addr(Target::Inventory)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_mb(pid);

    let mut rows = Vec::new();
    rows.extend(check_row(&mesh, secs).await);
    let (p, pid_) = (products.clone(), id.clone());
    rows.extend(
        row("GetProduct (gRPC)", pid, 16, secs, move |_, _| {
            let (mut c, id) = (p.clone(), pid_.clone());
            async move { c.get_product(GetProductRequest { id }).await.is_ok() }
        })
        .await,
    );
    let p = products.clone();
    rows.extend(
        row(
            "ListProducts, page of 50 (gRPC)",
            pid,
            16,
            secs,
            move |_, _| {
                let mut c = p.clone();
                async move {
                    c.list_products(ListProductsRequest {
                        page_size: 50,
                        ..Default::default()
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().products.len() == 50)
                }
            },
        )
        .await,
    );
    let (i, pid_) = (inventory.clone(), id.clone());
    rows.extend(
        row("GetStock (gRPC)", pid, 16, secs, move |_, _| {
            let (mut c, product_id) = (i.clone(), pid_.clone());
            async move {
                c.get_stock(inv::GetStockRequest { product_id })
                    .await
                    .is_ok()
            }
        })
        .await,
    );
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let gateway = mesh.addr(Target::Gateway);
    let (h, uri, t) = (
        http.clone(),
        format!("http://{gateway}/v1/products/{id}"),
        token.clone(),
    );
    rows.extend(
        row(
            "GET /v1/products/{id} (gateway)",
            pid,
            16,
            secs,
            move |_, _| {
                let (h, uri, t) = (h.clone(), uri.clone(), t.clone());
                async move { rest(&h, "GET", &uri, &t, String::new()).await == 200 }
            },
        )
        .await,
    );
    rows.extend(order_rows(&mesh, secs).await);
    let rss_after = rss_mb(pid);

    let fail_fast = if wanted("CreateOrder, breaker open") {
        // Fail-fast: a second orders process whose inventory does not answer.
        let orders_port = port();
        let metrics_port = port();
        let dead = port();
        let orders_db = match backend {
            Backend::Postgres => {
                let db = TestDb::new(Backend::Postgres).await;
                let url = db.url.clone();
                mesh.dbs.push(db);
                url
            }
            Backend::Sqlite => {
                format!(
                    "sqlite://{}/orders-failfast.db?mode=rwc",
                    mesh.dir.display()
                )
            }
        };
        let mut orders2 = pinned(drill)
            .args(["serve", "orders"])
            .envs(mesh.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("STOCKMESH_ORDERS_PORT", orders_port.to_string())
            .env("STOCKMESH_ORDERS_METRICS_PORT", metrics_port.to_string())
            .env("STOCKMESH_ORDERS_DATABASE_URL", &orders_db)
            .env("STOCKMESH_INVENTORY_ADDRS", format!("127.0.0.1:{dead}"))
            .env("STOCKMESH_BREAKER_OPEN_MS", "600000")
            .env("STOCKMESH_BREAKER_MAX_OPEN_MS", "600000")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let orders2_addr = SocketAddr::from(([127, 0, 0, 1], orders_port));
        wait_serving(orders2_addr, Target::Orders.grpc_service(), &mut orders2).await;
        let orders2_pid = orders2.id().unwrap_or(0);
        let client = stockmesh::proto::orders::v1::order_service_client::OrderServiceClient::new(
            channel(orders2_addr),
        );
        let order = |request_id: String, id: String, token: String| {
            with_token(
                stockmesh::proto::orders::v1::CreateOrderRequest {
                    request_id,
                    items: vec![stockmesh::proto::orders::v1::CreateOrderItem {
                        product_id: id,
                        quantity: 1,
                    }],
                    ..Default::default()
                },
                &token,
            )
        };
        let mut open = false;
        for i in 0..50 {
            match client
                .clone()
                .create_order(order(format!("trip-{i}"), id.clone(), token.clone()))
                .await
            {
                Err(s) if s.message().contains("circuit breaker open") => {
                    open = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(
            open,
            "the fail-fast orders process never saw its breaker open"
        );
        let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
        let before = scrape(metrics).await;
        let (c, t, id2) = (client.clone(), token.clone(), id.clone());
        let cpu = cpu_secs(orders2_pid);
        let fail_fast = run(8, secs, move |client, seq| {
            let (mut c, req) = (
                c.clone(),
                order(format!("ff-{client}-{seq}"), id2.clone(), t.clone()),
            );
            // Success here is the fast refusal.
            async move {
                matches!(c.create_order(req).await, Err(s) if s.code() == tonic::Code::Unavailable)
            }
        })
        .await;
        let fail_fast_cpu = (cpu_secs(orders2_pid) - cpu) * 1e6 / fail_fast.ok.max(1) as f64;
        let after = scrape(metrics).await;
        let server = server_p99(&before, &after, "CreateOrder");
        let _ = orders2.kill().await;
        Some((fail_fast, fail_fast_cpu, server))
    } else {
        None
    };
    mesh.stop().await;

    // The CreateOrder rows again against an older build, in this run (see the module docs).
    let baseline = match std::env::var("STOCKMESH_BENCH_BASELINE") {
        Ok(program) if !program.is_empty() => {
            let base = Mesh::start(&program, backend, "baseline").await;
            let mut rows = Vec::new();
            rows.extend(check_row(&base, secs).await);
            rows.extend(order_rows(&base, secs).await);
            base.stop().await;
            Some((program, rows))
        }
        _ => None,
    };

    let check = rows[0].load.per_sec();
    let backend_name = match backend {
        Backend::Postgres => "PostgreSQL",
        Backend::Sqlite => "SQLite",
    };
    println!(
        "mesh hot paths ({backend_name}), {secs} s per row, mesh pinned to CPU 0{}",
        if two_cpus() {
            ", load on CPU 1"
        } else {
            " (one CPU: not pinned)"
        }
    );
    println!(
        "{:<34} {:>9} {:>9} {:>12} {:>9} {:>9} {:>7}",
        "row", "req/s", "vs Check", "mesh CPU µs", "p50 ms", "p99 ms", "errors"
    );
    for r in &rows {
        println!("{}", r.line(check));
    }
    if let Some((fail_fast, fail_fast_cpu, server)) = fail_fast {
        println!(
            "{:<34} {:>9.0} {:>9} {:>12.0} {:>9.2} {:>9.2} {:>7}",
            "CreateOrder, breaker open, c=8",
            fail_fast.per_sec(),
            "",
            fail_fast_cpu,
            fail_fast.quantile(0.5).as_secs_f64() * 1e3,
            fail_fast.quantile(0.99).as_secs_f64() * 1e3,
            fail_fast.errors
        );
        match server {
            Some(le) => println!(
                "  fail-fast p99 server-side (orders' histogram): ≤ {:.2} ms",
                le * 1e3
            ),
            None => println!("  fail-fast p99 server-side: no histogram"),
        }
    }
    println!("mesh RSS: idle {rss_idle:.1} MB, after the CreateOrder rows {rss_after:.1} MB");
    if let Some((program, base)) = baseline {
        println!("baseline {program}, same rows, same run:");
        let base_check = base.first().map_or(1.0, |r| r.load.per_sec());
        for b in &base {
            let now = rows.iter().find(|r| r.name == b.name);
            println!(
                "{}   now/baseline: {}",
                b.line(base_check),
                now.map_or("-".to_string(), |n| format!(
                    "{:.2}x req/s, {:.2}x CPU per request",
                    n.load.per_sec() / b.load.per_sec(),
                    n.cpu_us / b.cpu_us
                )),
            );
        }
    }
}
