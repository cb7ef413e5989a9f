//! Test support shared by every crate's integration tests (feature `testing`).
//!
//! * [`TestDb`]: a fresh database per test — a SQLite file in a temp dir, or a uniquely
//!   named PostgreSQL database on `STOCKMESH_TEST_PG_URL` (default
//!   `postgres://postgres@127.0.0.1:5432`) that is dropped when the value is dropped. Only
//!   databases this process created are ever dropped.
//! * [`db_tests!`](crate::db_tests): runs one async test body on both backends. Without
//!   PostgreSQL the PostgreSQL variant is skipped with a message — except under `CI=true`,
//!   where it fails loudly.
//! * [`nats_url`]: the shared NATS (JetStream) server of the event drills, on
//!   `STOCKMESH_TEST_NATS_URL` (default `nats://127.0.0.1:4222`); like PostgreSQL, missing
//!   means skipped here and a failure under `CI=true`. Drills use a unique stream name and
//!   subject prefix per run and delete what they created.
//! * [`bind`] and [`wait_serving`]: start servers on port 0 and wait for their health to
//!   say SERVING (a readiness signal, never a sleep).
//! * [`outbox_log`]: the events a service's transactions committed, read through
//!   database triggers, and a trigger that makes the outbox insert fail.

pub mod outbox_log;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use tokio::net::TcpListener;

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

/// The shared NATS server for event drills, if it is reachable. Unreachable under
/// `CI=true` panics: CI must never silently skip the NATS drills.
pub async fn nats_url() -> Option<String> {
    let url = std::env::var("STOCKMESH_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
    let hostport = url.trim_start_matches("nats://").to_string();
    let ok = matches!(
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(hostport.as_str())
        )
        .await,
        Ok(Ok(_))
    );
    if !ok && in_ci() {
        panic!("CI=true but NATS is unreachable at {url}: the NATS drills cannot run");
    }
    if !ok {
        eprintln!("NATS unreachable at {url}: skipping this NATS drill");
    }
    ok.then_some(url)
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
                        if let Err(e) = admin.execute_unprepared(&sql).await {
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
    if let Err(e) = crate::health::wait_serving(addr, service, Duration::from_secs(60)).await {
        panic!("{e}");
    }
}

/// One service of a [`TestMesh`], running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: crate::Shutdown,
    pub task: tokio::task::JoinHandle<crate::Result<()>>,
}

impl Running {
    /// Stops the server (as SIGTERM would) and waits for it to return.
    pub async fn stop(self) {
        self.shutdown.trigger();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("server failed while stopping: {e}"),
            Err(e) => panic!("server task panicked: {e}"),
        }
    }
}

/// Services started in-process on ephemeral ports, each with a fresh database on one
/// backend. Services are started in dependency order by the test (auth first); each start
/// points the shared [`crate::Config`] at the new address so later services find it.
pub struct TestMesh {
    pub backend: Backend,
    pub config: crate::Config,
    pub shutdown: crate::Shutdown,
    dbs: Vec<TestDb>,
    data_dir: PathBuf,
}

impl TestMesh {
    /// A mesh with a fresh database per service on `backend`, a random service secret,
    /// and a known admin password ([`TestMesh::ADMIN_EMAIL`], [`TestMesh::ADMIN_PASSWORD`]).
    pub async fn new(backend: Backend) -> Self {
        let mut config = crate::Config::from_env().unwrap_or_else(|e| panic!("config: {e}"));
        let data_dir = std::env::temp_dir().join(unique("stockmesh_mesh"));
        config.data_dir = data_dir.clone();
        // In-process meshes stop at the end of each test: no drain delay to wait out
        // (the drills that exercise draining set their own).
        config.drain_delay_ms = 0;
        config.auth.admin_email = Self::ADMIN_EMAIL.to_string();
        config.auth.admin_password = Some(Self::ADMIN_PASSWORD.to_string());
        config.auth.service_secret = Some(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut dbs = Vec::new();
        for target in crate::Target::SERVICES {
            let db = TestDb::new(backend).await;
            config.set_database_url(target, db.url.clone());
            dbs.push(db);
        }
        Self {
            backend,
            config,
            shutdown: crate::Shutdown::new(),
            dbs,
            data_dir,
        }
    }

    pub const ADMIN_EMAIL: &'static str = "admin@stockmesh.test";
    pub const ADMIN_PASSWORD: &'static str = "admin-password-123";

    /// Starts `target` with `serve` on an ephemeral port and waits until it is SERVING.
    pub async fn start<F, Fut>(&mut self, target: crate::Target, serve: F) -> Running
    where
        F: FnOnce(std::sync::Arc<crate::Config>, TcpListener, crate::Shutdown) -> Fut,
        Fut: std::future::Future<Output = crate::Result<()>> + Send + 'static,
    {
        let (listener, addr) = bind().await;
        self.config.set_port(target, addr.port());
        self.config
            .set_upstream_addrs(target, vec![format!("http://{addr}")]);
        let shutdown = self.shutdown.child();
        let task = tokio::spawn(serve(
            std::sync::Arc::new(self.config.clone()),
            listener,
            shutdown.clone(),
        ));
        wait_serving(addr, target.grpc_service()).await;
        Running {
            addr,
            shutdown,
            task,
        }
    }

    /// Starts `target` again on a known address (after [`Running::stop`]), e.g. to bring a
    /// killed upstream back on the port its callers know.
    pub async fn restart_on<F, Fut>(
        &mut self,
        target: crate::Target,
        addr: SocketAddr,
        serve: F,
    ) -> Running
    where
        F: FnOnce(std::sync::Arc<crate::Config>, TcpListener, crate::Shutdown) -> Fut,
        Fut: std::future::Future<Output = crate::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot rebind {addr}: {e}"));
        let shutdown = self.shutdown.child();
        let task = tokio::spawn(serve(
            std::sync::Arc::new(self.config.clone()),
            listener,
            shutdown.clone(),
        ));
        wait_serving(addr, target.grpc_service()).await;
        Running {
            addr,
            shutdown,
            task,
        }
    }

    /// A plain tonic channel to `addr` (no resilience stack), for test clients.
    pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap_or_else(|e| panic!("bad addr: {e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
    }

    /// An access token of service identity `target` (role SERVICE) from the auth server at
    /// `auth`, obtained the way services obtain theirs (IssueServiceToken).
    pub async fn service_token(&self, auth: SocketAddr, target: crate::Target) -> String {
        let secret = self
            .config
            .auth
            .service_secret
            .clone()
            .unwrap_or_else(|| panic!("TestMesh sets a service secret"));
        crate::proto::auth::v1::auth_service_client::AuthServiceClient::new(
            Self::channel(auth).await,
        )
        .issue_service_token(crate::identity::service_token_request(&secret, target))
        .await
        .unwrap_or_else(|e| panic!("service token for {target}: {e}"))
        .into_inner()
        .access_token
    }

    /// Database URL of a service in this mesh.
    pub fn database_url(&self, target: crate::Target) -> String {
        self.config.database_url(target)
    }
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        self.shutdown.trigger();
        // Databases drop after the servers were told to stop (FORCE closes their pools).
        self.dbs.clear();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Adds `authorization: Bearer <token>` to a request.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}
