//! `stock`: one row per (product, warehouse) ever stocked. The database enforces
//! `on_hand >= reserved >= 0` with CHECK constraints, so even a bug in the code cannot
//! persist an oversold row.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stock")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub product_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub warehouse_id: String,
    /// Units physically present.
    pub on_hand: i64,
    /// Units held by RESERVED reservations.
    pub reserved: i64,
    /// Bumped by every change of the row; carried by its `StockChanged` events.
    pub version: i64,
    pub updated_at: DateTimeUtc,
}

impl Model {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
