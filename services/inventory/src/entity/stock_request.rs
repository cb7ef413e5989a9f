//! `stock_requests`: every applied Restock and AdjustStock, keyed by the caller's
//! `request_id` (primary key, so unique). The row is written in the same transaction as
//! the stock change it records, which is what makes a replay move nothing: either both
//! exist or neither does. `result` keeps the response of the first call (JSON of
//! [`crate::stock::StockView`]) so a replay answers exactly what the first call answered.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stock_requests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    pub kind: RequestKind,
    pub product_id: String,
    pub warehouse_id: String,
    /// Restock: units added (> 0). Adjust: signed delta (≠ 0).
    pub quantity: i64,
    /// Adjust: why; Restock: empty.
    pub reason: String,
    /// JSON of the stock after this request was applied.
    pub result: String,
    pub created_at: DateTimeUtc,
}

/// Which operation a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum RequestKind {
    #[sea_orm(string_value = "RESTOCK")]
    Restock,
    #[sea_orm(string_value = "ADJUST")]
    Adjust,
}

impl RequestKind {
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Restock => "RESTOCK",
            RequestKind::Adjust => "ADJUST",
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
