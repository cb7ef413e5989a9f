//! The expiry sweeper: a background task that, every `reservation_sweep_ms`, expires
//! RESERVED reservations past their `expires_at` and returns their units to available,
//! so stock held for an order that never completed (a crashed caller, an abandoned
//! saga) does not stay locked up. It stops when the service shuts down.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use stockmesh::Shutdown;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::reservations;

/// Reservations expired per query; the sweep loops until none are due.
const BATCH: u64 = 200;

pub fn spawn(db: DatabaseConnection, every: Duration, shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            match reservations::expire_due(&db, BATCH).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired reservations returned their stock"),
                Err(e) => {
                    tracing::warn!(error = %e, "reservation sweep failed; retrying next tick")
                }
            }
        }
    })
}
