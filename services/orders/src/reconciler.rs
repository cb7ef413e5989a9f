//! The reconciler: a background task that drives orders left half-way (by a crash, a
//! killed process or an upstream outage) to a consistent end.
//!
//! Every `reconcile_interval_ms` it takes the orders with work in flight that nobody has
//! touched for `reconcile_after_secs` (a live saga touches its intent as it goes):
//!
//! * CREATING (a saga died): it asks inventory about every line. All RESERVED → the saga
//!   had done its work, so the order becomes PENDING with each line's warehouse.
//!   Otherwise it claims the intent (CREATING → ABORTING, only if the row has not changed
//!   since it looked), releases every line and marks the order CANCELLED ("saga did not
//!   complete").
//! * ABORTING (a saga failed but could not release everything): release every line, then
//!   CANCELLED with the saga's reason.
//! * COMPLETING / CANCELLING (a complete or cancel whose inventory calls failed): finish
//!   committing or releasing, then COMPLETED or CANCELLED.
//!
//! Every inventory call is idempotent, so doing a step twice is harmless; a failing
//! upstream just leaves the order for the next round. The task stops on shutdown, even
//! mid-round (every step is safe to interrupt).

use std::time::Duration;

use stockmesh::Shutdown;
use stockmesh::proto::inventory::v1::ReservationStatus;

use crate::entity::order::{self, Status};
use crate::error::Result;
use crate::orders::Orders;
use crate::store;

/// Orders looked at per round.
const BATCH: u64 = 100;
/// Cancel reason of an order whose creation a crash interrupted.
pub const REASON: &str = "saga did not complete";

/// Runs rounds every `interval` until `shutdown`.
pub async fn run(orders: Orders, interval: Duration, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            () = shutdown.wait() => return,
            res = orders.reconcile_once() => match res {
                Ok(0) => {}
                Ok(n) => tracing::info!(orders = n, "reconciler finished unfinished orders"),
                Err(e) => tracing::warn!(error = %e, "reconciler round failed"),
            },
        }
    }
}

impl Orders {
    /// One round; returns how many orders reached an end state.
    pub async fn reconcile_once(&self) -> Result<usize> {
        let idle = chrono::Duration::from_std(self.idle_after).unwrap_or(chrono::Duration::MAX);
        let idle_since = store::now()
            .checked_sub_signed(idle)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let stuck = store::unfinished(&self.db, idle_since, BATCH).await?;
        let mut finished = 0;
        for order in stuck {
            let id = order.id.clone();
            match self.reconcile(order).await {
                Ok(true) => finished += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(order_id = %id, error = %e, "cannot reconcile order yet");
                }
            }
        }
        Ok(finished)
    }

    /// Drives one order as far as possible; true when it reached an end state.
    async fn reconcile(&self, order: order::Model) -> Result<bool> {
        let id = order.id.as_str();
        let items = store::items(&self.db, id).await?;
        match order.status {
            Status::Creating => {
                let mut warehouses = Vec::with_capacity(items.len());
                for item in &items {
                    match self.upstreams.reservation(&item.reservation_id).await? {
                        Some(r) if r.status == ReservationStatus::Reserved as i32 => {
                            warehouses.push(r.warehouse_id);
                        }
                        _ => break,
                    }
                }
                if warehouses.len() == items.len() {
                    let done =
                        store::mark_pending(&self.db, id, Some(order.version), &warehouses).await?;
                    if done {
                        tracing::info!(
                            order_id = id,
                            "interrupted order had every line reserved: PENDING"
                        );
                    }
                    return Ok(done);
                }
                let claimed = store::transition(
                    &self.db,
                    id,
                    &[Status::Creating],
                    Some(order.version),
                    Status::Aborting,
                    Some(REASON),
                )
                .await?;
                if !claimed {
                    // The saga moved on after all; look again next round.
                    return Ok(false);
                }
                self.finish_aborting(id, &items).await
            }
            Status::Aborting => self.finish_aborting(id, &items).await,
            Status::Completing => {
                self.finish_completing(id, &items).await?;
                Ok(true)
            }
            Status::Cancelling => {
                self.finish_cancelling(id, &items).await?;
                Ok(true)
            }
            Status::Pending | Status::Completed | Status::Cancelled => Ok(false),
        }
    }

    /// ABORTING → CANCELLED once every line is released.
    async fn finish_aborting(
        &self,
        id: &str,
        items: &[crate::entity::order_item::Model],
    ) -> Result<bool> {
        if !self.release_lines(id, items).await {
            return Ok(false);
        }
        let done = store::transition(
            &self.db,
            id,
            &[Status::Aborting],
            None,
            Status::Cancelled,
            None,
        )
        .await?;
        if done {
            tracing::info!(order_id = id, "interrupted order rolled back: CANCELLED");
        }
        Ok(done)
    }
}
