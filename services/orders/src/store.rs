//! Reads and writes of the orders database, shared by the saga, the order operations and
//! the reconciler.
//!
//! Every status change is a *conditional* update (`… WHERE status IN (expected)`, and for
//! the reconciler's take-overs also `AND version = seen`), and reports whether it won.
//! That is the whole concurrency story: whoever moves a row out of a state owns the work
//! that state stands for, so two callers can never both complete and cancel an order, and
//! the reconciler never takes over a saga that is still making progress. Transactions
//! begin with a write, so SQLite takes its write lock up front (and waits for it) instead
//! of failing to upgrade a read lock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait,
};

use crate::entity::order::{self, Status};
use crate::entity::order_item;

/// An order with its lines (in line order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub order: order::Model,
    pub items: Vec<order_item::Model>,
}

/// The current time at the precision both databases store (microseconds), so a value
/// written and read back compares equal to itself.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}

pub async fn order(db: &DatabaseConnection, id: &str) -> Result<Option<order::Model>, DbErr> {
    order::Entity::find_by_id(id.to_string()).one(db).await
}

pub async fn items(
    db: &DatabaseConnection,
    order_id: &str,
) -> Result<Vec<order_item::Model>, DbErr> {
    order_item::Entity::find()
        .filter(order_item::Column::OrderId.eq(order_id))
        .order_by_asc(order_item::Column::Line)
        .all(db)
        .await
}

/// The order with its lines.
pub async fn record(db: &DatabaseConnection, id: &str) -> Result<Option<OrderRecord>, DbErr> {
    let Some(order) = order(db, id).await? else {
        return Ok(None);
    };
    let items = items(db, id).await?;
    Ok(Some(OrderRecord { order, items }))
}

/// The order a customer created with `request_id`, if any.
pub async fn by_request(
    db: &DatabaseConnection,
    customer_id: &str,
    request_id: &str,
) -> Result<Option<order::Model>, DbErr> {
    order::Entity::find()
        .filter(order::Column::CustomerId.eq(customer_id))
        .filter(order::Column::RequestId.eq(request_id))
        .one(db)
        .await
}

/// Stored states that count against a customer's cap on open orders: intents being
/// created (they become PENDING), PENDING orders, and those being completed or cancelled
/// (clients still see them as PENDING). ABORTING intents never become PENDING.
pub const OPEN: [Status; 4] = [
    Status::Creating,
    Status::Pending,
    Status::Completing,
    Status::Cancelling,
];

/// How many open orders (see [`OPEN`]) `customer_id` has.
pub async fn open_orders(db: &impl ConnectionTrait, customer_id: &str) -> Result<u64, DbErr> {
    order::Entity::find()
        .filter(order::Column::CustomerId.eq(customer_id))
        .filter(order::Column::Status.is_in(OPEN))
        .count(db)
        .await
}

/// What [`insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Yes,
    /// Nothing written: the customer already has `open` open orders, and this one would
    /// have gone over the cap.
    OverCap {
        open: u64,
    },
}

/// Inserts an order with its lines in one transaction, unless its customer would then
/// hold more than `max_open` open orders. A unique violation means another call with the
/// same (customer, request id) got there first.
///
/// The count is taken inside the transaction after the order row is written, and
/// concurrent inserts for one customer are serialised, so two calls at `max_open - 1`
/// cannot both pass: on SQLite the first write takes the database's write lock; on
/// PostgreSQL a transaction-scoped advisory lock on the customer is taken first, so that
/// the count (READ COMMITTED) sees every earlier committed insert for that customer.
pub async fn insert(
    db: &DatabaseConnection,
    record: &OrderRecord,
    max_open: u64,
) -> Result<Inserted, DbErr> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            [format!("stockmesh.orders.open:{}", record.order.customer_id).into()],
        ))
        .await?;
    }
    order::Entity::insert(record.order.clone().into_active_model().reset_all())
        .exec_without_returning(&txn)
        .await?;
    // Includes the row just written.
    let open = open_orders(&txn, &record.order.customer_id).await?;
    if open > max_open {
        txn.rollback().await?;
        return Ok(Inserted::OverCap {
            open: open.saturating_sub(1),
        });
    }
    order_item::Entity::insert_many(
        record
            .items
            .iter()
            .map(|i| i.clone().into_active_model().reset_all()),
    )
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(Inserted::Yes)
}

/// Moves order `id` from one of `from` to `to` (bumping its version), only if it is in
/// one of `from` and, when given, still at `version`. `reason` replaces the cancel reason.
/// Returns whether this call made the change.
pub async fn transition(
    db: &impl ConnectionTrait,
    id: &str,
    from: &[Status],
    version: Option<i64>,
    to: Status,
    reason: Option<&str>,
) -> Result<bool, DbErr> {
    let mut update = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(to))
        .col_expr(
            order::Column::Version,
            Expr::col(order::Column::Version).add(1),
        )
        .col_expr(order::Column::UpdatedAt, Expr::value(now()))
        .filter(order::Column::Id.eq(id))
        .filter(order::Column::Status.is_in(from.iter().copied()));
    if let Some(reason) = reason {
        update = update.col_expr(order::Column::CancelReason, Expr::value(reason));
    }
    if let Some(version) = version {
        update = update.filter(order::Column::Version.eq(version));
    }
    Ok(update.exec(db).await?.rows_affected == 1)
}

/// Records that a CREATING order's saga is still alive (keeps the reconciler away).
/// False when the order is no longer CREATING: the reconciler took it over.
pub async fn heartbeat(db: &DatabaseConnection, id: &str) -> Result<bool, DbErr> {
    transition(db, id, &[Status::Creating], None, Status::Creating, None).await
}

/// CREATING → PENDING with each line's warehouse (`warehouses[line]`), in one
/// transaction; only at `version` when given. Returns whether this call made the change.
pub async fn mark_pending(
    db: &DatabaseConnection,
    id: &str,
    version: Option<i64>,
    warehouses: &[String],
) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    if !transition(
        &txn,
        id,
        &[Status::Creating],
        version,
        Status::Pending,
        None,
    )
    .await?
    {
        txn.rollback().await?;
        return Ok(false);
    }
    for (line, warehouse_id) in warehouses.iter().enumerate() {
        let line = i32::try_from(line).map_err(|e| DbErr::Custom(e.to_string()))?;
        order_item::Entity::update_many()
            .col_expr(
                order_item::Column::WarehouseId,
                Expr::value(warehouse_id.clone()),
            )
            .filter(order_item::Column::OrderId.eq(id))
            .filter(order_item::Column::Line.eq(line))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(true)
}

/// Deletes an order whose creation failed and whose reservations are all released, so
/// that the same request id may be tried afresh. Only while ABORTING.
pub async fn delete_aborted(db: &DatabaseConnection, id: &str) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    let deleted = order::Entity::delete_many()
        .filter(order::Column::Id.eq(id))
        .filter(order::Column::Status.eq(Status::Aborting))
        .exec(&txn)
        .await?
        .rows_affected;
    if deleted == 1 {
        // Cascades too; explicit so the outcome does not depend on SQLite's foreign_keys.
        order_item::Entity::delete_many()
            .filter(order_item::Column::OrderId.eq(id))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(deleted == 1)
}

/// Orders with work in flight that nobody has touched since `idle_since`, oldest first.
pub async fn unfinished(
    db: &DatabaseConnection,
    idle_since: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<order::Model>, DbErr> {
    order::Entity::find()
        .filter(order::Column::Status.is_in(Status::UNFINISHED))
        .filter(order::Column::UpdatedAt.lt(idle_since))
        .order_by_asc(order::Column::UpdatedAt)
        .limit(limit)
        .all(db)
        .await
}

/// PENDING orders created before `created_before`, oldest first (the reconciler's
/// expiry check).
pub async fn pending_created_before(
    db: &DatabaseConnection,
    created_before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<order::Model>, DbErr> {
    order::Entity::find()
        .filter(order::Column::Status.eq(Status::Pending))
        .filter(order::Column::CreatedAt.lt(created_before))
        .order_by_asc(order::Column::CreatedAt)
        .order_by_asc(order::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// One page of orders, newest first: `statuses` (non-empty), optionally one customer's,
/// with ids below `before`.
pub async fn list(
    db: &DatabaseConnection,
    statuses: &[Status],
    customer_id: Option<&str>,
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<OrderRecord>, DbErr> {
    let mut query =
        order::Entity::find().filter(order::Column::Status.is_in(statuses.iter().copied()));
    if let Some(customer_id) = customer_id {
        query = query.filter(order::Column::CustomerId.eq(customer_id));
    }
    if let Some(before) = before {
        query = query.filter(order::Column::Id.lt(before));
    }
    let orders = query
        .order_by_desc(order::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    let ids: Vec<String> = orders.iter().map(|o| o.id.clone()).collect();
    let items = if ids.is_empty() {
        Vec::new()
    } else {
        order_item::Entity::find()
            .filter(order_item::Column::OrderId.is_in(ids))
            .order_by_asc(order_item::Column::Line)
            .all(db)
            .await?
    };
    let mut by_order: HashMap<String, Vec<order_item::Model>> = HashMap::new();
    for item in items {
        by_order
            .entry(item.order_id.clone())
            .or_default()
            .push(item);
    }
    let records = orders
        .into_iter()
        .map(|order| {
            let items = by_order.remove(&order.id).unwrap_or_default();
            OrderRecord { order, items }
        })
        .collect();
    Ok(records)
}
