//! `grpc.health.v1` for one server: NOT_SERVING until the service says it is ready (its
//! migrations ran), NOT_SERVING while its database is unreachable, and NOT_SERVING from
//! the moment shutdown starts, so load balancers drain it before it stops accepting.
//!
//! Both the overall service `""` and the service's full name always report the same state.
//!
//! Watch streams end when the server's drain delay is over ([`HealthHandle::end_watches`]):
//! they are long-lived, and a graceful shutdown waits for every open stream, so without
//! this each client watching the server would hold its shutdown for the whole grace period.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use crate::Shutdown;

/// How often the database watchdog pings.
const DB_PING_EVERY: Duration = Duration::from_secs(2);

/// Controls what this server's health service reports.
#[derive(Clone)]
pub struct HealthHandle {
    reporter: HealthReporter,
    service: &'static str,
    draining: Arc<AtomicBool>,
    watches_end: CancellationToken,
}

impl HealthHandle {
    /// A handle for `service` (full gRPC name) and the health server to mount, both
    /// reporting NOT_SERVING.
    pub async fn new(service: &'static str) -> (Self, HealthServer<impl Health>) {
        let reporter = HealthReporter::new();
        let watches_end = CancellationToken::new();
        let server = ending_watches(reporter.clone(), watches_end.clone());
        let handle = Self {
            reporter,
            service,
            draining: Arc::new(AtomicBool::new(false)),
            watches_end,
        };
        handle.set(ServingStatus::NotServing).await;
        (handle, server)
    }

    /// Whether shutdown has started (NOT_SERVING for good).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Ends every open Watch stream (and refuses new ones): the drain delay is over and
    /// the server is about to send GOAWAY.
    pub fn end_watches(&self) {
        self.watches_end.cancel();
    }

    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(self.service, status).await;
    }

    /// Ready for traffic (ignored once draining).
    pub async fn set_serving(&self) {
        if !self.draining.load(Ordering::SeqCst) {
            self.set(ServingStatus::Serving).await;
        }
    }

    pub async fn set_not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    /// Shutdown started: NOT_SERVING for good.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.set(ServingStatus::NotServing).await;
    }

    /// Pings `db` periodically and flips SERVING/NOT_SERVING with its reachability,
    /// until `shutdown`.
    pub fn watch_database(&self, db: DatabaseConnection, shutdown: Shutdown) {
        let health = self.clone();
        tokio::spawn(async move {
            let mut healthy = true;
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(DB_PING_EVERY) => {}
                }
                match probe_pool(&db, health.service).await {
                    Ok(()) if !healthy => {
                        tracing::info!(
                            service = health.service,
                            "database reachable again: SERVING"
                        );
                        healthy = true;
                        health.set_serving().await;
                    }
                    Err(e) if healthy => {
                        tracing::warn!(service = health.service, error = %e, "database unreachable: NOT_SERVING");
                        healthy = false;
                        health.set_not_serving().await;
                    }
                    _ => {}
                }
            }
        });
    }
}

/// A health server reporting what `reporter` is told, whose Watch streams end (and new
/// ones are refused) once `end` is cancelled.
pub fn ending_watches(
    reporter: HealthReporter,
    end: CancellationToken,
) -> HealthServer<impl Health> {
    HealthServer::new(EndingWatches {
        inner: HealthService::from_health_reporter(reporter),
        end,
    })
}

/// `stockmesh_db_pool_connections{service,state}`: connections of the service's database
/// pool in use, idle and the pool's maximum, sampled with each health ping; and
/// `stockmesh_db_pool_acquire_seconds{service}`: how long that ping waited for a
/// connection. sqlx has no hook to time every acquire, so the wait is sampled: one probe
/// every ping, which queues behind requests like any other caller when the pool is
/// exhausted. Returns the probe's result: the ping is the database health check.
async fn probe_pool(db: &DatabaseConnection, service: &'static str) -> Result<(), String> {
    use sea_orm::DbBackend;
    let (size, idle, max, waited) = match db.get_database_backend() {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            let stats = (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            );
            (stats.0, stats.1, stats.2, timed_ping(pool).await)
        }
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            let stats = (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            );
            (stats.0, stats.1, stats.2, timed_ping(pool).await)
        }
        _ => return db.ping().await.map_err(|e| e.to_string()),
    };
    let gauge = |state: &'static str, v: f64| {
        metrics::gauge!("stockmesh_db_pool_connections", "service" => service, "state" => state)
            .set(v);
    };
    gauge("idle", idle as f64);
    gauge("in_use", (size as f64 - idle as f64).max(0.0));
    gauge("max", f64::from(max));
    let waited = waited?;
    metrics::histogram!("stockmesh_db_pool_acquire_seconds", "service" => service)
        .record(waited.as_secs_f64());
    Ok(())
}

/// Acquires a connection (timed) and pings the database on it.
async fn timed_ping<DB: sea_orm::sqlx::Database>(
    pool: &sea_orm::sqlx::Pool<DB>,
) -> Result<std::time::Duration, String> {
    use sea_orm::sqlx::Connection as _;
    let start = std::time::Instant::now();
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let waited = start.elapsed();
    conn.ping().await.map_err(|e| e.to_string())?;
    Ok(waited)
}

/// tonic-health's service, whose Watch streams end when the server drains.
struct EndingWatches {
    inner: HealthService,
    end: CancellationToken,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for EndingWatches {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if self.end.is_cancelled() {
            return Err(Status::unavailable("server is shutting down"));
        }
        let stream = self.inner.watch(request).await?.into_inner();
        let end = self.end.clone().cancelled_owned();
        Ok(Response::new(Box::pin(stream.take_until(end))))
    }
}

/// Waits until `service` at `addr` reports SERVING, following the health Watch stream (a
/// readiness signal, not polling with sleeps). Fails after `timeout`.
pub async fn wait_serving(
    addr: std::net::SocketAddr,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    let connect = async {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad address {addr}: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))
    };
    wait_serving_via(connect, &addr.to_string(), service, timeout).await
}

/// [`wait_serving`] on a channel `connect` makes (an mTLS one:
/// [`crate::client::ClientTls::connect`]); `at` names the server in errors.
pub async fn wait_serving_via(
    connect: impl std::future::Future<Output = Result<tonic::transport::Channel, String>>,
    at: &str,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let wait = async {
        let channel = connect.await?;
        let mut stream = HealthClient::new(channel)
            .watch(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|e| format!("health watch on {at}: {e}"))?
            .into_inner();
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|e| format!("health watch on {at}: {e}"))?
        {
            if msg.status == ServingStatus::Serving as i32 {
                return Ok(());
            }
        }
        Err(format!("{service} at {at} stopped before it was SERVING"))
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("{service} at {at} not SERVING within {timeout:?}"))?
}
