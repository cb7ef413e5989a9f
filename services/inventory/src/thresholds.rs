//! Low-stock thresholds: below its threshold a product's total available is low, and the
//! change that takes it there publishes a `StockLow` (see [`crate::events`]). A product's
//! own threshold (SetLowStockThreshold, stored in `stock_thresholds`) wins over the
//! service default `STOCKMESH_LOW_STOCK_THRESHOLD`; 0 means never low.
//!
//! Thresholds are read where they are needed, never cached: another replica may have
//! changed one a moment ago. On the Reserve path the read is a sub-select of the stock
//! update's `RETURNING` ([`sub_select`]), so it costs no statement of its own.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, OnConflict, Query, SubQueryStatement};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};

use crate::catalog::Catalog;
use crate::entity::stock_threshold;
use crate::error::{Error, Result};
use crate::stock::{self, StockView, require_key};
use crate::txn::{begin_write, now};

/// The threshold of a product without its own: `STOCKMESH_LOW_STOCK_THRESHOLD`.
pub fn default_from(setting: u64) -> i64 {
    i64::try_from(setting).unwrap_or(i64::MAX)
}

/// The product's threshold: its own, else `default`.
pub async fn of(db: &impl ConnectionTrait, product_id: &str, default: i64) -> Result<i64> {
    Ok(stock_threshold::Entity::find_by_id(product_id.to_string())
        .one(db)
        .await?
        .map_or(default, |t| t.threshold))
}

/// The thresholds of `product_ids` (each its own, else `default`), in one query.
pub async fn of_many(
    db: &impl ConnectionTrait,
    product_ids: &[String],
    default: i64,
) -> Result<HashMap<String, i64>> {
    let own: HashMap<String, i64> = stock_threshold::Entity::find()
        .filter(stock_threshold::Column::ProductId.is_in(product_ids.iter().cloned()))
        .all(db)
        .await?
        .into_iter()
        .map(|t| (t.product_id, t.threshold))
        .collect();
    Ok(product_ids
        .iter()
        .map(|p| (p.clone(), own.get(p).copied().unwrap_or(default)))
        .collect())
}

/// `(SELECT threshold FROM stock_thresholds WHERE product_id = ?)`: NULL when the
/// product has no threshold of its own.
pub fn sub_select(product_id: &str) -> Expr {
    let select = Query::select()
        .column(stock_threshold::Column::Threshold)
        .from(stock_threshold::Entity)
        .and_where(stock_threshold::Column::ProductId.eq(product_id))
        .to_owned();
    Expr::from(SubQueryStatement::from(select))
}

/// SetLowStockThreshold: validates, checks the product exists (as Restock does: before
/// anything is written), stores the threshold, and returns the product's stock with it.
pub async fn set(
    db: &DatabaseConnection,
    catalog: &Catalog,
    product_id: &str,
    threshold: i64,
) -> Result<StockView> {
    require_key("product_id", product_id)?;
    if threshold < 0 {
        return Err(Error::invalid("threshold", "must be >= 0 (0 = never low)"));
    }
    catalog.require_product(product_id).await?;
    let tx = begin_write(db).await?;
    let row = stock_threshold::ActiveModel {
        product_id: Set(product_id.to_string()),
        threshold: Set(threshold),
        updated_at: Set(now()),
    };
    stock_threshold::Entity::insert(row)
        .on_conflict(
            OnConflict::column(stock_threshold::Column::ProductId)
                .update_columns([
                    stock_threshold::Column::Threshold,
                    stock_threshold::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
    let mut view = stock::rows(&tx, product_id).await?;
    view.low_stock_threshold = threshold;
    tx.commit().await?;
    Ok(view)
}
