//! The events inventory publishes, written into the outbox inside the transaction of the
//! stock change they describe (so a change and its events commit or roll back together).
//!
//! * `StockChanged`: one per (product, warehouse) row a change moved, with the row's
//!   values and version after the change, the cause and its idempotency key. Replays
//!   (an idempotent repeat that moves nothing) write none.
//! * `StockLow`: when the product's total available goes from at least its threshold to
//!   below it with this change (never again while it stays below). Only a change that
//!   lowers available can do that: a Reserve, or an AdjustStock with a negative delta.
//!
//! The writers already know every number these need from the statements of the change
//! itself (`RETURNING` of the stock update, or the stock read the answer needs anyway),
//! so an event costs one INSERT and no extra read.

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;
use stockmesh::events::{Event, Topic, append, new_event_id};
use stockmesh::proto::inventory::v1 as pb;
use stockmesh::proto::timestamp;

use crate::error::Result;

/// A stock row after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowAfter {
    pub product_id: String,
    pub warehouse_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub version: i64,
}

/// What changed the stock, and its idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct Cause<'a> {
    pub kind: pb::StockChangeCause,
    /// The request_id (Restock, AdjustStock) or reservation_id.
    pub id: &'a str,
}

/// Writes the `StockChanged` of `row` through `tx`; returns its event id.
pub async fn changed(
    tx: &impl ConnectionTrait,
    at: DateTime<Utc>,
    row: &RowAfter,
    cause: Cause<'_>,
) -> Result<String> {
    let id = new_event_id();
    let message = pb::StockChanged {
        event_id: id.clone(),
        occurred_at: Some(timestamp(at)),
        product_id: row.product_id.clone(),
        warehouse_id: row.warehouse_id.clone(),
        on_hand: row.on_hand,
        reserved: row.reserved,
        available: row.on_hand - row.reserved,
        cause: cause.kind as i32,
        cause_id: cause.id.to_string(),
        version: row.version,
    };
    append(tx, &Event::new(id.clone(), Topic::StockChanged, &message)).await?;
    Ok(id)
}

/// Whether going from `before` to `after` total available crosses below `threshold`
/// (0 = never low).
pub fn crosses(threshold: i64, before: i64, after: i64) -> bool {
    threshold > 0 && before >= threshold && after < threshold
}

/// Writes a `StockLow` through `tx` when the change that `cause_event_id` describes took
/// the product's total available from `before` to `after` across `threshold`.
pub async fn low_if_crossed(
    tx: &impl ConnectionTrait,
    at: DateTime<Utc>,
    product_id: &str,
    (before, after): (i64, i64),
    threshold: i64,
    cause_event_id: &str,
) -> Result<()> {
    if !crosses(threshold, before, after) {
        return Ok(());
    }
    let id = new_event_id();
    let message = pb::StockLow {
        event_id: id.clone(),
        occurred_at: Some(timestamp(at)),
        product_id: product_id.to_string(),
        total_available: after,
        threshold,
        cause_event_id: cause_event_id.to_string(),
    };
    append(tx, &Event::new(id, Topic::StockLow, &message)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::crosses;

    #[test]
    fn only_the_crossing_counts() {
        assert!(crosses(5, 5, 4));
        assert!(crosses(5, 9, 0));
        assert!(!crosses(5, 4, 3), "already below");
        assert!(!crosses(5, 9, 5), "still at the threshold");
        assert!(!crosses(0, 9, -1), "0 = never low");
        assert!(!crosses(5, 3, 8), "going up");
    }
}
