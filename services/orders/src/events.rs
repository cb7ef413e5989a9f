//! The event orders publishes: `OrderStatusChanged`, written into the outbox inside the
//! transaction of the status change it describes (so both commit or roll back together),
//! carrying the order as the change left it.
//!
//! Events follow what clients see, not the stored states (see [`crate::api`]): an order
//! appears with PENDING (old status UNSPECIFIED: it is new to watchers), or with
//! CANCELLED when the reconciler finishes the rollback of an order whose creation failed
//! but whose lines could not all be released at once (ABORTING → CANCELLED: clients can
//! see it from then on); it then changes to COMPLETED or CANCELLED (by the customer, by
//! staff, by CompleteOrder finding an expired reservation, or by the reconciler). The
//! stored steps in between (PENDING → COMPLETING or CANCELLING, and back) look PENDING to
//! clients and write nothing, and neither do intents that never become visible (CREATING
//! → ABORTING, and their deletion after a clean rollback).
//!
//! The writers know the order as written (they hold it already and know what the
//! conditional update changed), so an event costs one INSERT and no extra read.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr};
use stockmesh::events::{Event, Topic, append, new_event_id};
use stockmesh::proto::orders::v1::OrderStatusChanged;
use stockmesh::proto::timestamp;

use crate::api::{client_status, to_proto};
use crate::entity::order::Status;
use crate::store::OrderRecord;

/// Writes through `tx` the `OrderStatusChanged` of an order that was in stored status
/// `before` and is now `after`, as of `at`.
pub async fn status_changed(
    tx: &impl ConnectionTrait,
    before: Status,
    after: &OrderRecord,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    append(tx, &status_changed_event(before, after, at)).await
}

/// The `OrderStatusChanged` of an order that was in stored status `before` and is now
/// `after`, as of `at`, for a writer that puts it into the outbox itself.
pub fn status_changed_event(before: Status, after: &OrderRecord, at: DateTime<Utc>) -> Event {
    let id = new_event_id();
    let order = to_proto(after);
    let message = OrderStatusChanged {
        event_id: id.clone(),
        occurred_at: Some(timestamp(at)),
        order_id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        old_status: client_status(before) as i32,
        new_status: order.status,
        total_cents: order.total_cents,
        order: Some(order),
    };
    Event::new(id, Topic::OrderStatusChanged, &message)
}
