//! sea-orm entities of the products database: one module per table.
//!
//! Rows are plain data; everything a row must satisfy beyond column types (unique sku and
//! name, non-negative price, existing supplier) is enforced by the schema in
//! [`crate::migration`] and checked with friendly messages in the domain modules.

pub mod product;
pub mod supplier;
pub mod variable;
