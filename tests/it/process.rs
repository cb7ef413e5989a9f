//! Process-level drill: the mesh runs as separate `stockmesh serve <target>` processes
//! (the real binary, built from `cli/src/main.rs` as `stockmesh-drill`). Orders are placed
//! concurrently while inventory is SIGKILLed and then restarted on the same port and
//! database. Callers must fail fast (not hang) during the outage and succeed again within
//! seconds; once the orders reconciler has run, the stock reserved equals the units of
//! PENDING orders, and nothing left `on_hand`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stockmesh::Target;
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::orders::v1 as pb;
use stockmesh::proto::orders::v1::order_service_client::OrderServiceClient;
use stockmesh::testing::{Backend, TestDb, TestMesh, with_token};
use stockmesh_tests::seed::{Stocked, stocked_product, unique};
use tokio::process::{Child, Command};
use tonic::Code;
use tonic::transport::Channel;

const INITIAL_STOCK: i64 = 100_000;

/// The mesh's processes and what they share.
pub(super) struct Mesh {
    env: Vec<(String, String)>,
    dir: PathBuf,
    addrs: Vec<(Target, SocketAddr)>,
    children: Vec<(Target, Child)>,
    _dbs: Vec<TestDb>,
}

impl Mesh {
    pub(super) async fn new(backend: Backend) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "stockmesh_drill_{}_{}",
            std::process::id(),
            unique("drill")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut env = vec![
            ("STOCKMESH_DATA_DIR".to_string(), dir.display().to_string()),
            ("STOCKMESH_BIND".into(), "127.0.0.1".into()),
            ("STOCKMESH_ADMIN_EMAIL".into(), TestMesh::ADMIN_EMAIL.into()),
            (
                "STOCKMESH_ADMIN_PASSWORD".into(),
                TestMesh::ADMIN_PASSWORD.into(),
            ),
            (
                "STOCKMESH_SERVICE_SECRET".into(),
                format!("drill-{0}-{0}-secret", unique("drill")),
            ),
            // The drills place many orders as one customer: the open-order cap (an abuse
            // limit with its own test in the orders suite) must not be what they measure.
            (
                "STOCKMESH_MAX_PENDING_ORDERS_PER_CUSTOMER".into(),
                "1000000".into(),
            ),
            ("STOCKMESH_RECONCILE_INTERVAL_MS".into(), "200".into()),
            ("STOCKMESH_DRAIN_DELAY_MS".into(), "0".into()),
            // Admin (metrics) ports: ephemeral, so drills can run side by side.
            ("STOCKMESH_AUTH_METRICS_PORT".into(), "0".into()),
            ("STOCKMESH_PRODUCTS_METRICS_PORT".into(), "0".into()),
            ("STOCKMESH_INVENTORY_METRICS_PORT".into(), "0".into()),
            ("STOCKMESH_ORDERS_METRICS_PORT".into(), "0".into()),
            ("STOCKMESH_RECONCILE_AFTER_SECS".into(), "1".into()),
            ("STOCKMESH_BREAKER_OPEN_MS".into(), "500".into()),
            ("STOCKMESH_SHUTDOWN_GRACE_MS".into(), "1000".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        let mut addrs = Vec::new();
        let mut dbs = Vec::new();
        for target in Target::SERVICES {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            drop(listener);
            env.push((
                format!("STOCKMESH_{}_PORT", target.name().to_uppercase()),
                addr.port().to_string(),
            ));
            let db = TestDb::new(backend).await;
            env.push((
                format!("STOCKMESH_{}_DATABASE_URL", target.name().to_uppercase()),
                db.url.clone(),
            ));
            dbs.push(db);
            addrs.push((target, addr));
        }
        // The gateway (no database), for drills that go through it.
        let gateway = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gateway_addr = gateway.local_addr().unwrap();
        drop(gateway);
        env.push((
            "STOCKMESH_GATEWAY_PORT".into(),
            gateway_addr.port().to_string(),
        ));
        addrs.push((Target::Gateway, gateway_addr));
        Self {
            env,
            dir,
            addrs,
            children: Vec::new(),
            _dbs: dbs,
        }
    }

    /// Sets (or replaces) an environment variable of the processes started from now on.
    pub(super) fn set_env(&mut self, key: &str, value: String) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value));
    }

    /// The environment every process gets.
    pub(super) fn env(&self) -> &[(String, String)] {
        &self.env
    }

    pub(super) fn addr(&self, target: Target) -> SocketAddr {
        self.addrs.iter().find(|(t, _)| *t == target).unwrap().1
    }

    /// Starts `stockmesh serve <target>` and waits until its health says SERVING.
    pub(super) async fn start(&mut self, target: Target) {
        let log = log_file(&self.dir, target);
        let child = Command::new(env!("CARGO_BIN_EXE_stockmesh-drill"))
            .arg("serve")
            .arg(target.name())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = self.addr(target);
        // The process binds its port some time after it starts: until then the health
        // Watch cannot even connect, so retry connecting (and notice an early exit).
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut child = child;
        loop {
            match stockmesh::health::wait_serving(
                addr,
                target.grpc_service(),
                Duration::from_secs(60),
            )
            .await
            {
                Ok(()) => break,
                Err(e) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("{target} exited ({status}): {e}\n{}", self.logs(target));
                    }
                    assert!(
                        Instant::now() < give_up,
                        "{target} did not start: {e}\n{}",
                        self.logs(target)
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        self.children.push((target, child));
    }

    /// Starts `stockmesh up` (every target in one process, on the same ports and
    /// databases) and waits until the gateway and every service say SERVING.
    pub(super) async fn start_up(&mut self) {
        let log = log_file(&self.dir, Target::Gateway);
        let mut child = Command::new(env!("CARGO_BIN_EXE_stockmesh-drill"))
            .arg("up")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let give_up = Instant::now() + Duration::from_secs(60);
        for target in Target::ALL {
            while let Err(e) = stockmesh::health::wait_serving(
                self.addr(target),
                target.grpc_service(),
                Duration::from_secs(60),
            )
            .await
            {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("up exited ({status}): {e}\n{}", self.logs(Target::Gateway));
                }
                assert!(
                    Instant::now() < give_up,
                    "up: {target} did not start: {e}\n{}",
                    self.logs(Target::Gateway)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.children.push((Target::Gateway, child));
    }

    /// SIGKILL: no graceful shutdown, no drain, connections reset.
    pub(super) async fn kill(&mut self, target: Target) {
        let i = self
            .children
            .iter()
            .position(|(t, _)| *t == target)
            .unwrap();
        let (_, mut child) = self.children.remove(i);
        child.kill().await.unwrap();
    }

    /// What `target`'s process wrote to stdout and stderr so far.
    pub(super) fn logs(&self, target: Target) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", target.name()))).unwrap_or_default()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn log_file(dir: &Path, target: Target) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{}.log", target.name())))
        .unwrap()
}

pub(super) async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

#[derive(Default)]
struct Load {
    placed: AtomicUsize,
    failed_fast: AtomicUsize,
    slowest_failure_ms: AtomicUsize,
    other_errors: std::sync::Mutex<Vec<String>>,
}

async fn place_orders(
    worker: usize,
    mut orders: OrderServiceClient<Channel>,
    token: String,
    product: String,
    stop: Arc<AtomicBool>,
    load: Arc<Load>,
) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let req = pb::CreateOrderRequest {
            request_id: format!("drill-{worker}-{i}"),
            items: vec![pb::CreateOrderItem {
                product_id: product.clone(),
                quantity: 1 + (i % 3) as i64,
            }],
            ..Default::default()
        };
        let mut req = with_token(req, &token);
        req.set_timeout(Duration::from_secs(10));
        let start = Instant::now();
        match orders.create_order(req).await {
            Ok(_) => {
                load.placed.fetch_add(1, Ordering::SeqCst);
            }
            Err(s) if s.code() == Code::Unavailable => {
                load.failed_fast.fetch_add(1, Ordering::SeqCst);
                let ms = start.elapsed().as_millis() as usize;
                load.slowest_failure_ms.fetch_max(ms, Ordering::SeqCst);
                // An outage: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => {
                load.other_errors
                    .lock()
                    .unwrap()
                    .push(format!("{:?}: {}", s.code(), s.message()));
            }
        }
    }
}

async fn pending_units_and_reserved(
    orders: &mut OrderServiceClient<Channel>,
    inventory: &mut InventoryServiceClient<Channel>,
    token: &str,
    product: &str,
) -> (i64, i64, i64) {
    let mut pending = 0;
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
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        pending += page
            .orders
            .iter()
            .flat_map(|o| &o.items)
            .filter(|item| item.product_id == product)
            .map(|item| item.quantity)
            .sum::<i64>();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let stock = inventory
        .get_stock(inv::GetStockRequest {
            product_id: product.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .stock
        .unwrap();
    (pending, stock.total_reserved, stock.total_on_hand)
}

async fn sigkill_inventory_while_orders_are_placed(backend: Backend) {
    let mut mesh = Mesh::new(backend).await;
    for target in Target::SERVICES {
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
        INITIAL_STOCK,
    )
    .await;
    let mut inventory = InventoryServiceClient::new(channel(mesh.addr(Target::Inventory)).await);

    let orders = OrderServiceClient::new(channel(mesh.addr(Target::Orders)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let workers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(place_orders(
                w,
                orders.clone(),
                token.clone(),
                product.clone(),
                stop.clone(),
                load.clone(),
            ))
        })
        .collect();

    let wait_for = |n: usize, what: &'static str| {
        let load = load.clone();
        async move {
            let give_up = Instant::now() + Duration::from_secs(60);
            while load.placed.load(Ordering::SeqCst) < n {
                assert!(
                    Instant::now() < give_up,
                    "{what}: only {} orders placed",
                    load.placed.load(Ordering::SeqCst)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(30, "before the kill").await;

    mesh.kill(Target::Inventory).await;
    let killed_at = Instant::now();
    let placed_at_kill = load.placed.load(Ordering::SeqCst);
    // Let the outage last long enough for the breaker to open and callers to fail fast.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed_during_outage = load.failed_fast.load(Ordering::SeqCst);
    let slowest = load.slowest_failure_ms.load(Ordering::SeqCst);

    mesh.start(Target::Inventory).await;
    let back_at = Instant::now();
    wait_for(load.placed.load(Ordering::SeqCst) + 30, "after the restart").await;
    let recovered_in = back_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    assert!(failed_during_outage > 0, "no call noticed the outage");
    // Default upstream deadline is 2 s: nobody hung past it (10 s allowed by the caller).
    assert!(slowest < 4_000, "a failing call took {slowest} ms");
    assert!(
        recovered_in < Duration::from_secs(30),
        "recovery took {recovered_in:?}"
    );
    let others = load.other_errors.lock().unwrap().clone();
    assert!(others.is_empty(), "unexpected errors: {others:?}");
    eprintln!(
        "drill: {placed_at_kill} orders before the kill, {failed_during_outage} failed fast \
         (slowest {slowest} ms) during {:?}, recovered {recovered_in:?} after the restart, {} placed in all",
        back_at - killed_at,
        load.placed.load(Ordering::SeqCst)
    );

    // Convergence: reconciler (every 200 ms, after 1 s) finishes or undoes every order
    // the outage interrupted.
    let mut orders = orders;
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let (pending, reserved, on_hand) =
            pending_units_and_reserved(&mut orders, &mut inventory, &token, &product).await;
        assert_eq!(
            on_hand, INITIAL_STOCK,
            "no order was completed, so nothing left on_hand"
        );
        assert!(reserved <= on_hand);
        if pending == reserved {
            assert!(pending > 0);
            break;
        }
        assert!(
            Instant::now() < give_up,
            "never converged: {pending} units in PENDING orders, {reserved} reserved\n{}",
            mesh.logs(Target::Orders)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

stockmesh::db_tests!(sigkill_inventory_while_orders_are_placed);
