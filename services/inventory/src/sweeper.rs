//! The expiry sweeper: a background task that, every `reservation_sweep_ms`, expires
//! RESERVED reservations past their `expires_at` and returns their units to available,
//! so stock held for an order that never completed (a crashed caller, an abandoned
//! saga) does not stay locked up. It stops when the service shuts down.
//!
//! Every replica of inventory runs one. Each sweep drains everything due, [`BATCH`]
//! reservations per transaction, and each batch claims its rows as it expires them
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL; see [`reservations::expire_batch`]), so the
//! sweepers of N replicas share a wave of expiries instead of all working on the same
//! rows, and no reservation is expired twice. A sweep stops claiming after
//! [`SWEEP_MAX`] reservations or [`SWEEP_BUDGET`], so it always ends; the next tick goes
//! on. Expiries are counted in `stockmesh_inventory_reservations_expired_total`.
//!
//! Each batch's transaction also writes a `StockChanged` (cause EXPIRY) per expired
//! reservation (see [`reservations::expire_batch`]); the relay is told after each batch.

use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;
use stockmesh::Shutdown;
use stockmesh::events::Events;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::error::Result;
use crate::reservations;

/// Reservations expired per transaction.
pub const BATCH: u64 = 200;
/// Most reservations one sweep expires.
pub const SWEEP_MAX: usize = 100_000;
/// A sweep starts no new batch after this long.
pub const SWEEP_BUDGET: Duration = Duration::from_secs(60);

pub fn spawn(
    db: DatabaseConnection,
    events: Events,
    every: Duration,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let committed = move || events.committed();
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            let started = Instant::now();
            // Dropped mid-sweep on shutdown: each batch is one transaction, so an
            // interrupted one leaves nothing behind.
            let swept = tokio::select! {
                () = shutdown.wait() => return,
                swept = sweep_with(&db, &committed) => swept,
            };
            match swept {
                Ok(0) => tracing::debug!("no reservation due to expire"),
                Ok(n) => tracing::info!(
                    expired = n,
                    took_ms = started.elapsed().as_millis() as u64,
                    "expired reservations returned their stock"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "reservation sweep failed; retrying next tick")
                }
            }
        }
    })
}

/// One sweep: expires every reservation due now (within [`SWEEP_MAX`] and
/// [`SWEEP_BUDGET`]); returns how many this sweeper expired.
pub async fn sweep(db: &DatabaseConnection) -> Result<usize> {
    sweep_with(db, &|| {}).await
}

/// [`sweep`], calling `committed` after each transaction that expired something (it
/// wrote events).
pub async fn sweep_with(db: &DatabaseConnection, committed: &(dyn Fn() + Sync)) -> Result<usize> {
    let started = Instant::now();
    let mut expired = 0;
    loop {
        let n = match reservations::expire_batch(db, BATCH).await {
            Ok(batch) => {
                if !batch.is_empty() {
                    committed();
                }
                batch.len()
            }
            Err(e) => {
                // One bad row (a stock row that disagrees with its reservations) must not
                // hold up the others: expire this batch's worth one by one, log the ones
                // that fail, and stop until the next tick (they would come first again).
                tracing::warn!(error = %e, "cannot expire a batch of reservations at once; expiring them one by one");
                let n = expire_one_by_one(db).await?;
                if n > 0 {
                    committed();
                }
                count(n);
                return Ok(expired + n);
            }
        };
        count(n);
        expired += n;
        tracing::debug!(expired = n, "expired a batch of reservations");
        if (n as u64) < BATCH {
            return Ok(expired);
        }
        if expired >= SWEEP_MAX || started.elapsed() >= SWEEP_BUDGET {
            tracing::info!(
                expired,
                "sweep stopped at its bound with reservations still due; the next tick goes on"
            );
            return Ok(expired);
        }
    }
}

/// The fallback for a batch that failed: each due reservation in its own transaction.
async fn expire_one_by_one(db: &DatabaseConnection) -> Result<usize> {
    let mut expired = 0;
    for id in reservations::due_ids(db, BATCH).await? {
        match reservations::expire_one(db, &id).await {
            Ok(true) => expired += 1,
            // Committed, released or expired by another sweeper meanwhile.
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(reservation_id = %id, error = %e, "cannot expire reservation");
            }
        }
    }
    Ok(expired)
}

fn count(n: usize) {
    if n > 0 {
        metrics::counter!("stockmesh_inventory_reservations_expired_total").increment(n as u64);
    }
}
