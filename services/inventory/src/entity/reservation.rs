//! `reservations`: units of one product held in one warehouse, keyed by the caller's
//! `reservation_id`. Status moves RESERVED → COMMITTED | RELEASED | EXPIRED exactly once;
//! every transition is a conditional UPDATE on `status = 'RESERVED'`.
//!
//! A *tombstone* is a row that never held anything: RELEASED, quantity 0, no product and
//! no warehouse. ReleaseReservation writes one for an id it has never seen, so that a
//! Reserve with that id arriving later finds it and reserves nothing (see
//! [`crate::reservations`]).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reservations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub reservation_id: String,
    /// `None` only on a tombstone.
    pub product_id: Option<String>,
    /// `None` only on a tombstone.
    pub warehouse_id: Option<String>,
    pub quantity: i64,
    pub status: Status,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Reservation status as stored (text, checked by the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum Status {
    #[sea_orm(string_value = "RESERVED")]
    Reserved,
    #[sea_orm(string_value = "COMMITTED")]
    Committed,
    #[sea_orm(string_value = "RELEASED")]
    Released,
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
}

impl Model {
    /// Whether this row is a tombstone (released before any Reserve with its id).
    pub fn is_tombstone(&self) -> bool {
        self.product_id.is_none()
    }
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Reserved => "RESERVED",
            Status::Committed => "COMMITTED",
            Status::Released => "RELEASED",
            Status::Expired => "EXPIRED",
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
