//! Reservations: holding stock for an order, then committing (the units leave `on_hand`)
//! or releasing it (they return to available), or letting it expire.
//!
//! Never overselling rests on one statement: `UPDATE stock SET reserved = reserved + q
//! WHERE product_id = ? AND warehouse_id = ? AND on_hand - reserved >= q`. The database
//! evaluates the condition at the moment of the write (PostgreSQL re-checks it after
//! waiting for a concurrent writer's row lock; SQLite serialises writers), so two
//! reserves can never both take the last units. Zero rows affected means someone else
//! got there first, and the next candidate warehouse is tried.
//!
//! Idempotency: `reservation_id` is the primary key, inserted in the same transaction as
//! the stock update. The same id again returns the stored reservation, whatever its
//! status now; the same id with a different product or quantity is refused with
//! ALREADY_EXISTS (the key already names another reservation). A concurrent duplicate
//! loses on the key, rolls back its stock update, and returns the winner's reservation.
//!
//! Transitions RESERVED → COMMITTED | RELEASED | EXPIRED are conditional updates on
//! `status = 'RESERVED'` in the same transaction as the stock change, so concurrent
//! commits, releases and the expiry sweeper move stock exactly once between them. The
//! sweeper expires due reservations in batches whose status change is also its claim
//! (see [`expire_batch`]), so the sweepers of several replicas split the work instead of
//! racing for the same rows.
//!
//! Late Reserve after Release: a caller (the orders saga) may time out on a Reserve,
//! compensate with a Release, and have the Reserve land afterwards. Were the Release of an
//! unknown id a no-op, that late Reserve would hold stock nobody will ever release until
//! the TTL. So a Release of an id never seen records a *tombstone*: a RELEASED row of
//! quantity 0 with no product or warehouse. A later Reserve with that id finds the row
//! and returns it, RELEASED, without reserving anything; the product/quantity check of a
//! reused key does not apply to a tombstone (it names no reservation to conflict with).
//! The tombstone and a concurrent Reserve insert the same primary key, so they serialise
//! on it: if the Reserve wins, the Release's insert fails and the Release then releases
//! the new reservation; if the tombstone wins, the Reserve's insert fails, its stock
//! update rolls back, and it returns the tombstone. Either way no stock stays reserved.
//!
//! Events: every stock update here returns the row as it left it (`RETURNING`), and the
//! same transaction writes its `StockChanged` (cause RESERVATION, COMMIT, RELEASE or
//! EXPIRY, cause_id the reservation id); a Reserve that takes the product's total available
//! below its threshold also writes a `StockLow`. The Reserve's update returns, besides the
//! row, the product's threshold and the available units of its other warehouses, as
//! sub-selects of the same statement, so the crossing check costs no statement. The
//! other warehouses are read as of the statement (exact on SQLite, whose writers are
//! serialised; on PostgreSQL a concurrent change of another warehouse of the same product
//! may be missed, so two racing Reserves may both, or neither, report the crossing).
//! Replays, refusals and tombstones move no stock and write no event.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, ExprTrait, LockBehavior, LockType, Query, SelectStatement,
    SubQueryStatement, WithClause,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Set,
};

use chrono::{DateTime, Utc};
use sea_orm::QueryResult;
use stockmesh::proto::inventory::v1::StockChangeCause;

use crate::entity::reservation::{self, Status};
use crate::entity::{stock, warehouse};
use crate::error::{Error, Result};
use crate::events::{self, Cause, RowAfter};
use crate::geo::{self, Candidate};
use crate::stock::{MAX_QUANTITY, require_key};
use crate::thresholds;
use crate::txn::{begin_write, now};

/// A Reserve request, decoded.
#[derive(Debug, Clone)]
pub struct ReserveInput {
    pub reservation_id: String,
    pub product_id: String,
    pub quantity: i64,
    pub warehouse_id: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// Holds `quantity` units in one warehouse able to serve all of them.
pub async fn reserve(
    db: &DatabaseConnection,
    ttl: Duration,
    input: ReserveInput,
    default_threshold: i64,
) -> Result<reservation::Model> {
    let delivery = validate(&input)?;
    let preferred = input.warehouse_id.as_deref().filter(|w| !w.is_empty());

    // A replay (or a tombstone) is not looked for first: the reservation's INSERT below
    // collides with it on the primary key, the transaction rolls back (the stock it took
    // with it) and the stored reservation answers. That costs a replay an UPDATE rolled
    // back, and spares every new reservation a statement.
    let tx = begin_write(db).await?;
    let order = geo::rank(
        candidates(&tx, &input.product_id, input.quantity).await?,
        preferred,
        delivery,
    );
    let at = now();
    let expires_at = at
        + chrono::Duration::from_std(ttl)
            .map_err(|e| Error::Internal(format!("reservation TTL out of range: {e}")))?;
    for warehouse_id in order {
        let mut take = stock::Entity::update_many()
            .col_expr(
                stock::Column::Reserved,
                Expr::col(stock::Column::Reserved).add(input.quantity),
            )
            .col_expr(
                stock::Column::Version,
                Expr::col(stock::Column::Version).add(1i64),
            )
            .col_expr(stock::Column::UpdatedAt, Expr::value(at))
            .filter(stock::Column::ProductId.eq(input.product_id.as_str()))
            .filter(stock::Column::WarehouseId.eq(warehouse_id.as_str()))
            .filter(
                Expr::col(stock::Column::OnHand)
                    .sub(Expr::col(stock::Column::Reserved))
                    .gte(input.quantity),
            )
            .into_query();
        take.returning(Query::returning().exprs([
            Expr::col(stock::Column::OnHand),
            Expr::col(stock::Column::Reserved),
            Expr::col(stock::Column::Version),
            thresholds::sub_select(&input.product_id),
            others_available(&input.product_id, &warehouse_id),
        ]));
        let Some(taken) = tx.query_one(&take).await? else {
            // Taken by a concurrent reserve since we read it: try the next one.
            continue;
        };
        let row_after = row_after(&taken, &input.product_id, &warehouse_id)?;
        let threshold = taken
            .try_get_by_index::<Option<i64>>(3)?
            .unwrap_or(default_threshold);
        let others = taken.try_get_by_index::<i64>(4)?;
        let row = reservation::ActiveModel {
            reservation_id: Set(input.reservation_id.clone()),
            product_id: Set(Some(input.product_id.clone())),
            warehouse_id: Set(Some(warehouse_id)),
            quantity: Set(input.quantity),
            status: Set(Status::Reserved),
            expires_at: Set(expires_at),
            created_at: Set(at),
            updated_at: Set(at),
        };
        return match row.insert(&tx).await {
            Ok(model) => {
                let cause = Cause {
                    kind: StockChangeCause::Reservation,
                    id: &input.reservation_id,
                };
                let event_id = events::changed(&tx, at, &row_after, cause).await?;
                let after = others + row_after.on_hand - row_after.reserved;
                events::low_if_crossed(
                    &tx,
                    at,
                    &input.product_id,
                    (after + input.quantity, after),
                    threshold,
                    &event_id,
                )
                .await?;
                tx.commit().await?;
                Ok(model)
            }
            Err(e) if stockmesh::error::is_unique_violation(&e) => {
                tx.rollback().await?;
                let existing = find(db, &input.reservation_id).await?.ok_or_else(|| {
                    Error::Internal(format!(
                        "reservation {} collided but is not stored",
                        input.reservation_id
                    ))
                })?;
                same_or_conflict(existing, &input)
            }
            Err(e) => Err(e.into()),
        };
    }
    tx.rollback().await?;
    // A concurrent call with the same id may have taken the last units: for this caller
    // that is a replay, not a shortage.
    if let Some(existing) = find(db, &input.reservation_id).await? {
        return same_or_conflict(existing, &input);
    }
    Err(short(db, &input).await?)
}

/// `(SELECT available units of the product's other warehouses)`, for the Reserve's
/// `RETURNING`: the row being updated is left out, so both databases agree whatever a
/// sub-select there sees of the statement's own change.
fn others_available(product_id: &str, warehouse_id: &str) -> Expr {
    let others = Alias::new("others");
    let select = Query::select()
        .expr(Expr::cust(
            "CAST(COALESCE(SUM(others.on_hand - others.reserved), 0) AS BIGINT)",
        ))
        .from_as(stock::Entity, others.clone())
        .and_where(Expr::col((others.clone(), stock::Column::ProductId)).eq(product_id))
        .and_where(Expr::col((others, stock::Column::WarehouseId)).ne(warehouse_id))
        .to_owned();
    Expr::from(SubQueryStatement::from(select))
}

/// The row a stock update `RETURNING on_hand, reserved, version, …` left.
fn row_after(row: &QueryResult, product_id: &str, warehouse_id: &str) -> Result<RowAfter> {
    Ok(RowAfter {
        product_id: product_id.to_string(),
        warehouse_id: warehouse_id.to_string(),
        on_hand: row.try_get_by_index(0)?,
        reserved: row.try_get_by_index(1)?,
        version: row.try_get_by_index(2)?,
    })
}

/// `RETURNING on_hand, reserved, version` of a stock update.
fn returning_row() -> sea_orm::sea_query::ReturningClause {
    Query::returning().columns([
        stock::Column::OnHand,
        stock::Column::Reserved,
        stock::Column::Version,
    ])
}

/// Delivery point, when both coordinates are given and valid.
fn validate(input: &ReserveInput) -> Result<Option<(f64, f64)>> {
    require_key("reservation_id", &input.reservation_id)?;
    require_key("product_id", &input.product_id)?;
    if input.quantity <= 0 {
        return Err(Error::invalid("quantity", "must be > 0"));
    }
    if input.quantity > MAX_QUANTITY {
        return Err(Error::invalid(
            "quantity",
            format!("at most {MAX_QUANTITY}"),
        ));
    }
    if let Some(w) = &input.warehouse_id
        && w.len() > crate::stock::MAX_KEY
    {
        return Err(Error::invalid("warehouse_id", "too long"));
    }
    match (input.latitude, input.longitude) {
        (None, None) => Ok(None),
        (Some(lat), Some(lon)) => {
            if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
                return Err(Error::invalid("latitude", "must be between -90 and 90"));
            }
            if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
                return Err(Error::invalid("longitude", "must be between -180 and 180"));
            }
            Ok(Some((lat, lon)))
        }
        (Some(_), None) => Err(Error::invalid("longitude", "is required with latitude")),
        (None, Some(_)) => Err(Error::invalid("latitude", "is required with longitude")),
    }
}

/// Warehouses holding at least `quantity` available units of the product.
async fn candidates(
    db: &impl ConnectionTrait,
    product_id: &str,
    quantity: i64,
) -> Result<Vec<Candidate>> {
    let rows = stock::Entity::find()
        .filter(stock::Column::ProductId.eq(product_id))
        .filter(
            Expr::col(stock::Column::OnHand)
                .sub(Expr::col(stock::Column::Reserved))
                .gte(quantity),
        )
        .all(db)
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let places: HashMap<String, (f64, f64)> = warehouse::Entity::find()
        .filter(warehouse::Column::Id.is_in(rows.iter().map(|r| r.warehouse_id.clone())))
        .all(db)
        .await?
        .into_iter()
        .map(|w| (w.id, (w.latitude, w.longitude)))
        .collect();
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let (latitude, longitude) = *places.get(&r.warehouse_id)?;
            Some(Candidate {
                available: r.available(),
                warehouse_id: r.warehouse_id,
                latitude,
                longitude,
            })
        })
        .collect())
}

/// FAILED_PRECONDITION naming the product and what is available.
async fn short(db: &DatabaseConnection, input: &ReserveInput) -> Result<Error> {
    let rows = stock::Entity::find()
        .filter(stock::Column::ProductId.eq(input.product_id.as_str()))
        .all(db)
        .await?;
    let total: i64 = rows.iter().map(stock::Model::available).sum();
    let largest = rows.iter().map(stock::Model::available).max().unwrap_or(0);
    let mut msg = format!(
        "insufficient stock for product {}: requested {}, available {total} in total",
        input.product_id, input.quantity
    );
    if total >= input.quantity {
        msg.push_str(&format!(
            ", but no single warehouse can serve the whole quantity (at most {largest} in one)"
        ));
    }
    Ok(Error::FailedPrecondition(msg))
}

/// The stored row for a replayed key: itself when it matches the request, or when it is a
/// tombstone (released before this Reserve arrived: the answer is RELEASED, whatever was
/// asked); ALREADY_EXISTS when it names another product or quantity.
fn same_or_conflict(
    existing: reservation::Model,
    input: &ReserveInput,
) -> Result<reservation::Model> {
    if existing.is_tombstone()
        || (existing.product_id.as_deref() == Some(input.product_id.as_str())
            && existing.quantity == input.quantity)
    {
        Ok(existing)
    } else {
        Err(Error::AlreadyExists(format!(
            "reservation_id {:?} already names a reservation of {} units of product {}",
            existing.reservation_id,
            existing.quantity,
            existing.product_id.as_deref().unwrap_or_default()
        )))
    }
}

pub async fn find(
    db: &impl ConnectionTrait,
    reservation_id: &str,
) -> Result<Option<reservation::Model>> {
    Ok(reservation::Entity::find_by_id(reservation_id.to_string())
        .one(db)
        .await?)
}

pub async fn get(db: &DatabaseConnection, reservation_id: &str) -> Result<reservation::Model> {
    require_key("reservation_id", reservation_id)?;
    find(db, reservation_id)
        .await?
        .ok_or_else(|| not_found(reservation_id))
}

fn not_found(reservation_id: &str) -> Error {
    Error::NotFound(format!("reservation {reservation_id} does not exist"))
}

/// RESERVED → COMMITTED: the units leave `on_hand` and `reserved`. Committing again
/// returns the reservation; a RELEASED or EXPIRED one is FAILED_PRECONDITION.
pub async fn commit(db: &DatabaseConnection, reservation_id: &str) -> Result<reservation::Model> {
    require_key("reservation_id", reservation_id)?;
    transition(db, reservation_id, Status::Committed).await
}

/// RESERVED → RELEASED: the units return to available. Releasing a RELEASED or EXPIRED
/// reservation returns it; a COMMITTED one is FAILED_PRECONDITION. Releasing an id never
/// reserved records and returns a tombstone (see the module docs).
pub async fn release(db: &DatabaseConnection, reservation_id: &str) -> Result<reservation::Model> {
    require_key("reservation_id", reservation_id)?;
    transition(db, reservation_id, Status::Released).await
}

/// Expires one batch: up to `batch` RESERVED reservations whose `expires_at` has passed
/// (oldest first) become EXPIRED and their units return to available, all in one
/// transaction. Returns the reservations it expired, as stored now; empty when none was
/// due.
///
/// The status change is the claim. It is one statement, `WITH picked AS MATERIALIZED
/// (SELECT … WHERE status = 'RESERVED' AND expires_at <= now … LIMIT n FOR UPDATE SKIP
/// LOCKED) UPDATE reservations SET status = 'EXPIRED' … WHERE reservation_id IN (SELECT
/// reservation_id FROM picked) RETURNING *`, so a reservation is expired by
/// one sweeper only, whatever the number of replicas: on PostgreSQL the sub-select skips
/// rows another sweeper (or a Commit or Release) holds locked and re-checks rows changed
/// meanwhile, and on SQLite the transaction holds the database's write lock (`BEGIN
/// IMMEDIATE`). Concurrent Commit and Release calls keep their conditional `status =
/// 'RESERVED'` update, so whichever gets a row first moves its stock, once.
///
/// The stock rows are then updated once per (product, warehouse), in key order: two
/// sweepers locking stock rows in the same order cannot deadlock each other on PostgreSQL.
/// If a stock row does not hold the units its expired reservations say it does (only a bug
/// produces that) the whole batch rolls back with an error.
pub async fn expire_batch(db: &DatabaseConnection, batch: u64) -> Result<Vec<reservation::Model>> {
    let at = now();
    let pick = reservation::Entity::find()
        .select_only()
        .column(reservation::Column::ReservationId)
        .filter(reservation::Column::Status.eq(Status::Reserved))
        .filter(reservation::Column::ExpiresAt.lte(at))
        .order_by_asc(reservation::Column::ExpiresAt)
        .order_by_asc(reservation::Column::ReservationId)
        .limit(batch)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_query();
    let mut claim = reservation::Entity::update_many()
        .col_expr(
            reservation::Column::Status,
            Expr::value(Status::Expired.name()),
        )
        .col_expr(reservation::Column::UpdatedAt, Expr::value(at))
        // Only the picked rows: they were RESERVED and due when picked and stay locked
        // (or, on SQLite, the transaction holds the write lock) until the update.
        // Repeating the condition here would invite PostgreSQL to scan every due row
        // against the picked ones instead of looking the picked ones up by key.
        .filter(reservation::Column::ReservationId.in_subquery(picked()))
        .into_query();
    claim.returning_all();

    let tx = begin_write(db).await?;
    let stmt = tx
        .get_database_backend()
        .build(&claim.with(materialized(pick)));
    let expired = reservation::Entity::find()
        .from_raw_sql(stmt)
        .all(&tx)
        .await?;
    // Per stock row, its expired reservations in a fixed order and their units.
    let mut units: BTreeMap<(&str, &str), (i64, Vec<&reservation::Model>)> = BTreeMap::new();
    for r in &expired {
        let (Some(product_id), Some(warehouse_id)) =
            (r.product_id.as_deref(), r.warehouse_id.as_deref())
        else {
            tx.rollback().await?;
            return Err(Error::Internal(format!(
                "reservation {} was RESERVED without a product or warehouse",
                r.reservation_id
            )));
        };
        let (total, of_row) = units.entry((product_id, warehouse_id)).or_default();
        *total = total.checked_add(r.quantity).ok_or_else(|| {
            Error::Internal(format!(
                "units expiring of product {product_id} in warehouse {warehouse_id} overflow"
            ))
        })?;
        of_row.push(r);
    }
    for ((product_id, warehouse_id), (q, of_row)) in units {
        let n = i64::try_from(of_row.len()).unwrap_or(i64::MAX);
        // One version per expired reservation: each gets an event of its own.
        let mut update = stock::Entity::update_many()
            .col_expr(
                stock::Column::Reserved,
                Expr::col(stock::Column::Reserved).sub(q),
            )
            .col_expr(
                stock::Column::Version,
                Expr::col(stock::Column::Version).add(n),
            )
            .col_expr(stock::Column::UpdatedAt, Expr::value(at))
            .filter(stock::Column::ProductId.eq(product_id))
            .filter(stock::Column::WarehouseId.eq(warehouse_id))
            .filter(stock::Column::Reserved.gte(q))
            .into_query();
        update.returning(returning_row());
        let Some(changed) = tx.query_one(&update).await? else {
            tx.rollback().await?;
            return Err(Error::Internal(format!(
                "expired reservations hold {q} units of product {product_id} in warehouse {warehouse_id} that its stock row does not have reserved"
            )));
        };
        let last = row_after(&changed, product_id, warehouse_id)?;
        expiry_events(&tx, at, &last, &of_row).await?;
    }
    tx.commit().await?;
    Ok(expired)
}

/// One `StockChanged` per reservation of `of_row` (expired together, in this order),
/// each with the row as if they had expired one after the other: `last` is the row
/// after all of them.
async fn expiry_events(
    tx: &impl ConnectionTrait,
    at: DateTime<Utc>,
    last: &RowAfter,
    of_row: &[&reservation::Model],
) -> Result<()> {
    // Units of the reservations after the i-th, still reserved "after" it.
    let mut still_reserved: i64 = of_row.iter().map(|r| r.quantity).sum();
    let n = of_row.len() as i64;
    for (i, r) in of_row.iter().enumerate() {
        still_reserved -= r.quantity;
        let row = RowAfter {
            reserved: last.reserved + still_reserved,
            version: last.version - (n - 1 - i as i64),
            ..last.clone()
        };
        let cause = Cause {
            kind: StockChangeCause::Expiry,
            id: &r.reservation_id,
        };
        events::changed(tx, at, &row, cause).await?;
    }
    Ok(())
}

/// Name of the common table expression holding the rows a sweep picked.
const PICKED: &str = "picked";

/// `WITH picked AS MATERIALIZED (<pick>)`: PostgreSQL runs the picking sub-select (with
/// its LIMIT and row locks) exactly once. Written as a plain `IN (SELECT … LIMIT n FOR
/// UPDATE SKIP LOCKED)`, PostgreSQL may run the sub-select again for each row it updates,
/// and then takes far more than `n` rows.
fn materialized(pick: SelectStatement) -> WithClause {
    let mut cte = CommonTableExpression::new();
    cte.table_name(Alias::new(PICKED))
        .column(reservation::Column::ReservationId)
        .query(pick)
        .materialized(true);
    WithClause::new().cte(cte).to_owned()
}

/// `SELECT reservation_id FROM picked`.
fn picked() -> SelectStatement {
    Query::select()
        .column(reservation::Column::ReservationId)
        .from(Alias::new(PICKED))
        .to_owned()
}

/// Expires one reservation due now by itself (RESERVED → EXPIRED with its stock), for
/// when a batch cannot be expired as a whole. True when this call expired it; false when
/// it was no longer RESERVED (committed, released or expired by someone else meanwhile).
pub async fn expire_one(db: &DatabaseConnection, reservation_id: &str) -> Result<bool> {
    Ok(move_reserved(db, reservation_id, Status::Expired)
        .await?
        .is_some())
}

/// The ids of up to `limit` reservations due to expire now, oldest first (no claim).
pub async fn due_ids(db: &DatabaseConnection, limit: u64) -> Result<Vec<String>> {
    Ok(reservation::Entity::find()
        .select_only()
        .column(reservation::Column::ReservationId)
        .filter(reservation::Column::Status.eq(Status::Reserved))
        .filter(reservation::Column::ExpiresAt.lte(now()))
        .order_by_asc(reservation::Column::ExpiresAt)
        .order_by_asc(reservation::Column::ReservationId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

/// Moves a RESERVED reservation to `to` and its units accordingly, exactly once however
/// many callers race; answers replays and illegal transitions from the stored status. A
/// release of an unknown id records a tombstone.
async fn transition(
    db: &DatabaseConnection,
    reservation_id: &str,
    to: Status,
) -> Result<reservation::Model> {
    // A row that a concurrent Reserve inserts between our conditional update and our
    // read (or that beats our tombstone insert) is RESERVED, and the next round moves it.
    // Rows are never deleted and never return to RESERVED, so round two always concludes.
    for _ in 0..2 {
        if let Some(moved) = move_reserved(db, reservation_id, to).await? {
            return Ok(moved);
        }
        match find(db, reservation_id).await? {
            Some(r) if r.status == Status::Reserved => {}
            Some(r) => return settled(reservation_id, to, r),
            None if to == Status::Released => {
                if let Some(tombstone) = tombstone(db, reservation_id).await? {
                    return Ok(tombstone);
                }
            }
            None => return Err(not_found(reservation_id)),
        }
    }
    Err(Error::Internal(format!(
        "reservation {reservation_id} is RESERVED but could not be moved"
    )))
}

/// The RESERVED → `to` step: `Some` with the moved reservation when this call moved it,
/// `None` when it was not RESERVED (or does not exist).
async fn move_reserved(
    db: &DatabaseConnection,
    reservation_id: &str,
    to: Status,
) -> Result<Option<reservation::Model>> {
    let tx = begin_write(db).await?;
    let moved = reservation::Entity::update_many()
        .col_expr(reservation::Column::Status, Expr::value(to.name()))
        .col_expr(reservation::Column::UpdatedAt, Expr::value(now()))
        .filter(reservation::Column::ReservationId.eq(reservation_id))
        .filter(reservation::Column::Status.eq(Status::Reserved))
        .exec(&tx)
        .await?;
    if moved.rows_affected != 1 {
        tx.rollback().await?;
        return Ok(None);
    }
    let r = find(&tx, reservation_id)
        .await?
        .ok_or_else(|| Error::Internal(format!("reservation {reservation_id} vanished")))?;
    let (Some(product_id), Some(warehouse_id)) =
        (r.product_id.as_deref(), r.warehouse_id.as_deref())
    else {
        tx.rollback().await?;
        return Err(Error::Internal(format!(
            "reservation {reservation_id} was RESERVED without a product or warehouse"
        )));
    };
    let q = r.quantity;
    let mut update = stock::Entity::update_many()
        .col_expr(
            stock::Column::Reserved,
            Expr::col(stock::Column::Reserved).sub(q),
        )
        .col_expr(
            stock::Column::Version,
            Expr::col(stock::Column::Version).add(1i64),
        )
        .col_expr(stock::Column::UpdatedAt, Expr::value(r.updated_at));
    if to == Status::Committed {
        update = update.col_expr(
            stock::Column::OnHand,
            Expr::col(stock::Column::OnHand).sub(q),
        );
    }
    let mut update = update
        .filter(stock::Column::ProductId.eq(product_id))
        .filter(stock::Column::WarehouseId.eq(warehouse_id))
        .filter(stock::Column::Reserved.gte(q))
        .into_query();
    update.returning(returning_row());
    let Some(changed) = tx.query_one(&update).await? else {
        tx.rollback().await?;
        return Err(Error::Internal(format!(
            "reservation {reservation_id} holds {q} units its stock row does not have reserved"
        )));
    };
    let row = row_after(&changed, product_id, warehouse_id)?;
    let kind = match to {
        Status::Committed => StockChangeCause::Commit,
        Status::Released => StockChangeCause::Release,
        Status::Expired | Status::Reserved => StockChangeCause::Expiry,
    };
    let cause = Cause {
        kind,
        id: reservation_id,
    };
    // Commit, release and expiry leave available as it was or raise it: never low.
    events::changed(&tx, r.updated_at, &row, cause).await?;
    tx.commit().await?;
    Ok(Some(r))
}

/// Records that `reservation_id` is released before any Reserve of it: `None` when a
/// concurrent Reserve or Release inserted the id first (the caller looks again).
async fn tombstone(
    db: &DatabaseConnection,
    reservation_id: &str,
) -> Result<Option<reservation::Model>> {
    let at = now();
    let row = reservation::ActiveModel {
        reservation_id: Set(reservation_id.to_string()),
        product_id: Set(None),
        warehouse_id: Set(None),
        quantity: Set(0),
        status: Set(Status::Released),
        // Never looked at: the sweeper only expires RESERVED rows.
        expires_at: Set(at),
        created_at: Set(at),
        updated_at: Set(at),
    };
    match row.insert(db).await {
        Ok(model) => {
            tracing::info!(
                reservation_id,
                "release of an unknown reservation recorded as a tombstone"
            );
            Ok(Some(model))
        }
        Err(e) if stockmesh::error::is_unique_violation(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The answer for a reservation that `to` did not move: a replay, a no-op, or an illegal
/// transition.
fn settled(reservation_id: &str, to: Status, r: reservation::Model) -> Result<reservation::Model> {
    match (to, r.status) {
        (_, now_) if now_ == to => Ok(r),
        // Releasing something that no longer holds stock (expired) is done already.
        (Status::Released, Status::Expired) => Ok(r),
        // The sweeper raced a commit or release: nothing to do.
        (Status::Expired, _) => Ok(r),
        (to, from) => Err(Error::FailedPrecondition(format!(
            "reservation {reservation_id} is {}; it cannot become {}",
            from.name(),
            to.name()
        ))),
    }
}
