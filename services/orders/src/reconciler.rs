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
//! It also keeps "no PENDING order lacks its reservations" true over time. A PENDING
//! order is a hold that lasts as long as its reservations, and inventory expires those
//! after `reservation_ttl_secs`. So each round it takes up to [`EXPIRY_BATCH`] PENDING
//! orders created more than the TTL ago (oldest first) and asks inventory about every
//! line; if any is EXPIRED, RELEASED or unknown, it claims the order exactly as
//! CancelOrder does (PENDING → CANCELLING, only if the row has not changed since it
//! looked, so a concurrent CompleteOrder wins or loses cleanly), releases the remaining
//! lines, and marks it CANCELLED with reason [`RESERVATION_EXPIRED`]. Orders younger than
//! the TTL cannot have an expired reservation and are not looked at.
//!
//! Every inventory call is idempotent, so doing a step twice is harmless; a failing
//! upstream just leaves the order for the next round. The task stops on shutdown, even
//! mid-round (every step is safe to interrupt).

use std::time::Duration;

use stockmesh::Shutdown;
use stockmesh::proto::inventory::v1::ReservationStatus;

use crate::entity::order::{self, Status};
use crate::error::{Error, Result};
use crate::orders::{Orders, RESERVATION_EXPIRED};
use crate::store;

/// Orders looked at per round.
const BATCH: u64 = 100;
/// PENDING orders checked for expired reservations per round (oldest first).
pub const EXPIRY_BATCH: u64 = 100;
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
                Ok(n) => tracing::info!(orders = n, "reconciler brought orders to an end state"),
                Err(e) => tracing::warn!(error = %e, "reconciler round failed"),
            },
        }
    }
}

impl Orders {
    /// One round; returns how many orders reached an end state.
    pub async fn reconcile_once(&self) -> Result<usize> {
        // One kind of work failing (say, a query) does not hold up the other.
        let (unfinished, expired) = (self.finish_unfinished().await, self.expire_pending().await);
        Ok(unfinished? + expired?)
    }

    /// Drives CREATING, ABORTING, COMPLETING and CANCELLING orders nobody is working on.
    async fn finish_unfinished(&self) -> Result<usize> {
        let stuck = store::unfinished(&self.db, ago(self.idle_after), BATCH).await?;
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
            Status::Completing => match self.finish_completing(id, &items).await {
                Ok(()) => Ok(true),
                // A reservation expired: the order was cancelled instead (or is being).
                Err(Error::FailedPrecondition(why)) => {
                    tracing::info!(order_id = id, %why, "interrupted completion found an expired reservation");
                    Ok(true)
                }
                Err(e) => Err(e),
            },
            Status::Cancelling => {
                let expired = order.cancel_reason == RESERVATION_EXPIRED;
                self.finish_cancelling(id, &items, expired).await?;
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

/// The instant `d` before now (the beginning of time if `d` is absurdly long).
fn ago(d: Duration) -> chrono::DateTime<chrono::Utc> {
    let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    store::now()
        .checked_sub_signed(d)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

impl Orders {
    /// Cancels PENDING orders whose hold ended (see the module docs); returns how many.
    async fn expire_pending(&self) -> Result<usize> {
        let old = store::pending_created_before(&self.db, ago(self.reservation_ttl), EXPIRY_BATCH)
            .await?;
        let mut cancelled = 0;
        for order in old {
            let id = order.id.clone();
            match self.expire_if_lapsed(order).await {
                Ok(true) => cancelled += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(order_id = %id, error = %e, "cannot check a pending order's reservations yet");
                }
            }
        }
        Ok(cancelled)
    }

    /// Cancels one PENDING order if a line's reservation is no longer held; true when it
    /// ended CANCELLED.
    async fn expire_if_lapsed(&self, order: order::Model) -> Result<bool> {
        let id = order.id.as_str();
        let items = store::items(&self.db, id).await?;
        let mut lapsed = None;
        for item in &items {
            let state = self.upstreams.reservation(&item.reservation_id).await?;
            let held = state.as_ref().is_some_and(|r| {
                // COMMITTED cannot happen under PENDING any more, but is no lost hold.
                r.status == ReservationStatus::Reserved as i32
                    || r.status == ReservationStatus::Committed as i32
            });
            if !held {
                let status = state.map_or("NOT_FOUND", |r| crate::upstream::status_name(r.status));
                lapsed = Some((item.reservation_id.clone(), status));
                break;
            }
        }
        let Some((reservation_id, status)) = lapsed else {
            return Ok(false);
        };
        // The claim CancelOrder makes, and only on the row as read: a CompleteOrder that
        // claimed it first keeps it (and meets the expired reservation itself).
        let claimed = store::transition(
            &self.db,
            id,
            &[Status::Pending],
            Some(order.version),
            Status::Cancelling,
            Some(RESERVATION_EXPIRED),
        )
        .await?;
        if !claimed {
            return Ok(false);
        }
        tracing::info!(order_id = id, %reservation_id, status, "pending order lost its reservation: cancelling");
        self.finish_cancelling(id, &items, true).await?;
        Ok(true)
    }
}
