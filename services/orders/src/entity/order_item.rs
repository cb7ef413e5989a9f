//! `order_items`: the lines of an order, with the price snapshot taken at creation.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "order_items")]
pub struct Model {
    /// References `orders.id` (ON DELETE CASCADE).
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: String,
    /// Line number, from 0 in request order.
    #[sea_orm(primary_key, auto_increment = false)]
    pub line: i32,
    pub product_id: String,
    /// Product name when the order was placed.
    pub product_name: String,
    pub quantity: i64,
    /// Unit price in cents when the order was placed.
    pub unit_price_cents: i64,
    /// Warehouse the line's reservation took stock from; empty until reserved.
    pub warehouse_id: String,
    /// Inventory reservation id, `<order id>-<line>`: deterministic, so a retried or
    /// reconciled step addresses the same reservation and never takes stock twice.
    pub reservation_id: String,
}

impl ActiveModelBehavior for ActiveModel {}
