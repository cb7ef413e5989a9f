//! Test support shared by every crate's integration tests (feature `testing`).
//!
//! * [`TestDb`]: a fresh database per test — a SQLite file in a temp dir, or a uniquely
//!   named PostgreSQL database on `STOCKMESH_TEST_PG_URL` (default
//!   `postgres://postgres@127.0.0.1:5432`) that is dropped when the value is dropped. Only
//!   databases this process created are ever dropped.
//! * [`db_tests!`](crate::db_tests): runs one async test body on both backends. Without
//!   PostgreSQL the PostgreSQL variant is skipped with a message — except under `CI=true`,
//!   where it fails loudly.
//! * [`bind`] and [`wait_serving`]: start servers on port 0 and wait for their health to
//!   say SERVING (a readiness signal, never a sleep).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, Statement};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Which database engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn pg_base() -> String {
    std::env::var("STOCKMESH_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// True when running in CI, where every suite must really run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl Backend {
    /// Whether this backend can be used here. PostgreSQL unreachable under `CI=true`
    /// panics: CI must never silently skip the PostgreSQL suites.
    pub async fn available(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => {
                let url = format!("{}/postgres", pg_base());
                let ok = match tokio::time::timeout(Duration::from_secs(5), Database::connect(&url))
                    .await
                {
                    Ok(Ok(db)) => {
                        let _ = db.close().await;
                        true
                    }
                    _ => false,
                };
                if !ok && in_ci() {
                    panic!(
                        "CI=true but PostgreSQL is unreachable at {url}: the PostgreSQL suites cannot run"
                    );
                }
                if !ok {
                    eprintln!("PostgreSQL unreachable at {url}: skipping the PostgreSQL variant");
                }
                ok
            }
        }
    }
}

/// A fresh, empty database for one test; removed on drop.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pg_name: Option<String>,
    sqlite_dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique("stockmesh_test"));
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    panic!("cannot create {}: {e}", dir.display());
                }
                Self {
                    url: format!("sqlite://{}/db.sqlite", dir.display()),
                    backend,
                    pg_name: None,
                    sqlite_dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = unique("stockmesh_test");
                let admin = Database::connect(format!("{}/postgres", pg_base()))
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL unreachable: {e}"));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
                let _ = admin.close().await;
                Self {
                    url: format!("{}/{name}", pg_base()),
                    backend,
                    pg_name: Some(name),
                    sqlite_dir: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = self.sqlite_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = self.pg_name.take() {
            // Drop runs inside the test's runtime; use a thread with its own runtime so
            // the database is really gone before the test binary moves on.
            let handle = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(admin) = Database::connect(format!("{}/postgres", pg_base())).await {
                        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        if let Err(e) = admin
                            .execute(Statement::from_string(admin.get_database_backend(), sql))
                            .await
                        {
                            eprintln!("cannot drop test database {name}: {e}");
                        }
                        let _ = admin.close().await;
                    }
                });
            });
            let _ = handle.join();
        }
    }
}

/// Runs each listed `async fn name(backend: Backend)` as two tests, `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! db_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::testing::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if $crate::testing::Backend::Postgres.available().await {
                        super::$name($crate::testing::Backend::Postgres).await
                    }
                }
            )*
        }
    };
}

/// A listener on an ephemeral loopback port.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local addr: {e}"));
    (listener, addr)
}

/// Waits (via the health Watch stream) until `service` at `addr` reports SERVING.
pub async fn wait_serving(addr: SocketAddr, service: &str) {
    let wait = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap_or_else(|e| panic!("bad addr: {e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let mut client = HealthClient::new(channel);
        let mut stream = client
            .watch(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("health watch failed: {e}"))
            .into_inner();
        while let Some(msg) = stream
            .message()
            .await
            .unwrap_or_else(|e| panic!("health watch: {e}"))
        {
            if msg.status == ServingStatus::Serving as i32 {
                return;
            }
        }
        panic!("health stream of {service} ended before SERVING");
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("{service} at {addr} not SERVING within 60 s"));
}
