//! Write transactions that behave the same on SQLite and PostgreSQL, and the clock.
//!
//! On SQLite every write transaction starts with `BEGIN IMMEDIATE`: it takes the write
//! lock up front (waiting up to the busy timeout) instead of starting as a reader and
//! failing with SQLITE_BUSY when it later tries to write after another writer committed.
//! That serialises inventory writes on SQLite, which is what makes a read-then-write
//! inside one transaction safe there. PostgreSQL ignores the mode; there, correctness
//! comes from conditional UPDATEs (re-evaluated after a row lock wait under READ
//! COMMITTED) and unique keys.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbErr, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

/// Begins a transaction that will write.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// Now, truncated to microseconds: PostgreSQL keeps microseconds, so a value read back
/// equals the value written on both backends.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
