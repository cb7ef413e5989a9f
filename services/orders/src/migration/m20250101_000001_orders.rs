//! Orders and their lines.
//!
//! `ux_orders_customer_request` on `(customer_id, request_id)` is what makes CreateOrder
//! idempotent: of two concurrent calls with the same key exactly one inserts the order
//! intent, the other meets the constraint and waits for the first one's outcome.
//! `ix_orders_status_updated` serves the reconciler's "unfinished and idle for a while"
//! scan; `ix_orders_customer_id` serves a customer's ListOrders.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, integer, string, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("orders")
                    .col(string("id").primary_key())
                    .col(string("customer_id"))
                    .col(string("request_id"))
                    .col(string("status"))
                    .col(
                        big_integer("total_cents")
                            .check(Expr::col("total_cents").gte(0))
                            .to_owned(),
                    )
                    .col(string("currency"))
                    .col(string("cancel_reason"))
                    .col(big_integer("version"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        for (name, columns, unique) in [
            (
                "ux_orders_customer_request",
                &["customer_id", "request_id"][..],
                true,
            ),
            (
                "ix_orders_status_updated",
                &["status", "updated_at"][..],
                false,
            ),
            ("ix_orders_customer_id", &["customer_id", "id"][..], false),
        ] {
            let mut index = Index::create();
            index.name(name).table("orders");
            for column in columns {
                index.col(*column);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table("order_items")
                    .col(string("order_id"))
                    .col(integer("line"))
                    .col(string("product_id"))
                    .col(string("product_name"))
                    .col(
                        big_integer("quantity")
                            .check(Expr::col("quantity").gt(0))
                            .to_owned(),
                    )
                    .col(
                        big_integer("unit_price_cents")
                            .check(Expr::col("unit_price_cents").gte(0))
                            .to_owned(),
                    )
                    .col(string("warehouse_id"))
                    .col(string("reservation_id"))
                    .primary_key(Index::create().col("order_id").col("line"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_order_items_order_id")
                            .from("order_items", "order_id")
                            .to("orders", "id")
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["order_items", "orders"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
