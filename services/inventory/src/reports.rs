//! GetStockReport: every stock row (product × warehouse) with the product's SKU, name and
//! current price from ProductService, the warehouse's name, the row's value at that price,
//! and whether the product is below its low-stock threshold.
//!
//! "Below" is the rule `StockLow` uses ([`crate::thresholds`]): the product's total
//! available over *every* warehouse is under its threshold (its own, else
//! `STOCKMESH_LOW_STOCK_THRESHOLD`; 0 = never low). So a report of one warehouse still
//! reads the product's rows in the others, and `low_only` keeps the rows of low products.
//!
//! Reads: the stock rows (of the products stocked in the warehouse, when one is asked
//! for), the warehouses and the products' own thresholds — three queries, the last two
//! over small tables — and BatchGetProducts in chunks of at most 500 ids. A product
//! deleted from the catalog keeps its rows (its stock is still there) with an empty SKU
//! and name and price 0, so it adds nothing to the value.
//!
//! Values of different currencies are never added up: rows priced in more than one
//! currency are refused with FAILED_PRECONDITION naming them.

use std::collections::HashMap;

use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use crate::catalog::Catalog;
use crate::entity::{stock, stock_threshold, warehouse};
use crate::error::{Error, Result};
use crate::stock::require_key;

/// The currency of a report without priced rows (the catalog's default).
pub const DEFAULT_CURRENCY: &str = "USD";

/// Which rows a report has.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this warehouse's rows.
    pub warehouse_id: Option<String>,
    /// Only rows of products below their threshold.
    pub low_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub product_id: String,
    pub sku: String,
    pub product_name: String,
    pub warehouse_id: String,
    pub warehouse_name: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub unit_price_cents: i64,
    pub value_cents: i64,
    pub below_threshold: bool,
    pub low_stock_threshold: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// By product name, then warehouse name (then ids, for equal names).
    pub rows: Vec<Row>,
    pub total_value_cents: i64,
    pub currency: String,
}

/// The report; `default_threshold` is `STOCKMESH_LOW_STOCK_THRESHOLD`.
pub async fn stock(
    db: &DatabaseConnection,
    catalog: &Catalog,
    default_threshold: i64,
    filter: &Filter,
) -> Result<Report> {
    let warehouse_id = match filter.warehouse_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => {
            require_key("warehouse_id", id)?;
            crate::warehouses::find(db, id).await?;
            Some(id.to_string())
        }
    };
    let mut query = stock::Entity::find();
    if let Some(id) = &warehouse_id {
        let stocked_there = Query::select()
            .column(stock::Column::ProductId)
            .from(stock::Entity)
            .and_where(stock::Column::WarehouseId.eq(id.as_str()))
            .to_owned();
        query = query.filter(stock::Column::ProductId.in_subquery(stocked_there));
    }
    let rows = query.all(db).await?;
    let names: HashMap<String, String> = warehouse::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|w| (w.id, w.name))
        .collect();
    let own: HashMap<String, i64> = stock_threshold::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|t| (t.product_id, t.threshold))
        .collect();

    let mut available: HashMap<&str, i64> = HashMap::new();
    for r in &rows {
        *available.entry(r.product_id.as_str()).or_default() += r.available();
    }
    let mut ids: Vec<String> = available.keys().map(|id| id.to_string()).collect();
    ids.sort();
    let products = catalog.products(&ids).await?;

    let mut report = Report::default();
    let mut currencies: Vec<&str> = Vec::new();
    for r in &rows {
        if warehouse_id.as_ref().is_some_and(|w| *w != r.warehouse_id) {
            continue;
        }
        let threshold = own.get(&r.product_id).copied().unwrap_or(default_threshold);
        let total = available.get(r.product_id.as_str()).copied().unwrap_or(0);
        let below = threshold > 0 && total < threshold;
        if filter.low_only && !below {
            continue;
        }
        let product = products.get(&r.product_id);
        if let Some(p) = product {
            let currency = match p.currency.as_str() {
                "" => DEFAULT_CURRENCY,
                c => c,
            };
            if !currencies.contains(&currency) {
                currencies.push(currency);
            }
        }
        let price = product.map_or(0, |p| p.price_cents);
        let value = r.on_hand.saturating_mul(price);
        report.total_value_cents = report.total_value_cents.saturating_add(value);
        report.rows.push(Row {
            product_id: r.product_id.clone(),
            sku: product.map(|p| p.sku.clone()).unwrap_or_default(),
            product_name: product.map(|p| p.name.clone()).unwrap_or_default(),
            warehouse_id: r.warehouse_id.clone(),
            warehouse_name: names.get(&r.warehouse_id).cloned().unwrap_or_default(),
            on_hand: r.on_hand,
            reserved: r.reserved,
            unit_price_cents: price,
            value_cents: value,
            below_threshold: below,
            low_stock_threshold: threshold,
        });
    }
    if currencies.len() > 1 {
        currencies.sort_unstable();
        return Err(Error::FailedPrecondition(format!(
            "the products of the report are priced in several currencies ({})",
            currencies.join(", ")
        )));
    }
    report.currency = currencies.first().unwrap_or(&DEFAULT_CURRENCY).to_string();
    report.rows.sort_by(|a, b| {
        (
            &a.product_name,
            &a.warehouse_name,
            &a.product_id,
            &a.warehouse_id,
        )
            .cmp(&(
                &b.product_name,
                &b.warehouse_name,
                &b.product_id,
                &b.warehouse_id,
            ))
    });
    Ok(report)
}
