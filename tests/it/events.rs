//! Events: the transactional outbox, its relay and the live feeds, on the embedded bus and
//! on real NATS JetStream.
//!
//! Kernel-level checks here drive `stockmesh::events` directly on a bare outbox table
//! (SQLite and PostgreSQL); the drills in the submodules run the real services:
//! * [`outage`]: NATS killed and restarted mid-run loses nothing, duplicates nothing;
//! * [`replicas`]: two relays on one database publish every event once; a watcher on one
//!   orders replica sees an order placed through another within 1 s, over NATS and in the
//!   embedded mode.
//!
//! NATS drills use a unique stream name and subject prefix per run on the shared server
//! (`stockmesh::testing::nats_url`) and delete the stream afterwards; the outage drill
//! starts its own `nats-server` and kills it by pid. Under `CI=true` a missing NATS (or
//! `nats-server` binary) fails the drill.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use sea_orm::{ConnectionTrait, TransactionTrait};
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use stockmesh::events::{Event, Events, OutboxMigration, Topic, append, new_event_id, outbox};
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::testing::{Backend, TestDb, TestMesh, in_ci, with_token};
use stockmesh::{Config, Shutdown, Target};
use stockmesh_tests::seed::{Stocked, stocked_product};
use tokio::process::{Child, Command};
use tonic::Streaming;

mod outage;
mod replicas;

/// The `outbox` table alone.
pub(super) struct OutboxOnly;

impl MigratorTrait for OutboxOnly {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(OutboxMigration)]
    }
}

/// A stream name and subject prefix no other run uses.
#[derive(Debug, Clone)]
pub(super) struct Names {
    pub stream: String,
    pub prefix: String,
}

impl Names {
    pub fn new() -> Self {
        let tag = new_event_id().replace('-', "");
        Self {
            stream: format!("DRILL_{tag}"),
            prefix: format!("drill_{tag}"),
        }
    }

    /// Points `config`'s events at NATS `url` under these names.
    pub fn apply(&self, config: &mut Config, url: &str) {
        config.events.nats_url = Some(url.to_string());
        config.events.nats_stream = self.stream.clone();
        config.events.nats_subject_prefix = self.prefix.clone();
    }
}

/// The JetStream context of a plain client of `url`.
pub(super) async fn jetstream(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

/// Every message in `stream`: (subject, `Nats-Msg-Id`) in stream order.
pub(super) async fn stream_messages(url: &str, stream: &str) -> Vec<(String, String)> {
    let js = jetstream(url).await;
    let mut s = js.get_stream(stream).await.unwrap();
    let state = s.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        out.push((m.subject.to_string(), id));
    }
    out
}

/// Deletes `stream` (a drill's own) from `url`.
pub(super) async fn delete_stream(url: &str, stream: &str) {
    if let Err(e) = jetstream(url).await.delete_stream(stream).await {
        eprintln!("cannot delete drill stream {stream}: {e}");
    }
}

/// How many times each id occurs.
pub(super) fn counts<'a>(ids: impl IntoIterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// A `nats-server` of this drill's own (JetStream, file store in a temp dir), so that it
/// can be killed and restarted on the same port and store.
pub(super) struct OwnNats {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

const NATS_SERVER: &str = "/usr/sbin/nats-server";

impl OwnNats {
    /// Starts one; `None` (skip) when the binary is missing, a failure under `CI=true`.
    pub async fn start() -> Option<OwnNats> {
        if !std::path::Path::new(NATS_SERVER).exists() {
            assert!(!in_ci(), "CI=true but {NATS_SERVER} is missing");
            eprintln!("{NATS_SERVER} missing: skipping this drill");
            return None;
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("stockmesh_nats_{}", Names::new().prefix));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nats = OwnNats {
            port,
            dir,
            child: None,
        };
        nats.spawn().await;
        Some(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port and store and waits until it accepts.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(NATS_SERVER)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = async_nats::connect(self.url()).await {
                // JetStream answers once the store is loaded.
                if client.request("$JS.API.INFO", "".into()).await.is_ok() {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the server (by its pid) and waits until it is gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.unwrap();
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) async fn next_event(w: &mut stockmesh::events::Watcher, within: Duration) -> Event {
    tokio::time::timeout(within, w.next())
        .await
        .expect("an event in time")
        .expect("feed open")
        .expect("not lagged")
}

pub(super) fn event(topic: Topic, n: u64) -> Event {
    Event::new(new_event_id(), topic, &prost_types_like(n))
}

/// Any protobuf message will do as payload at this level.
fn prost_types_like(n: u64) -> stockmesh::proto::inventory::v1::GetStockRequest {
    stockmesh::proto::inventory::v1::GetStockRequest {
        product_id: format!("p{n}"),
    }
}

// === kernel level, both databases ===

/// An outbox row commits with its transaction and vanishes with a rolled-back one.
async fn outbox_rows_commit_and_roll_back_with_their_transaction(backend: Backend) {
    let tdb = TestDb::new(backend).await;
    let db = stockmesh::db::connect_and_migrate::<OutboxOnly>(&tdb.url)
        .await
        .unwrap();
    let kept = event(Topic::StockChanged, 1);
    let txn = db.begin().await.unwrap();
    append(&txn, &kept).await.unwrap();
    txn.commit().await.unwrap();
    let lost = event(Topic::StockChanged, 2);
    let txn = db.begin().await.unwrap();
    append(&txn, &lost).await.unwrap();
    // The change the event describes fails after it: both go.
    assert!(
        txn.execute_unprepared("SELECT * FROM no_such_table")
            .await
            .is_err()
    );
    txn.rollback().await.unwrap();
    let now = chrono::Utc::now();
    let rows = outbox::claim(&db, now, now + chrono::Duration::seconds(30), 100)
        .await
        .unwrap();
    let ids: Vec<_> = rows.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, [kept.id.as_str()]);
    assert_eq!(rows[0].event(), Some(kept));
    db.close().await.unwrap();
}

/// Concurrent claims never hand one row to two relays, and a claim is not re-taken
/// before its lease lapses.
async fn concurrent_claims_never_overlap(backend: Backend) {
    let tdb = TestDb::new(backend).await;
    let db = stockmesh::db::connect_and_migrate::<OutboxOnly>(&tdb.url)
        .await
        .unwrap();
    for n in 0..300 {
        append(&db, &event(Topic::OrderStatusChanged, n))
            .await
            .unwrap();
    }
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::seconds(30);
    let claims =
        futures::future::join_all((0..6).map(|_| outbox::claim(&db, now, until, 40))).await;
    let mut all: Vec<i64> = Vec::new();
    for c in claims {
        let rows = c.unwrap();
        assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq), "seq order");
        all.extend(rows.iter().map(|r| r.seq));
    }
    assert_eq!(all.len(), 240);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 240, "no row claimed twice");
    let rest = outbox::claim(&db, now, until, 100).await.unwrap();
    assert_eq!(rest.len(), 60, "only unclaimed rows are left");
    // Lapsed leases are claimable again.
    let later = until + chrono::Duration::seconds(1);
    let again = outbox::claim(&db, later, later + chrono::Duration::seconds(30), 1000)
        .await
        .unwrap();
    assert_eq!(again.len(), 300);
    db.close().await.unwrap();
}

/// The relay on NATS: events appended on either database reach a feed on another
/// `Events` of the same stream, and the stream holds each once.
async fn relay_publishes_to_jetstream_once(backend: Backend) {
    let Some(url) = stockmesh::testing::nats_url().await else {
        return;
    };
    let names = Names::new();
    let tdb = TestDb::new(backend).await;
    let db = stockmesh::db::connect_and_migrate::<OutboxOnly>(&tdb.url)
        .await
        .unwrap();
    let mut config = Config::from_env().unwrap();
    names.apply(&mut config, &url);
    let shutdown = Shutdown::new();
    let writer = Events::start(&config, Target::Orders, db.clone(), shutdown.clone())
        .await
        .unwrap();
    // A replica without outbox rows of its own: a second database.
    let tdb2 = TestDb::new(backend).await;
    let db2 = stockmesh::db::connect_and_migrate::<OutboxOnly>(&tdb2.url)
        .await
        .unwrap();
    let reader = Events::start(&config, Target::Orders, db2.clone(), shutdown.clone())
        .await
        .unwrap();
    let mut w = reader.feed(Topic::OrderStatusChanged).watch(None);
    let sent: Vec<Event> = (0..20)
        .map(|n| event(Topic::OrderStatusChanged, n))
        .collect();
    for e in &sent {
        let txn = db.begin().await.unwrap();
        append(&txn, e).await.unwrap();
        txn.commit().await.unwrap();
        writer.committed();
    }
    for e in &sent {
        assert_eq!(&next_event(&mut w, Duration::from_secs(10)).await, e);
    }
    let msgs = stream_messages(&url, &names.stream).await;
    let subject = format!("{}.{}", names.prefix, Topic::OrderStatusChanged.subject());
    assert!(msgs.iter().all(|(s, _)| *s == subject));
    let ids: Vec<&str> = msgs.iter().map(|(_, id)| id.as_str()).collect();
    let want: Vec<&str> = sent.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, want, "each event once, in order");
    shutdown.trigger();
    delete_stream(&url, &names.stream).await;
    db.close().await.unwrap();
    db2.close().await.unwrap();
}

stockmesh::db_tests!(
    outbox_rows_commit_and_roll_back_with_their_transaction,
    concurrent_claims_never_overlap,
    relay_publishes_to_jetstream_once,
);

// === the mesh the drills run ===

/// An admin token, a product, a warehouse, and stock of it.
pub(super) struct Shop {
    pub admin: String,
    pub product: String,
    pub warehouse: String,
}

impl Shop {
    pub async fn new(
        auth: SocketAddr,
        products: SocketAddr,
        inventory: SocketAddr,
        stock: i64,
    ) -> Shop {
        let admin = AuthServiceClient::new(TestMesh::channel(auth).await)
            .login(LoginRequest {
                email: TestMesh::ADMIN_EMAIL.into(),
                password: TestMesh::ADMIN_PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let Stocked { product, warehouse } = stocked_product(
            TestMesh::channel(products).await,
            TestMesh::channel(inventory).await,
            &admin,
            stock,
        )
        .await;
        Shop {
            admin,
            product,
            warehouse,
        }
    }

    /// AdjustStock by `delta` through `inventory`; must succeed.
    pub async fn adjust(&self, inventory: SocketAddr, delta: i64) {
        InventoryServiceClient::new(TestMesh::channel(inventory).await)
            .adjust_stock(with_token(
                inv::AdjustStockRequest {
                    product_id: self.product.clone(),
                    warehouse_id: self.warehouse.clone(),
                    delta,
                    reason: "drill".into(),
                    request_id: new_event_id(),
                },
                &self.admin,
            ))
            .await
            .unwrap();
    }

    /// A WatchStock stream of the product through `inventory`, past its first message
    /// (the current stock).
    pub async fn watch_stock(&self, inventory: SocketAddr) -> Streaming<inv::WatchStockResponse> {
        let mut stream = InventoryServiceClient::new(TestMesh::channel(inventory).await)
            .watch_stock(with_token(
                inv::WatchStockRequest {
                    product_ids: vec![self.product.clone()],
                    after_event_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("first message in time")
            .unwrap()
            .expect("stream open");
        assert!(first.event_id.is_empty(), "the current stock comes first");
        stream
    }
}

/// The next WatchStock change, or `None` when none comes within `within`.
pub(super) async fn next_change(
    stream: &mut Streaming<inv::WatchStockResponse>,
    within: Duration,
) -> Option<inv::WatchStockResponse> {
    match tokio::time::timeout(within, stream.message()).await {
        Ok(m) => Some(m.unwrap().expect("stream open")),
        Err(_) => None,
    }
}

/// The outbox rows of a service's database.
pub(super) async fn outbox_rows(url: &str) -> u64 {
    let db = stockmesh::db::connect(url).await.unwrap();
    let n = outbox::pending(&db).await.unwrap();
    db.close().await.unwrap();
    n
}
