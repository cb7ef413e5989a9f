//! Reads and writes of the orders database, shared by the saga, the order operations and
//! the reconciler.
//!
//! Every status change is a *conditional* update (`… WHERE status IN (expected)`, and for
//! the reconciler's take-overs also `AND version = seen`), and reports whether it won.
//! That is the whole concurrency story: whoever moves a row out of a state owns the work
//! that state stands for, so two callers can never both complete and cancel an order, and
//! the reconciler never takes over a saga that is still making progress. On top of that,
//! reconcilers of several replicas divide the rows between them with a lease
//! ([`claim_due`]), so that no row is even looked at by two of them at once. Transactions
//! begin with a write, so SQLite takes its write lock up front (and waits for it) instead
//! of failing to upgrade a read lock.
//!
//! Changes that clients see ([`mark_pending`], [`transition_announced`],
//! [`cancel_pending`]) write their `OrderStatusChanged` in the same transaction (see
//! [`crate::events`]); the callers tell the relay once they return.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, ExprTrait, LockBehavior, LockType, Query,
    QueryStatementBuilder, SelectStatement, WithClause,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend,
    DbErr, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    Statement, TransactionTrait,
};

use crate::entity::order::{self, Status};
use crate::entity::order_item;
use crate::events;

mod pg;

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

/// Stored states that count against a customer's cap on open orders: intents being
/// created (they become PENDING), PENDING orders, and those being completed or cancelled
/// (clients still see them as PENDING). ABORTING intents never become PENDING.
pub const OPEN: [Status; 4] = [
    Status::Creating,
    Status::Pending,
    Status::Completing,
    Status::Cancelling,
];

/// How many open orders (see [`OPEN`]) `customer_id` has, counting no further than
/// `at_most`: callers compare with the cap, and a count that stops there costs the same
/// whatever the customer holds.
pub async fn open_orders(
    db: &impl ConnectionTrait,
    customer_id: &str,
    at_most: u64,
) -> Result<u64, DbErr> {
    // Not `PaginatorTrait::count`: it drops the limit.
    let count = SelectStatement::new()
        .expr(Expr::cust("COUNT(*) AS n"))
        .from_subquery(open_ids(customer_id, at_most), "open")
        .to_owned();
    match db.query_one(&count).await? {
        Some(row) => Ok(u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0)),
        None => Ok(0),
    }
}

/// What CreateOrder finds before it writes anything: the id of the order an earlier call
/// with the same (customer, request id) created, and the customer's open orders (see
/// [`OPEN`]) counted no further than `at_most` (which includes that order, when open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub existing: Option<String>,
    pub open: u64,
}

/// [`Seen`] in one statement — `SELECT COUNT(*), (SELECT id … request id) FROM (SELECT id
/// … open orders LIMIT n)` — one round trip on every order instead of two.
pub async fn seen(
    db: &impl ConnectionTrait,
    customer_id: &str,
    request_id: &str,
    at_most: u64,
) -> Result<Seen, DbErr> {
    let existing = order::Entity::find()
        .select_only()
        .column(order::Column::Id)
        .filter(order::Column::CustomerId.eq(customer_id))
        .filter(order::Column::RequestId.eq(request_id))
        .into_query();
    let query = SelectStatement::new()
        .expr(Expr::cust("COUNT(*) AS n"))
        .expr_as(
            Expr::SubQuery(None, Box::new(existing.into_sub_query_statement())),
            Alias::new("existing"),
        )
        .from_subquery(open_ids(customer_id, at_most), "open")
        .to_owned();
    let Some(row) = db.query_one(&query).await? else {
        return Ok(Seen {
            existing: None,
            open: 0,
        });
    };
    Ok(Seen {
        existing: row.try_get::<Option<String>>("", "existing")?,
        open: u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0),
    })
}

/// `SELECT id` of up to `at_most` open orders of `customer_id`.
fn open_ids(customer_id: &str, at_most: u64) -> SelectStatement {
    order::Entity::find()
        .select_only()
        .column(order::Column::Id)
        .filter(order::Column::CustomerId.eq(customer_id))
        .filter(order::Column::Status.is_in(OPEN))
        // SQL's LIMIT is signed (sea-query's binding panics past i64::MAX).
        .limit(Ord::min(at_most, i64::MAX as u64))
        .into_query()
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
    let open = open_orders(&txn, &record.order.customer_id, max_open.saturating_add(1)).await?;
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
    transition_at(db, id, from, version, to, reason, now()).await
}

/// [`transition`], stamping `updated_at` with `at`.
async fn transition_at(
    db: &impl ConnectionTrait,
    id: &str,
    from: &[Status],
    version: Option<i64>,
    to: Status,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let mut update = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(to))
        .col_expr(
            order::Column::Version,
            Expr::col(order::Column::Version).add(1),
        )
        .col_expr(order::Column::UpdatedAt, Expr::value(at))
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

/// A [`transition`] that clients see (to COMPLETED or CANCELLED), in one transaction with
/// its `OrderStatusChanged`. `before` is the order as the caller holds it: its stored
/// status is the event's old status (any stored state clients see the same way will do),
/// and the update's status and `updated_at` are put into it for the event. Returns the
/// order as written when this call made the change.
pub async fn transition_announced(
    db: &DatabaseConnection,
    before: &OrderRecord,
    from: &[Status],
    to: Status,
) -> Result<Option<OrderRecord>, DbErr> {
    let at = now();
    let txn = db.begin().await?;
    if !transition_at(&txn, &before.order.id, from, None, to, None, at).await? {
        txn.rollback().await?;
        return Ok(None);
    }
    let mut after = before.clone();
    after.order.status = to;
    after.order.version += 1;
    after.order.updated_at = at;
    events::status_changed(&txn, before.order.status, &after, at).await?;
    txn.commit().await?;
    Ok(Some(after))
}

/// Records that a CREATING order's saga is still alive (keeps the reconciler away).
/// False when the order is no longer CREATING: the reconciler took it over.
pub async fn heartbeat(db: &DatabaseConnection, id: &str) -> Result<bool, DbErr> {
    transition(db, id, &[Status::Creating], None, Status::Creating, None).await
}

/// CREATING → PENDING with each line's warehouse (`warehouses[line]`) and the order's
/// `OrderStatusChanged` (UNSPECIFIED → PENDING: the order is new to watchers), in one
/// transaction (on PostgreSQL in one statement, [`pg::mark_pending`]); only at `version`
/// when given; `updated_at` stamped with `at`. `intent` is
/// the CREATING order as the caller holds it, its `version` the one in the database.
/// Returns the PENDING order as written (so no caller needs to read it back) when this
/// call made the change.
pub async fn mark_pending(
    db: &DatabaseConnection,
    intent: &OrderRecord,
    version: Option<i64>,
    warehouses: &[String],
    at: DateTime<Utc>,
) -> Result<Option<OrderRecord>, DbErr> {
    let id = intent.order.id.as_str();
    let mut pending = intent.clone();
    pending.order.status = Status::Pending;
    pending.order.version += 1;
    pending.order.updated_at = at;
    for (item, warehouse_id) in pending.items.iter_mut().zip(warehouses) {
        item.warehouse_id = warehouse_id.clone();
    }
    let event = events::status_changed_event(intent.order.status, &pending, at);
    if db.get_database_backend() == DbBackend::Postgres {
        let moved = pg::mark_pending(db, id, version, warehouses, at, &event).await?;
        return Ok(moved.then_some(pending));
    }
    let txn = db.begin().await?;
    if !transition_at(
        &txn,
        id,
        &[Status::Creating],
        version,
        Status::Pending,
        None,
        at,
    )
    .await?
    {
        txn.rollback().await?;
        return Ok(None);
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
    stockmesh::events::append(&txn, &event).await?;
    txn.commit().await?;
    Ok(Some(pending))
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

/// Which rows the reconciler is after, and the moment that makes a row due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// CREATING, ABORTING, COMPLETING or CANCELLING, untouched since `idle_since`; walked
    /// by (`updated_at`, `id`).
    Unfinished { idle_since: DateTime<Utc> },
    /// PENDING and created before `created_before` (its reservations may have expired);
    /// walked by (`created_at`, `id`).
    Expiry { created_before: DateTime<Utc> },
}

impl Due {
    /// The column a walk over these rows is ordered by (with `id` after it).
    fn key(self) -> order::Column {
        match self {
            Due::Unfinished { .. } => order::Column::UpdatedAt,
            Due::Expiry { .. } => order::Column::CreatedAt,
        }
    }

    /// Where `order` lies in a walk over these rows.
    pub fn position(self, order: &order::Model) -> After {
        After {
            at: match self {
                Due::Unfinished { .. } => order.updated_at,
                Due::Expiry { .. } => order.created_at,
            },
            id: order.id.clone(),
        }
    }
}

/// A position in a walk over due rows: rows at or before it are not claimed again.
/// Ordered as the walk is (by `at`, then `id`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct After {
    pub at: DateTime<Utc>,
    pub id: String,
}

/// Claims up to `limit` rows that are `due`, lie after `after` in the walk, and are not
/// claimed by anyone (`claimed_until` NULL or not after `now`), by setting their
/// `claimed_until` to `until`; returns them in walk order.
///
/// One statement, `WITH picked AS MATERIALIZED (SELECT id … ORDER BY … LIMIT n FOR UPDATE
/// SKIP LOCKED) UPDATE … WHERE id IN (SELECT id FROM picked) RETURNING *`, so a row is
/// claimed by one caller only: on PostgreSQL the
/// sub-select skips rows another replica's claim holds locked and re-checks rows it
/// claimed meanwhile (READ COMMITTED re-evaluates the condition on the newest row version
/// after a lock), and on SQLite the statement runs under the database's single write lock
/// (SQLite has no row locks; sea-query leaves the clause out there). Claiming changes
/// neither `version` nor `updated_at`, so the version checks of the take-overs still
/// compare against the row as claimed.
pub async fn claim_due(
    db: &impl ConnectionTrait,
    due: Due,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    after: Option<&After>,
    limit: u64,
) -> Result<Vec<order::Model>, DbErr> {
    let key = due.key();
    let mut cond = match due {
        Due::Unfinished { idle_since } => Condition::all()
            .add(order::Column::Status.is_in(Status::UNFINISHED))
            .add(order::Column::UpdatedAt.lt(idle_since)),
        Due::Expiry { created_before } => Condition::all()
            .add(order::Column::Status.eq(Status::Pending))
            .add(order::Column::CreatedAt.lt(created_before)),
    }
    .add(
        Condition::any()
            .add(order::Column::ClaimedUntil.is_null())
            .add(order::Column::ClaimedUntil.lte(now)),
    );
    if let Some(after) = after {
        // A row-value comparison, which both databases turn into the start of a range
        // scan over the (status, key, id) index.
        cond = cond.add(
            Expr::tuple([Expr::col(key), Expr::col(order::Column::Id)]).gt(Expr::tuple([
                Expr::value(after.at),
                Expr::value(after.id.clone()),
            ])),
        );
    }
    let pick = order::Entity::find()
        .select_only()
        .column(order::Column::Id)
        .filter(cond)
        .order_by_asc(key)
        .order_by_asc(order::Column::Id)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_query();
    // Only the picked rows: they met the condition when picked and stay locked (or, on
    // SQLite, the whole statement holds the write lock) until the update. Repeating the
    // condition here would invite PostgreSQL to scan every due row against the picked
    // ones instead of looking the picked ones up by key.
    let mut claim = order::Entity::update_many()
        .col_expr(order::Column::ClaimedUntil, Expr::value(until))
        .filter(order::Column::Id.in_subquery(picked()))
        .into_query();
    claim.returning_all();
    let stmt = db
        .get_database_backend()
        .build(&claim.with(materialized(pick)));
    let mut claimed = order::Entity::find().from_raw_sql(stmt).all(db).await?;
    // RETURNING gives no order.
    claimed.sort_by_cached_key(|o| due.position(o));
    Ok(claimed)
}

/// PENDING → CANCELLED with `reason` (bumping the version) for every order in `seen`
/// whose row is still PENDING at the version seen, in one statement, and each moved
/// order's `OrderStatusChanged`, in one transaction; returns the ids it moved. The
/// reconciler's batch form of a conditional [`transition`]: a row that changed since it
/// was read (say, a CompleteOrder claimed it) is left alone.
pub async fn cancel_pending(
    db: &DatabaseConnection,
    seen: &[OrderRecord],
    reason: &str,
) -> Result<HashSet<String>, DbErr> {
    if seen.is_empty() {
        return Ok(HashSet::new());
    }
    let mut which = Condition::any();
    for record in seen {
        which = which.add(
            Condition::all()
                .add(order::Column::Id.eq(record.order.id.as_str()))
                .add(order::Column::Version.eq(record.order.version)),
        );
    }
    let at = now();
    let mut update = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(Status::Cancelled))
        .col_expr(
            order::Column::Version,
            Expr::col(order::Column::Version).add(1),
        )
        .col_expr(order::Column::UpdatedAt, Expr::value(at))
        .col_expr(order::Column::CancelReason, Expr::value(reason))
        .filter(order::Column::Status.eq(Status::Pending))
        .filter(which)
        .into_query();
    update.returning_all();
    let txn = db.begin().await?;
    let stmt = txn.get_database_backend().build(&update);
    let moved = order::Entity::find().from_raw_sql(stmt).all(&txn).await?;
    let items: HashMap<&str, &[order_item::Model]> = seen
        .iter()
        .map(|r| (r.order.id.as_str(), r.items.as_slice()))
        .collect();
    for order in &moved {
        let after = OrderRecord {
            items: items
                .get(order.id.as_str())
                .map(|i| i.to_vec())
                .unwrap_or_default(),
            order: order.clone(),
        };
        events::status_changed(&txn, Status::Pending, &after, at).await?;
    }
    txn.commit().await?;
    Ok(moved.into_iter().map(|o| o.id).collect())
}

/// Name of the common table expression holding the rows a claim picked.
const PICKED: &str = "picked";

/// `WITH picked AS MATERIALIZED (<pick>)`: PostgreSQL runs the picking sub-select (with
/// its LIMIT and row locks) exactly once. Written as a plain `IN (SELECT … LIMIT n FOR
/// UPDATE SKIP LOCKED)`, PostgreSQL may run the sub-select again for each row it updates,
/// and then claims far more than `n` rows.
fn materialized(pick: SelectStatement) -> WithClause {
    let mut cte = CommonTableExpression::new();
    cte.table_name(Alias::new(PICKED))
        .column(order::Column::Id)
        .query(pick)
        .materialized(true);
    WithClause::new().cte(cte).to_owned()
}

/// `SELECT id FROM picked`.
fn picked() -> SelectStatement {
    Query::select()
        .column(order::Column::Id)
        .from(Alias::new(PICKED))
        .to_owned()
}

/// Ends a claim on order `id` that still holds (its `claimed_until` is `held_until`, the
/// value the claim set), making the row due again from `again`. False when the claim was
/// no longer there (it lapsed and someone else claimed the row).
pub async fn unclaim(
    db: &impl ConnectionTrait,
    id: &str,
    held_until: DateTime<Utc>,
    again: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let res = order::Entity::update_many()
        .col_expr(order::Column::ClaimedUntil, Expr::value(again))
        .filter(order::Column::Id.eq(id))
        .filter(order::Column::ClaimedUntil.eq(held_until))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// The lines of every order in `ids`, by order id (each in line order).
pub async fn items_of(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<HashMap<String, Vec<order_item::Model>>, DbErr> {
    let mut by_order: HashMap<String, Vec<order_item::Model>> = HashMap::new();
    if ids.is_empty() {
        return Ok(by_order);
    }
    let items = order_item::Entity::find()
        .filter(order_item::Column::OrderId.is_in(ids.iter().cloned()))
        .order_by_asc(order_item::Column::OrderId)
        .order_by_asc(order_item::Column::Line)
        .all(db)
        .await?;
    for item in items {
        by_order
            .entry(item.order_id.clone())
            .or_default()
            .push(item);
    }
    Ok(by_order)
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
