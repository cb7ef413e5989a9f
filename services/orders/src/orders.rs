//! Order operations after creation: reading (with ownership rules), completing and
//! cancelling, plus the pieces the saga and the reconciler share.
//!
//! Complete and cancel first *claim* the order with a conditional update (PENDING →
//! COMPLETING or CANCELLING), then make the idempotent inventory calls, then record the
//! end state. Claiming first is what keeps a concurrent complete and cancel from
//! interleaving (one committing some lines while the other releases the rest): only the
//! winner of the claim touches inventory. A claimed order whose inventory calls failed
//! stays claimed; calling the same RPC again, or the reconciler, finishes it. Clients see a
//! claimed order as PENDING, and orders still being created not at all.
//!
//! A PENDING order is a hold that lasts as long as its reservations: when one of them
//! has expired (inventory's TTL) or is otherwise gone, the order can no longer be
//! fulfilled from it and ends CANCELLED with reason [`RESERVATION_EXPIRED`], releasing
//! whatever it still holds. CompleteOrder finds this out when a commit is refused and
//! answers FAILED_PRECONDITION; the reconciler finds it out by checking PENDING orders
//! older than the TTL (see [`crate::reconciler`]). Both claim the order with the same
//! conditional transitions as CancelOrder, so neither can race a CompleteOrder.
//!
//! A caller who may not see an order gets NOT_FOUND, exactly as for an order that does not
//! exist, so order ids cannot be probed.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use stockmesh::events::Events;

use crate::entity::order::Status;
use crate::entity::order_item;
use crate::error::{Error, Result};
use crate::saga::Limits;
use crate::store::{self, OrderRecord};
use crate::upstream::Upstreams;

/// The order domain: database, upstream clients and timing settings. Cheap to clone.
#[derive(Clone)]
pub struct Orders {
    pub(crate) db: DatabaseConnection,
    pub(crate) upstreams: Upstreams,
    /// An unfinished order untouched for this long is the reconciler's.
    pub(crate) idle_after: Duration,
    /// Inventory's reservation TTL: PENDING orders older than this are checked for
    /// expired reservations.
    pub(crate) reservation_ttl: Duration,
    /// CreateOrder's abuse limits (open orders per customer, quantity per line).
    pub(crate) limits: Limits,
    /// The outbox relay to tell after a change that wrote an event, and the feed
    /// WatchOrders reads.
    pub(crate) events: Events,
}

/// Who is asking, as far as order visibility goes.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user_id: String,
    /// OPERATOR or ADMIN: sees and manages every order.
    pub staff: bool,
}

impl Viewer {
    fn may_see(&self, record: &OrderRecord) -> bool {
        self.staff || record.order.customer_id == self.user_id
    }
}

/// Which orders a list returns.
#[derive(Debug, Clone)]
pub struct ListFilter {
    /// Stored statuses to include (a client-facing status may cover several).
    pub statuses: Vec<Status>,
    /// Only this customer's orders.
    pub customer_id: Option<String>,
}

/// Cancel reason of an order whose hold ended: a reservation expired (or was released or
/// lost) before the order was completed.
pub const RESERVATION_EXPIRED: &str = "reservation expired";

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("order {id} not found"))
}

impl Orders {
    /// `reservation_ttl` is inventory's reservation TTL: a PENDING order older than that
    /// may have lost its hold, and the reconciler checks it.
    pub fn new(
        db: DatabaseConnection,
        upstreams: Upstreams,
        idle_after: Duration,
        reservation_ttl: Duration,
        limits: Limits,
        events: Events,
    ) -> Self {
        Self {
            db,
            upstreams,
            idle_after,
            reservation_ttl,
            limits,
            events,
        }
    }

    /// The database (reports read it directly).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The event machinery (WatchOrders reads its feed).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// [`store::transition_announced`], telling the relay when it wrote the event.
    pub(crate) async fn announce(
        &self,
        before: &OrderRecord,
        from: &[Status],
        to: Status,
    ) -> Result<Option<OrderRecord>> {
        let after = store::transition_announced(&self.db, before, from, to).await?;
        if after.is_some() {
            self.events.committed();
        }
        Ok(after)
    }

    /// The order as clients may see it: NOT_FOUND when absent, still being created, or
    /// someone else's.
    pub async fn get(&self, viewer: &Viewer, id: &str) -> Result<OrderRecord> {
        let record = self.visible(id).await?;
        if viewer.may_see(&record) {
            Ok(record)
        } else {
            Err(not_found(id))
        }
    }

    async fn visible(&self, id: &str) -> Result<OrderRecord> {
        match store::record(&self.db, id).await? {
            Some(record) if record.order.status.is_visible() => Ok(record),
            _ => Err(not_found(id)),
        }
    }

    /// One page of orders, newest first; returns the orders and the next page token.
    pub async fn list(
        &self,
        filter: &ListFilter,
        page: &stockmesh::pagination::Page,
    ) -> Result<(Vec<OrderRecord>, String)> {
        let mut records = store::list(
            &self.db,
            &filter.statuses,
            filter.customer_id.as_deref(),
            page.after.as_deref(),
            page.fetch_limit(),
        )
        .await?;
        let next = page.finish(&mut records, |r| &r.order.id);
        Ok((records, next))
    }

    /// Commits every reservation and marks the order COMPLETED. Idempotent; a cancelled
    /// order is FAILED_PRECONDITION, and so is an order whose reservation expired, which
    /// this call cancels (see the module docs).
    pub async fn complete(&self, id: &str) -> Result<OrderRecord> {
        // A lost claim means the order just changed; look again (bounded).
        for _ in 0..3 {
            let mut record = self.visible(id).await?;
            match record.order.status {
                Status::Completed => return Ok(record),
                Status::Cancelled => {
                    return Err(Error::FailedPrecondition(format!(
                        "order {id} is cancelled ({}); it cannot be completed",
                        record.order.cancel_reason
                    )));
                }
                Status::Cancelling => {
                    return Err(Error::FailedPrecondition(format!(
                        "order {id} is being cancelled ({}); it cannot be completed",
                        record.order.cancel_reason
                    )));
                }
                Status::Pending => {
                    let claimed = store::transition(
                        &self.db,
                        id,
                        &[Status::Pending],
                        None,
                        Status::Completing,
                        None,
                    )
                    .await?;
                    if !claimed {
                        continue;
                    }
                    record.order.status = Status::Completing;
                }
                Status::Completing | Status::Creating | Status::Aborting => {}
            }
            self.finish_completing(&record).await?;
            return self.visible(id).await;
        }
        Err(Error::Aborted(format!(
            "order {id} is changing concurrently; retry"
        )))
    }

    /// Cancels the order, releasing every reservation. Idempotent; a completed order is
    /// FAILED_PRECONDITION. Customers may cancel only their own orders.
    pub async fn cancel(&self, viewer: &Viewer, id: &str, reason: &str) -> Result<OrderRecord> {
        let reason = match reason.trim() {
            "" if viewer.staff => "cancelled by an operator",
            "" => "cancelled by the customer",
            r => r,
        };
        for _ in 0..3 {
            let mut record = self.get(viewer, id).await?;
            match record.order.status {
                Status::Cancelled => return Ok(record),
                Status::Completed => {
                    return Err(Error::FailedPrecondition(format!(
                        "order {id} is completed; it cannot be cancelled"
                    )));
                }
                Status::Completing => {
                    return Err(Error::FailedPrecondition(format!(
                        "order {id} is being completed; it cannot be cancelled"
                    )));
                }
                Status::Pending => {
                    let claimed = store::transition(
                        &self.db,
                        id,
                        &[Status::Pending],
                        None,
                        Status::Cancelling,
                        Some(reason),
                    )
                    .await?;
                    if !claimed {
                        continue;
                    }
                    record.order.cancel_reason = reason.to_string();
                }
                Status::Cancelling | Status::Creating | Status::Aborting => {}
            }
            // Resuming an expiry's cancellation keeps its tolerance of committed lines.
            let expired = record.order.status == Status::Cancelling
                && record.order.cancel_reason == RESERVATION_EXPIRED;
            self.finish_cancelling(&record, &record.items, expired)
                .await?;
            return self.visible(id).await;
        }
        Err(Error::Aborted(format!(
            "order {id} is changing concurrently; retry"
        )))
    }

    /// COMPLETING → COMPLETED once every reservation is committed. A reservation that can
    /// no longer be committed (expired, released, unknown) means the order's hold is over:
    /// it becomes CANCELLING with [`RESERVATION_EXPIRED`], the other lines are released,
    /// and the answer is FAILED_PRECONDITION. Any other failure leaves it COMPLETING for a
    /// retry.
    ///
    /// Lines are committed in line order, which is the order they were reserved and so the
    /// order they expire: an expired line is normally line 0, and nothing was committed.
    /// Only if a later line expires while earlier ones are being committed (or while an
    /// outage held a COMPLETING order up) do some lines end committed under a cancelled
    /// order; that is logged as an error, since their units have left stock.
    pub(crate) async fn finish_completing(&self, record: &OrderRecord) -> Result<()> {
        let (id, items) = (record.order.id.as_str(), record.items.as_slice());
        for (committed, item) in items.iter().enumerate() {
            match self.upstreams.commit(&item.reservation_id).await {
                Ok(()) => {}
                Err(Error::FailedPrecondition(why) | Error::NotFound(why)) => {
                    if committed > 0 {
                        tracing::error!(order_id = id, reservation_id = %item.reservation_id, committed, lines = items.len(), %why, "reservation expired after earlier lines were committed; the order is cancelled with those units shipped");
                    } else {
                        tracing::warn!(order_id = id, reservation_id = %item.reservation_id, %why, "reservation cannot be committed; cancelling the order");
                    }
                    let claimed = store::transition(
                        &self.db,
                        id,
                        &[Status::Completing],
                        None,
                        Status::Cancelling,
                        Some(RESERVATION_EXPIRED),
                    )
                    .await?;
                    let mut expiring = record.clone();
                    expiring.order.cancel_reason = RESERVATION_EXPIRED.to_string();
                    if claimed && let Err(e) = self.finish_cancelling(&expiring, items, true).await
                    {
                        tracing::warn!(order_id = id, error = %e, "cannot release the rest of an expired order yet; the reconciler will finish");
                    }
                    return Err(Error::FailedPrecondition(format!(
                        "order {id} cannot be completed: {RESERVATION_EXPIRED} ({why}); the order is cancelled"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        self.announce(record, &[Status::Completing], Status::Completed)
            .await?;
        Ok(())
    }

    /// CANCELLING → CANCELLED once every reservation of `to_release` (the lines of
    /// `record` that may still hold stock) is released; `record` is the order with the
    /// cancel reason it is being cancelled with. A committed reservation
    /// (which only a bug or manual intervention produces) sends the order back to PENDING
    /// with FAILED_PRECONDITION, unless the order is being cancelled because its hold
    /// `expired`: then committed lines (see [`Self::finish_completing`]) are logged and
    /// skipped, since the order can no longer complete. Any other failure leaves it
    /// CANCELLING for a retry.
    pub(crate) async fn finish_cancelling(
        &self,
        record: &OrderRecord,
        to_release: &[order_item::Model],
        expired: bool,
    ) -> Result<()> {
        let id = record.order.id.as_str();
        for item in to_release {
            match self.upstreams.release(&item.reservation_id).await {
                Ok(()) => {}
                Err(Error::FailedPrecondition(why)) if expired => {
                    tracing::error!(order_id = id, reservation_id = %item.reservation_id, %why, "line of an expired order is committed; cancelling anyway");
                }
                Err(Error::FailedPrecondition(why)) => {
                    tracing::error!(order_id = id, reservation_id = %item.reservation_id, %why, "reservation of a pending order cannot be released");
                    store::transition(
                        &self.db,
                        id,
                        &[Status::Cancelling],
                        None,
                        Status::Pending,
                        None,
                    )
                    .await?;
                    return Err(Error::FailedPrecondition(format!(
                        "order {id} cannot be cancelled: {why}"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        self.announce(record, &[Status::Cancelling], Status::Cancelled)
            .await?;
        Ok(())
    }

    /// Releases the reservations of `items` (of an order that never became PENDING).
    /// Tries every line even after a failure; true when all are released.
    pub(crate) async fn release_lines(&self, order_id: &str, items: &[order_item::Model]) -> bool {
        let mut all = true;
        for item in items {
            match self.upstreams.release(&item.reservation_id).await {
                Ok(()) => {}
                // Committed: cannot happen for an order that was never PENDING, and
                // retrying would not change it; report and move on.
                Err(Error::FailedPrecondition(why)) => {
                    tracing::error!(order_id, reservation_id = %item.reservation_id, %why, "reservation of an unfinished order is committed");
                }
                Err(e) => {
                    tracing::warn!(order_id, reservation_id = %item.reservation_id, error = %e, "cannot release reservation yet");
                    all = false;
                }
            }
        }
        all
    }
}
