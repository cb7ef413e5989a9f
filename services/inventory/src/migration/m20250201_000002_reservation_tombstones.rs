//! Reservation tombstones: a ReleaseReservation of an id inventory has never seen records
//! a RELEASED row holding nothing (quantity 0, no product, no warehouse), so that a
//! Reserve with that id arriving later (a caller's Reserve that timed out but landed after
//! its compensating Release) finds the row and reserves nothing.
//!
//! The initial schema required a product, a warehouse and a positive quantity on every
//! row. This migration makes `product_id` and `warehouse_id` nullable and replaces
//! `reservations_quantity_positive` with `reservations_holds_or_tombstone`: a row either
//! holds units (quantity > 0, product and warehouse known) or is a tombstone (RELEASED,
//! quantity 0, product and warehouse NULL). Nothing else changes.
//!
//! PostgreSQL alters the table in place. SQLite cannot drop a constraint or a NOT NULL,
//! so there the table is rebuilt (create, copy, drop, rename, re-index), the documented
//! SQLite procedure; the whole migration runs in one transaction on both backends.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Reservations {
    Table,
    ReservationId,
    ProductId,
    WarehouseId,
    Quantity,
    Status,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Warehouses {
    Table,
    Id,
}

/// Name of the SQLite table being built while the old one still exists.
const REBUILT: &str = "reservations_rebuilt";
const STATUS_INDEX: &str = "reservations_status_expires_at";

/// The rule every row obeys after this migration: it holds units, or it is a tombstone.
const HOLDS_OR_TOMBSTONE: &str = "(quantity > 0 AND product_id IS NOT NULL AND warehouse_id IS NOT NULL) \
     OR (status = 'RELEASED' AND quantity = 0 AND product_id IS NULL AND warehouse_id IS NULL)";

fn status_check() -> SimpleExpr {
    Expr::col(Reservations::Status).is_in(["RESERVED", "COMMITTED", "RELEASED", "EXPIRED"])
}

fn quantity_positive() -> SimpleExpr {
    Expr::col(Reservations::Quantity).gt(0)
}

/// The reservations table as it is after this migration (`tombstones`) or before it, under
/// `name`; for the SQLite rebuild.
fn table(name: &str, tombstones: bool) -> TableCreateStatement {
    let text = |col: Reservations| {
        let mut def = ColumnDef::new(col);
        def.text();
        if tombstones {
            def.null();
        } else {
            def.not_null();
        }
        def
    };
    let at = |col: Reservations| {
        ColumnDef::new(col)
            .timestamp_with_time_zone()
            .not_null()
            .take()
    };
    let mut create = Table::create();
    create
        .table(Alias::new(name))
        .col(
            ColumnDef::new(Reservations::ReservationId)
                .text()
                .not_null()
                .primary_key(),
        )
        .col(text(Reservations::ProductId))
        .col(text(Reservations::WarehouseId))
        .col(
            ColumnDef::new(Reservations::Quantity)
                .big_integer()
                .not_null(),
        )
        .col(ColumnDef::new(Reservations::Status).text().not_null())
        .col(at(Reservations::ExpiresAt))
        .col(at(Reservations::CreatedAt))
        .col(at(Reservations::UpdatedAt))
        .foreign_key(
            ForeignKey::create()
                .name("reservations_warehouse_fk")
                .from(Alias::new(name), Reservations::WarehouseId)
                .to(Warehouses::Table, Warehouses::Id)
                .on_delete(ForeignKeyAction::Restrict)
                .on_update(ForeignKeyAction::Restrict),
        )
        .check(("reservations_status", status_check()));
    if tombstones {
        create.check((
            "reservations_holds_or_tombstone",
            Expr::cust(HOLDS_OR_TOMBSTONE),
        ));
    } else {
        create.check(("reservations_quantity_positive", quantity_positive()));
    }
    create
}

/// SQLite: replaces the reservations table by one of the given shape, keeping the rows
/// (`keep` filters them, for the way down).
async fn rebuild_sqlite(
    manager: &SchemaManager<'_>,
    tombstones: bool,
    keep: &str,
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    manager.create_table(table(REBUILT, tombstones)).await?;
    db.execute_unprepared(&format!(
        "INSERT INTO {REBUILT} (reservation_id, product_id, warehouse_id, quantity, status, \
         expires_at, created_at, updated_at) \
         SELECT reservation_id, product_id, warehouse_id, quantity, status, expires_at, \
         created_at, updated_at FROM reservations WHERE {keep}"
    ))
    .await?;
    // Dropping the table drops its index too; nothing references reservations.
    db.execute_unprepared("DROP TABLE reservations").await?;
    db.execute_unprepared(&format!("ALTER TABLE {REBUILT} RENAME TO reservations"))
        .await?;
    status_index(manager).await
}

async fn status_index(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    // The sweeper looks for RESERVED rows past their expiry.
    manager
        .create_index(
            Index::create()
                .name(STATUS_INDEX)
                .table(Reservations::Table)
                .col(Reservations::Status)
                .col(Reservations::ExpiresAt)
                .take(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// The SQLite rebuild must not be left half done.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => rebuild_sqlite(manager, true, "1 = 1").await,
            _ => {
                let db = manager.get_connection();
                for sql in [
                    "ALTER TABLE reservations DROP CONSTRAINT reservations_quantity_positive",
                    "ALTER TABLE reservations ALTER COLUMN product_id DROP NOT NULL",
                    "ALTER TABLE reservations ALTER COLUMN warehouse_id DROP NOT NULL",
                ] {
                    db.execute_unprepared(sql).await?;
                }
                db.execute_unprepared(&format!(
                    "ALTER TABLE reservations ADD CONSTRAINT reservations_holds_or_tombstone \
                     CHECK ({HOLDS_OR_TOMBSTONE})"
                ))
                .await?;
                Ok(())
            }
        }
    }

    /// Back to the initial shape: tombstones (which that schema cannot hold) are deleted.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => rebuild_sqlite(manager, false, "quantity > 0").await,
            _ => {
                let db = manager.get_connection();
                for sql in [
                    "DELETE FROM reservations WHERE quantity = 0",
                    "ALTER TABLE reservations DROP CONSTRAINT reservations_holds_or_tombstone",
                    "ALTER TABLE reservations ALTER COLUMN product_id SET NOT NULL",
                    "ALTER TABLE reservations ALTER COLUMN warehouse_id SET NOT NULL",
                    "ALTER TABLE reservations ADD CONSTRAINT reservations_quantity_positive \
                     CHECK (quantity > 0)",
                ] {
                    db.execute_unprepared(sql).await?;
                }
                Ok(())
            }
        }
    }
}
