//! `stock_thresholds`: a product's own low-stock threshold, set by SetLowStockThreshold.
//! Products without a row use the service default (`STOCKMESH_LOW_STOCK_THRESHOLD`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stock_thresholds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub product_id: String,
    /// Below this total available the product is low; 0 = never.
    pub threshold: i64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
