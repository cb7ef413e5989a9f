//! Stock levels per (product, warehouse): reading them, and the two operator writes,
//! Restock and AdjustStock, both idempotent by `request_id`.
//!
//! Idempotency: the request is recorded in `stock_requests` (primary key `request_id`)
//! in the same transaction as the stock change, together with the response. A replay
//! with the same parameters gets that first response back and moves nothing; a
//! `request_id` reused for different parameters is refused with ALREADY_EXISTS (the key
//! already names another request). A concurrent duplicate that slips past the first
//! lookup loses on the primary key, rolls its whole transaction back and answers as a
//! replay.
//!
//! Events: the transaction of a change also writes its `StockChanged` (cause RESTOCK or
//! ADJUSTMENT, cause_id the request_id) and, when an adjustment takes the product's total
//! available below its threshold, a `StockLow` (see [`crate::events`]). A replay writes
//! nothing.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set,
};
use serde::{Deserialize, Serialize};

use stockmesh::proto::inventory::v1::StockChangeCause;

use crate::catalog::Catalog;
use crate::entity::stock;
use crate::entity::stock_request::{self, RequestKind};
use crate::error::{Error, Result};
use crate::events::{self, Cause, RowAfter};
use crate::thresholds;
use crate::txn::{begin_write, now};
use crate::warehouses;

/// Largest quantity one request may move; keeps sums far from i64 overflow.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;
/// Longest accepted id, key or reason.
pub const MAX_KEY: usize = 200;
const MAX_REASON: usize = 500;

/// One product's stock over all warehouses (the shape of `Stock` in the proto, and of the
/// stored response of a stock request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockView {
    pub product_id: String,
    pub warehouses: Vec<WarehouseStock>,
    /// The product's low-stock threshold now (not part of a stored response: a replay
    /// answers with the current one).
    #[serde(skip)]
    pub low_stock_threshold: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseStock {
    pub warehouse_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    /// The row's change counter (see the `stock_events` migration); not stored in
    /// responses.
    #[serde(skip)]
    pub version: i64,
}

impl StockView {
    pub fn total_on_hand(&self) -> i64 {
        self.warehouses.iter().map(|w| w.on_hand).sum()
    }
    pub fn total_reserved(&self) -> i64 {
        self.warehouses.iter().map(|w| w.reserved).sum()
    }
}

/// A Restock (`delta` > 0, empty reason) or AdjustStock (signed `delta`, reason).
#[derive(Debug, Clone)]
pub struct StockChange {
    pub kind: RequestKind,
    pub request_id: String,
    pub product_id: String,
    pub warehouse_id: String,
    pub delta: i64,
    pub reason: String,
}

/// Checks that an id-like field is present and of sane length.
pub fn require_key(field: &'static str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.len() > MAX_KEY {
        return Err(Error::invalid(field, format!("at most {MAX_KEY} bytes")));
    }
    Ok(())
}

/// The stock of `product_id` (no rows, all zeros, when never stocked) with its
/// low-stock threshold (its own, else `default_threshold`).
pub async fn get(
    db: &impl ConnectionTrait,
    product_id: &str,
    default_threshold: i64,
) -> Result<StockView> {
    let mut view = rows(db, product_id).await?;
    view.low_stock_threshold = thresholds::of(db, product_id, default_threshold).await?;
    Ok(view)
}

/// The stock rows of `product_id`, by warehouse id (threshold left 0).
pub async fn rows(db: &impl ConnectionTrait, product_id: &str) -> Result<StockView> {
    let rows = stock::Entity::find()
        .filter(stock::Column::ProductId.eq(product_id))
        .order_by_asc(stock::Column::WarehouseId)
        .all(db)
        .await?;
    Ok(StockView {
        product_id: product_id.to_string(),
        warehouses: rows
            .into_iter()
            .map(|r| WarehouseStock {
                warehouse_id: r.warehouse_id,
                on_hand: r.on_hand,
                reserved: r.reserved,
                version: r.version,
            })
            .collect(),
        low_stock_threshold: 0,
    })
}

/// Restock: the warehouse must exist here and the product in ProductService (checked
/// before anything is written, so an unreachable ProductService writes nothing).
pub async fn restock(
    db: &DatabaseConnection,
    catalog: &Catalog,
    change: StockChange,
    default_threshold: i64,
) -> Result<StockView> {
    validate(&change)?;
    if let Some(prev) = find_request(db, &change.request_id).await? {
        return replayed(db, prev, &change, default_threshold).await;
    }
    warehouses::find(db, &change.warehouse_id).await?;
    catalog.require_product(&change.product_id).await?;
    apply(db, change, default_threshold).await
}

/// AdjustStock: a signed correction of `on_hand` that never takes it below `reserved`.
pub async fn adjust(
    db: &DatabaseConnection,
    change: StockChange,
    default_threshold: i64,
) -> Result<StockView> {
    validate(&change)?;
    if let Some(prev) = find_request(db, &change.request_id).await? {
        return replayed(db, prev, &change, default_threshold).await;
    }
    warehouses::find(db, &change.warehouse_id).await?;
    apply(db, change, default_threshold).await
}

fn validate(c: &StockChange) -> Result<()> {
    require_key("product_id", &c.product_id)?;
    require_key("warehouse_id", &c.warehouse_id)?;
    require_key("request_id", &c.request_id)?;
    match c.kind {
        RequestKind::Restock => {
            if c.delta <= 0 {
                return Err(Error::invalid("quantity", "must be > 0"));
            }
            if c.delta > MAX_QUANTITY {
                return Err(Error::invalid(
                    "quantity",
                    format!("at most {MAX_QUANTITY}"),
                ));
            }
        }
        RequestKind::Adjust => {
            if c.delta == 0 {
                return Err(Error::invalid("delta", "must not be 0"));
            }
            if c.delta.unsigned_abs() > MAX_QUANTITY.unsigned_abs() {
                return Err(Error::invalid(
                    "delta",
                    format!("at most {MAX_QUANTITY} in absolute value"),
                ));
            }
            if c.reason.trim().is_empty() {
                return Err(Error::invalid("reason", "is required"));
            }
            if c.reason.chars().count() > MAX_REASON {
                return Err(Error::invalid(
                    "reason",
                    format!("at most {MAX_REASON} characters"),
                ));
            }
        }
    }
    Ok(())
}

async fn find_request(
    db: &impl ConnectionTrait,
    request_id: &str,
) -> Result<Option<stock_request::Model>> {
    Ok(stock_request::Entity::find_by_id(request_id.to_string())
        .one(db)
        .await?)
}

/// [`replay`] with the product's current threshold.
async fn replayed(
    db: &impl ConnectionTrait,
    prev: stock_request::Model,
    change: &StockChange,
    default_threshold: i64,
) -> Result<StockView> {
    let mut view = replay(prev, change)?;
    view.low_stock_threshold = thresholds::of(db, &view.product_id, default_threshold).await?;
    Ok(view)
}

/// The first response for a replayed request, or ALREADY_EXISTS when the key was used
/// for something else.
fn replay(prev: stock_request::Model, change: &StockChange) -> Result<StockView> {
    let same = prev.kind == change.kind
        && prev.product_id == change.product_id
        && prev.warehouse_id == change.warehouse_id
        && prev.quantity == change.delta
        && prev.reason == change.reason.trim();
    if !same {
        return Err(Error::AlreadyExists(format!(
            "request_id {:?} was already used for a different request ({} of {} for product {} in warehouse {})",
            prev.request_id,
            prev.kind.name(),
            prev.quantity,
            prev.product_id,
            prev.warehouse_id
        )));
    }
    serde_json::from_str(&prev.result)
        .map_err(|e| Error::Internal(format!("stored result of request {}: {e}", prev.request_id)))
}

/// Moves the stock and records the request and its events, atomically.
async fn apply(
    db: &DatabaseConnection,
    change: StockChange,
    default_threshold: i64,
) -> Result<StockView> {
    let tx = begin_write(db).await?;
    // Authoritative on SQLite (writers are serialised); on PostgreSQL a concurrent first
    // call is caught by the primary key below.
    if let Some(prev) = find_request(&tx, &change.request_id).await? {
        let view = replayed(&tx, prev, &change, default_threshold).await;
        tx.rollback().await?;
        return view;
    }
    let at = now();
    if change.delta > 0 {
        let row = stock::ActiveModel {
            product_id: Set(change.product_id.clone()),
            warehouse_id: Set(change.warehouse_id.clone()),
            on_hand: Set(change.delta),
            reserved: Set(0),
            version: Set(1),
            updated_at: Set(at),
        };
        stock::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([stock::Column::ProductId, stock::Column::WarehouseId])
                    .value(
                        stock::Column::OnHand,
                        Expr::col((stock::Entity, stock::Column::OnHand)).add(change.delta),
                    )
                    .value(
                        stock::Column::Version,
                        Expr::col((stock::Entity, stock::Column::Version)).add(1i64),
                    )
                    .update_column(stock::Column::UpdatedAt)
                    .to_owned(),
            )
            .exec_without_returning(&tx)
            .await?;
    } else {
        // Conditional: the row changes only if on_hand stays ≥ reserved, checked by the
        // database at the moment of the write.
        let moved = stock::Entity::update_many()
            .col_expr(
                stock::Column::OnHand,
                Expr::col(stock::Column::OnHand).add(change.delta),
            )
            .col_expr(
                stock::Column::Version,
                Expr::col(stock::Column::Version).add(1i64),
            )
            .col_expr(stock::Column::UpdatedAt, Expr::value(at))
            .filter(stock::Column::ProductId.eq(change.product_id.as_str()))
            .filter(stock::Column::WarehouseId.eq(change.warehouse_id.as_str()))
            .filter(
                Expr::col(stock::Column::OnHand)
                    .add(change.delta)
                    .gte(Expr::col(stock::Column::Reserved)),
            )
            .exec(&tx)
            .await?;
        if moved.rows_affected == 0 {
            let current =
                stock::Entity::find_by_id((change.product_id.clone(), change.warehouse_id.clone()))
                    .one(&tx)
                    .await?;
            tx.rollback().await?;
            let (on_hand, reserved) = current.map_or((0, 0), |r| (r.on_hand, r.reserved));
            return Err(Error::FailedPrecondition(format!(
                "adjusting product {} in warehouse {} by {} would take on_hand ({on_hand}) below reserved ({reserved})",
                change.product_id, change.warehouse_id, change.delta
            )));
        }
    }
    // The answer needs this read anyway; it also gives the events their numbers.
    let view = get(&tx, &change.product_id, default_threshold).await?;
    let result = serde_json::to_string(&view)
        .map_err(|e| Error::Internal(format!("cannot serialise stock: {e}")))?;
    let record = stock_request::ActiveModel {
        request_id: Set(change.request_id.clone()),
        kind: Set(change.kind),
        product_id: Set(change.product_id.clone()),
        warehouse_id: Set(change.warehouse_id.clone()),
        quantity: Set(change.delta),
        reason: Set(change.reason.trim().to_string()),
        result: Set(result),
        created_at: Set(at),
    };
    match record.insert(&tx).await {
        Ok(_) => {
            write_events(&tx, at, &change, &view).await?;
            tx.commit().await?;
            Ok(view)
        }
        Err(e) if stockmesh::error::is_unique_violation(&e) => {
            // A concurrent call with this request_id committed first: undo ours.
            tx.rollback().await?;
            let prev = find_request(db, &change.request_id).await?.ok_or_else(|| {
                Error::Internal(format!(
                    "request {} collided but is not stored",
                    change.request_id
                ))
            })?;
            replayed(db, prev, &change, default_threshold).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The `StockChanged` of the row `change` moved and, for a cut that crossed the
/// threshold, the `StockLow`; `view` is the product's stock after the change.
async fn write_events(
    tx: &impl ConnectionTrait,
    at: chrono::DateTime<chrono::Utc>,
    change: &StockChange,
    view: &StockView,
) -> Result<()> {
    let row = view
        .warehouses
        .iter()
        .find(|w| w.warehouse_id == change.warehouse_id)
        .ok_or_else(|| {
            Error::Internal(format!(
                "stock row of product {} in warehouse {} vanished inside its transaction",
                change.product_id, change.warehouse_id
            ))
        })?;
    let kind = match change.kind {
        RequestKind::Restock => StockChangeCause::Restock,
        RequestKind::Adjust => StockChangeCause::Adjustment,
    };
    let row = RowAfter {
        product_id: change.product_id.clone(),
        warehouse_id: row.warehouse_id.clone(),
        on_hand: row.on_hand,
        reserved: row.reserved,
        version: row.version,
    };
    let cause = Cause {
        kind,
        id: &change.request_id,
    };
    let event_id = events::changed(tx, at, &row, cause).await?;
    // Reserved did not move: available moved by exactly `delta`.
    let after = view.total_on_hand() - view.total_reserved();
    events::low_if_crossed(
        tx,
        at,
        &change.product_id,
        (after - change.delta, after),
        view.low_stock_threshold,
        &event_id,
    )
    .await
}
