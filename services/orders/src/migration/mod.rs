//! Schema migrations of the orders database, applied at start by
//! [`stockmesh::db::connect_and_migrate`] (and by `stockmesh migrate orders`).
//!
//! Migrations are append-only: a released migration is never edited, a change is a new
//! file.

use sea_orm_migration::prelude::*;

mod m20250101_000001_orders;
mod m20250201_000002_pending_expiry_index;
mod m20250301_000003_reconciler_claims;
mod m20251201_000004_customer_status_index;

/// All orders migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_orders::Migration),
            Box::new(m20250201_000002_pending_expiry_index::Migration),
            Box::new(m20250301_000003_reconciler_claims::Migration),
            Box::new(m20251201_000004_customer_status_index::Migration),
            // Last, as every publishing service's Migrator has it.
            Box::new(stockmesh::events::OutboxMigration),
        ]
    }
}
