//! Schema migrations of the inventory database, applied at start by `serve` and by
//! `stockmesh migrate`. Migrations are append-only: never edit one that has shipped.

use sea_orm_migration::prelude::*;

mod m20250101_000001_init;
mod m20250201_000002_reservation_tombstones;
mod m20260101_000003_stock_events;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_init::Migration),
            Box::new(m20250201_000002_reservation_tombstones::Migration),
            Box::new(m20260101_000003_stock_events::Migration),
            // Last, as every publishing service's Migrator has it.
            Box::new(stockmesh::events::OutboxMigration),
        ]
    }
}
