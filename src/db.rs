//! Database connection and migrations for one service.
//!
//! SQLite (the laptop default) gets WAL journaling, a busy timeout and foreign keys, so
//! concurrent readers never block the single writer and a writer waits instead of failing;
//! WAL checkpoints run on a background task every [`CHECKPOINT_EVERY`] instead of inside
//! whichever request's commit crosses SQLite's automatic threshold (a multi-millisecond
//! stall in that request);
//! PostgreSQL gets a bounded pool with timeouts. Each service runs its own migrations at
//! start, before it reports SERVING.

use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;

const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a SQLite database file is memory-mapped (256 MiB).
const SQLITE_MMAP_BYTES: &str = "268435456";
/// A pooled connection idle this long is pinged before it is handed out (see [`connect`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);
/// How often the WAL is checkpointed (PASSIVE: never waits for readers or writers).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// SQLite connections per service unless `STOCKMESH_DB_MAX_CONNECTIONS` says otherwise:
/// one. SQLite has one writer at a time, and a second connection that wants to write while
/// the first holds the lock sleeps in SQLite's busy handler (1, 2, 5, 10 … ms, not woken
/// when the lock frees); with several connections an order's four write transactions and
/// the relays' claims collided and slept there — 20–25 % of the mesh's time idle under
/// CreateOrder load and the p99 in tens of milliseconds. With one connection callers queue
/// in the pool instead and are handed the connection the moment it is free, in order;
/// reads queue too, but a read is microseconds, and the mesh's readers (the catalog) are
/// served from caches. Nothing here holds a transaction while it uses the pool again.
const DEFAULT_SQLITE_POOL: u32 = 1;
/// PostgreSQL pool size per service unless `STOCKMESH_DB_MAX_CONNECTIONS` says otherwise.
/// Small on purpose: four services and a test suite share one server's 100 connections.
const DEFAULT_PG_POOL: u32 = 8;

/// Pool size unless `STOCKMESH_DB_MAX_CONNECTIONS` says otherwise.
fn pool_size(default: u32) -> u32 {
    std::env::var("STOCKMESH_DB_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// Opens a pool for `url` (`sqlite://path`, `sqlite::memory:`, `postgres://…`). A SQLite
/// file and its directory are created when missing.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings a pooled connection on every checkout by default: a round trip per
        // statement outside a transaction and per transaction, to the server (PostgreSQL)
        // or the connection's thread (SQLite). Only a connection idle this long — one a
        // server, proxy or firewall may have dropped meanwhile — is pinged first; one that
        // broke while in steady use fails its statement with a connection error instead,
        // and the pool opens a new one for the next caller.
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR);
    if url.starts_with("sqlite:") {
        if let Some(path) = sqlite_path(url)
            && let Some(dir) = std::path::Path::new(&path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Validate early so a typo fails with a clear message, not inside the pool.
        SqliteConnectOptions::from_str(url)
            .map_err(|e| DbErr::Custom(format!("bad SQLite URL {url}: {e}")))?;
        opts.max_connections(pool_size(DEFAULT_SQLITE_POOL))
            .map_sqlx_sqlite_opts(|o| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
                    .pragma("wal_autocheckpoint", "0")
                    // In WAL mode a connection's page cache is dropped whenever another one
                    // wrote, so under writes most reads miss it; mapped, a miss is a memory
                    // read instead of a pread copy. Address space, not memory: pages are
                    // shared with the OS page cache.
                    .pragma("mmap_size", SQLITE_MMAP_BYTES)
            });
        let db = Database::connect(opts).await?;
        checkpoint_in_background(url, &db);
        return Ok(db);
    } else {
        opts.max_connections(pool_size(DEFAULT_PG_POOL))
            .min_connections(1);
    }
    Database::connect(opts).await
}

/// Checkpoints the SQLite WAL every [`CHECKPOINT_EVERY`] until the pool closes (see the
/// module docs), on a connection of its own: a PASSIVE checkpoint runs beside the writer
/// (it never takes the write lock), and through the pool it would hold the pool's one
/// connection — and every request of the service — for the checkpoint's copy and fsync.
/// Outside a tokio runtime nothing is spawned and nothing checkpoints until a runtime
/// does, so the WAL then grows; every service connects within one.
fn checkpoint_in_background(url: &str, db: &DatabaseConnection) {
    use sea_orm::sqlx::ConnectOptions as _;
    let pool = db.get_sqlite_connection_pool().clone();
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Ok(options) = SqliteConnectOptions::from_str(url) else {
        return;
    };
    let options = options.busy_timeout(SQLITE_BUSY_TIMEOUT);
    runtime.spawn(async move {
        let mut every = tokio::time::interval(CHECKPOINT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn = None;
        loop {
            every.tick().await;
            if pool.is_closed() {
                return;
            }
            if conn.is_none() {
                match options.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot open the WAL checkpoint connection; retried next tick");
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            if let Err(e) = sea_orm::sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *c)
                .await
            {
                tracing::debug!(error = %e, "WAL checkpoint failed; retried next tick");
                conn = None;
            }
        }
    });
}

/// Connects and applies every pending migration of `M`.
pub async fn connect_and_migrate<M: MigratorTrait>(url: &str) -> Result<DatabaseConnection, DbErr> {
    let db = connect(url).await?;
    M::up(&db, None).await?;
    Ok(db)
}

/// The file path inside a `sqlite://` URL, without query parameters.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        None
    } else {
        Some(path.to_string())
    }
}

/// True for SQLite connections (some statements differ, e.g. row locking).
pub fn is_sqlite(db: &impl ConnectionTrait) -> bool {
    db.get_database_backend() == DbBackend::Sqlite
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://./data/a.db"),
            Some("./data/a.db".into())
        );
        assert_eq!(
            sqlite_path("sqlite:///tmp/a.db?mode=rwc"),
            Some("/tmp/a.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
