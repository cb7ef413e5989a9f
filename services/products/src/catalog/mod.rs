//! The catalog domain: products, suppliers and variables, independent of gRPC.
//!
//! [`Catalog`] validates and normalises input (see [`validate`]), reads and writes the
//! database, and reports failures as [`crate::error::Error`]. It never checks who is
//! calling: authorisation is the handlers' job ([`crate::api`]), so the rules of the
//! catalog can be read here without the rules of access mixed in.
//!
//! Invariants that concurrent writers could race on (unique sku/name, existing supplier,
//! supplier not in use) are enforced by database constraints; the code here checks them
//! first only to give better messages, and translates the constraint violations it may
//! still meet into the same errors.

pub mod cache;
mod products;
mod suppliers;
pub mod validate;
mod variables;

use std::sync::Arc;

use cache::ProductCache;
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{DatabaseConnection, DbErr, SqlErr};

pub use products::{BATCH_GET_MAX, NewProduct, ProductFilter, ProductPatch};
pub use suppliers::{NewSupplier, SUPPLIERS_FINGERPRINT, SupplierPatch};
pub use variables::{NewVariable, VARIABLES_FINGERPRINT};

/// The catalog, backed by the products database (and a short-lived cache of products
/// by id, see [`cache`]). Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    db: DatabaseConnection,
    cache: Arc<ProductCache>,
}

impl Catalog {
    pub fn new(db: DatabaseConnection, cache: ProductCache) -> Self {
        Self {
            db,
            cache: Arc::new(cache),
        }
    }
}

/// Now, at the precision every backend stores (PostgreSQL keeps microseconds), so a value
/// returned by a write equals the value a later read returns.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A new resource id: UUIDv7, so ids sort by creation time and keyset pages follow it.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Which of `columns` of `table` a unique-constraint violation is about, recognised by the
/// index name `ux_<table>_<column>` (PostgreSQL) or `<table>.<column>` (SQLite).
fn unique_violation(err: &DbErr, table: &str, columns: &[&'static str]) -> Option<&'static str> {
    let Some(SqlErr::UniqueConstraintViolation(msg)) = err.sql_err() else {
        return None;
    };
    columns.iter().copied().find(|column| {
        msg.contains(&format!("ux_{table}_{column}")) || msg.contains(&format!("{table}.{column}"))
    })
}
