//! sea-orm entities of the inventory database, one module per table. The schema itself
//! (types, CHECK constraints, indexes) lives in [`crate::migration`]; these structs only
//! map rows.

pub mod measurement;
pub mod reservation;
pub mod stock;
pub mod stock_request;
pub mod stock_threshold;
pub mod warehouse;
