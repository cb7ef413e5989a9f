//! `ix_orders_customer_status` on `(customer_id, status)`: every CreateOrder counts the
//! customer's open orders (twice: early, and inside the insert's transaction). With only
//! `(customer_id, id)` that walks every order the customer ever placed and reads each
//! row's status; with this index it reads the open ones only (and the count stops at the
//! cap, see `store::open_orders`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "ix_orders_customer_status";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table("orders")
                    .col("customer_id")
                    .col("status")
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
