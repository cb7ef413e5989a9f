//! Schema of the auth database, applied at start by `serve` and by `stockmesh migrate auth`.

use sea_orm_migration::prelude::*;

mod m20250101_000001_init;

/// Every auth migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20250101_000001_init::Migration)]
    }
}
