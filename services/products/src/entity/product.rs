//! `products`: the catalog.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "products")]
pub struct Model {
    /// UUIDv7 text, so ordering by id is creation order (keyset pagination relies on it).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Unique (index `ux_products_sku`).
    pub sku: String,
    /// Unique, exact (index `ux_products_name`).
    pub name: String,
    /// `name` lower-cased by Rust's Unicode rules. `name_contains` searches this column,
    /// so the search is case-insensitive the same way on SQLite (whose `LOWER` only knows
    /// ASCII) and PostgreSQL.
    pub name_folded: String,
    pub description: String,
    pub price_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// References `suppliers.id` (a supplier in use cannot be deleted).
    pub supplier_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
