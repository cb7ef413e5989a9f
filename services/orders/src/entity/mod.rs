//! sea-orm entities of the orders database: one module per table, plus the stored order
//! [`Status`](order::Status) with the internal saga states clients never see.

pub mod order;
pub mod order_item;
