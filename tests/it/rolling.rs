//! Rolling restart drill: two replicas each of products, inventory and orders (separate
//! `stockmesh-drill serve <target>` processes sharing their service's PostgreSQL
//! database), one auth, one gateway. Mixed load goes through the gateway the whole time —
//! REST reads, gRPC reads and CreateOrder — while every replica in turn is SIGTERMed,
//! waited for (it must exit 0) and started again. No request may fail, and the books must
//! agree afterwards: stock reserved equals the units of PENDING orders, and nothing left
//! `on_hand` (no order was completed).
//!
//! PostgreSQL only: several processes serving one service need a shared database (SQLite
//! is the single-node setup).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stockmesh::Target;
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::orders::v1 as pb;
use stockmesh::proto::orders::v1::order_service_client::OrderServiceClient;
use stockmesh::proto::products::v1::GetProductRequest;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::testing::{Backend, TestDb, TestMesh, with_token};
use stockmesh_tests::seed::{Stocked, stocked_product};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

const STOCK: i64 = 1_000_000;
const REPLICATED: [Target; 3] = [Target::Products, Target::Inventory, Target::Orders];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The processes of the drill.
struct Fleet {
    env: Vec<(String, String)>,
    dir: PathBuf,
    /// (target, replica) → port.
    ports: Vec<((Target, usize), u16)>,
    children: Vec<((Target, usize), Child)>,
    _dbs: Vec<TestDb>,
}

impl Fleet {
    async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "stockmesh_rolling_{}_{:x}",
            std::process::id(),
            nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut env: Vec<(String, String)> = [
            ("STOCKMESH_DATA_DIR", dir.display().to_string()),
            ("STOCKMESH_BIND", "127.0.0.1".into()),
            ("STOCKMESH_ADMIN_EMAIL", TestMesh::ADMIN_EMAIL.into()),
            ("STOCKMESH_ADMIN_PASSWORD", TestMesh::ADMIN_PASSWORD.into()),
            (
                "STOCKMESH_SERVICE_SECRET",
                format!("rolling-{0:x}-{0:x}-secret", nanos()),
            ),
            (
                "STOCKMESH_MAX_PENDING_ORDERS_PER_CUSTOMER",
                "1000000".into(),
            ),
            // The drain under test: NOT_SERVING for 1 s before GOAWAY.
            ("STOCKMESH_DRAIN_DELAY_MS", "1000".into()),
            ("STOCKMESH_SHUTDOWN_GRACE_MS", "5000".into()),
            // Admin (metrics) ports: ephemeral, so replicas can run side by side.
            ("STOCKMESH_AUTH_METRICS_PORT", "0".into()),
            ("STOCKMESH_PRODUCTS_METRICS_PORT", "0".into()),
            ("STOCKMESH_INVENTORY_METRICS_PORT", "0".into()),
            ("STOCKMESH_ORDERS_METRICS_PORT", "0".into()),
            // The drill measures the drain, not rate limits.
            ("STOCKMESH_RATE_LIMIT_RPS", "1000000".into()),
            ("STOCKMESH_RATE_LIMIT_BURST", "1000000".into()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut ports = Vec::new();
        let mut dbs = Vec::new();
        for target in Target::SERVICES {
            let db = TestDb::new(Backend::Postgres).await;
            env.push((
                format!("STOCKMESH_{}_DATABASE_URL", target.name().to_uppercase()),
                db.url.clone(),
            ));
            dbs.push(db);
            let replicas = if REPLICATED.contains(&target) { 2 } else { 1 };
            let mut addrs = Vec::new();
            for r in 0..replicas {
                let port = free_port();
                ports.push(((target, r), port));
                addrs.push(format!("127.0.0.1:{port}"));
            }
            env.push((
                format!("STOCKMESH_{}_ADDRS", target.name().to_uppercase()),
                addrs.join(","),
            ));
        }
        ports.push(((Target::Gateway, 0), free_port()));
        Self {
            env,
            dir,
            ports,
            children: Vec::new(),
            _dbs: dbs,
        }
    }

    fn addr(&self, target: Target, replica: usize) -> SocketAddr {
        let port = self
            .ports
            .iter()
            .find(|(k, _)| *k == (target, replica))
            .map(|(_, p)| *p)
            .unwrap();
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn log(&self, target: Target, replica: usize) -> PathBuf {
        self.dir.join(format!("{}-{replica}.log", target.name()))
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for ((t, r), _) in &self.ports {
            out.push_str(&format!("\n==== {t} #{r}\n"));
            out.push_str(&std::fs::read_to_string(self.log(*t, *r)).unwrap_or_default());
        }
        out
    }

    /// Starts replica `replica` of `target` and waits until it says SERVING.
    async fn start(&mut self, target: Target, replica: usize) {
        let addr = self.addr(target, replica);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(target, replica))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stockmesh-drill"))
            .args(["serve", target.name()])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                format!("STOCKMESH_{}_PORT", target.name().to_uppercase()),
                addr.port().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let give_up = Instant::now() + Duration::from_secs(60);
        while let Err(e) =
            stockmesh::health::wait_serving(addr, target.grpc_service(), Duration::from_secs(60))
                .await
        {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{target} #{replica} exited ({status}): {e}\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < give_up,
                "{target} #{replica} did not start: {e}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.children.push(((target, replica), child));
    }

    /// SIGTERM, then waits for the process to exit; returns its exit code.
    async fn terminate(&mut self, target: Target, replica: usize) -> Option<i32> {
        let i = self
            .children
            .iter()
            .position(|(k, _)| *k == (target, replica))
            .unwrap();
        let (_, mut child) = self.children.remove(i);
        let pid = child.id().unwrap();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{target} #{replica} did not exit within 30 s of SIGTERM"))
            .unwrap()
            .code()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    ok: [AtomicUsize; 3],
    failures: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    fn fail(&self, what: &str, why: String) {
        self.failures.lock().unwrap().push(format!("{what}: {why}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_replica_fails_no_request() {
    if !Backend::Postgres.available().await {
        return;
    }
    let mut fleet = Fleet::new().await;
    fleet.start(Target::Auth, 0).await;
    for target in REPLICATED {
        for r in 0..2 {
            fleet.start(target, r).await;
        }
    }
    fleet.start(Target::Gateway, 0).await;
    let gateway = fleet.addr(Target::Gateway, 0);

    let token = AuthServiceClient::new(channel(fleet.addr(Target::Auth, 0)).await)
        .login(LoginRequest {
            email: TestMesh::ADMIN_EMAIL.into(),
            password: TestMesh::ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let gw = channel(gateway).await;
    let Stocked { product, .. } = stocked_product(gw.clone(), gw.clone(), &token, STOCK).await;
    let mut inventory = InventoryServiceClient::new(gw.clone());

    // The load: 2 REST readers, 2 gRPC readers, 2 order takers, all through the gateway.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let mut workers = Vec::new();
    let http: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for w in 0..6 {
        let (stop, seen, product, token) =
            (stop.clone(), seen.clone(), product.clone(), token.clone());
        let (gw, http) = (gw.clone(), http.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                match w % 3 {
                    0 => {
                        let uri = format!("http://{gateway}/v1/products/{product}");
                        match http.get(uri.parse().unwrap()).await {
                            Ok(resp) if resp.status() == 200 => {
                                let _ = resp.into_body().collect().await;
                                seen.ok[0].fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(resp) => {
                                let status = resp.status();
                                let body = resp
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                seen.fail(
                                    "REST GET",
                                    format!("{status} {}", String::from_utf8_lossy(&body)),
                                );
                            }
                            Err(e) => seen.fail("REST GET", e.to_string()),
                        }
                    }
                    1 => {
                        let mut c = ProductServiceClient::new(gw.clone());
                        match c
                            .get_product(GetProductRequest {
                                id: product.clone(),
                            })
                            .await
                        {
                            Ok(_) => {
                                seen.ok[1].fetch_add(1, Ordering::SeqCst);
                            }
                            Err(s) => seen.fail(
                                "gRPC GetProduct",
                                format!("{:?}: {}", s.code(), s.message()),
                            ),
                        }
                    }
                    _ => {
                        let mut c = OrderServiceClient::new(gw.clone());
                        let req = pb::CreateOrderRequest {
                            request_id: format!("roll-{w}-{i}"),
                            items: vec![pb::CreateOrderItem {
                                product_id: product.clone(),
                                quantity: 1 + (i % 3) as i64,
                            }],
                            ..Default::default()
                        };
                        match c.create_order(with_token(req, &token)).await {
                            Ok(_) => {
                                seen.ok[2].fetch_add(1, Ordering::SeqCst);
                            }
                            Err(s) => seen.fail(
                                "gRPC CreateOrder",
                                format!("{:?}: {}", s.code(), s.message()),
                            ),
                        }
                    }
                }
            }
        }));
    }

    // Every replica in turn: SIGTERM (it must exit 0), start again, let it take load.
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    settle().await;
    let started = Instant::now();
    let mut restarts = 0;
    for target in REPLICATED {
        for r in 0..2 {
            let code = fleet.terminate(target, r).await;
            assert_eq!(
                code,
                Some(0),
                "{target} #{r} exit code after SIGTERM\n{}",
                fleet.logs()
            );
            fleet.start(target, r).await;
            restarts += 1;
            settle().await;
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    let failures = seen.failures.lock().unwrap().clone();
    let ok: Vec<usize> = seen.ok.iter().map(|n| n.load(Ordering::SeqCst)).collect();
    assert!(
        failures.is_empty(),
        "{} requests failed during the rolling restart (ok: REST {}, gRPC {}, orders {}): {:?}\n{}",
        failures.len(),
        ok[0],
        ok[1],
        ok[2],
        &failures[..failures.len().min(10)],
        fleet.logs()
    );
    assert!(
        ok.iter().all(|n| *n > 0),
        "every kind of request ran: {ok:?}"
    );
    println!(
        "rolling restart: {restarts} replicas restarted in {took:?}; 0 failed of REST {} / gRPC {} / CreateOrder {}",
        ok[0], ok[1], ok[2]
    );

    // The books: no completion, so on_hand is untouched; reserved = units of PENDING.
    let mut orders = OrderServiceClient::new(gw.clone());
    let mut pending = 0i64;
    let mut page_token = String::new();
    loop {
        let page = orders
            .list_orders(with_token(
                pb::ListOrdersRequest {
                    page_size: 500,
                    page_token: page_token.clone(),
                    status: pb::OrderStatus::Pending as i32,
                    customer_id: String::new(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        pending += page
            .orders
            .iter()
            .flat_map(|o| &o.items)
            .map(|i| i.quantity)
            .sum::<i64>();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let stock = inventory
        .get_stock(with_token(
            inv::GetStockRequest {
                product_id: product.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .stock
        .unwrap();
    assert_eq!(stock.total_on_hand, STOCK, "nothing left on_hand");
    assert_eq!(
        stock.total_reserved, pending,
        "reserved stock = units of PENDING orders"
    );
    assert!(pending > 0);
}
