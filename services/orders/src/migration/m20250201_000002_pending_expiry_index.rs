//! `ix_orders_status_created` on `(status, created_at)`: the reconciler's expiry check
//! looks for PENDING orders created more than the reservation TTL ago, oldest first, every
//! round; without the index that is a scan of every order.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "ix_orders_status_created";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table("orders")
                    .col("status")
                    .col("created_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table("orders").to_owned())
            .await
    }
}
