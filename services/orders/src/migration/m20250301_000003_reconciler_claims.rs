//! The reconciler's claims: the `orders.claimed_until` lease, and indexes its walks use.
//!
//! With several orders replicas, each replica's reconciler claims the rows it is about to
//! work on by setting `claimed_until` to a moment shortly ahead, in the same statement
//! that picks them (`… FOR UPDATE SKIP LOCKED` on PostgreSQL); another replica only picks
//! rows whose claim is absent or over, so no row is worked on by two replicas at once,
//! and the rows of a replica that died are picked up again once its claims lapse. After
//! working on a row that did not reach an end state, the reconciler sets the column to
//! when the row may be looked at again (its next round). NULL: never claimed. Nothing
//! else reads or writes the column: the saga, CompleteOrder and CancelOrder keep
//! arbitrating with conditional status transitions, as before.
//!
//! A round walks the due rows in batches, by (`updated_at`, `id`) for unfinished orders
//! and by (`created_at`, `id`) for the expiry check, each batch starting after the last
//! row of the one before. The two status indexes gain `id` as their last column so that
//! each batch starts where the previous one ended (a range scan) instead of scanning past
//! every row already walked, which made a round quadratic in the number of due rows when
//! many share a timestamp. They replace `ix_orders_status_updated` and
//! `ix_orders_status_created`, which they cover.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    Status,
    CreatedAt,
    UpdatedAt,
    ClaimedUntil,
}

/// (new index, old index it replaces, its key column).
const WALKS: [(&str, &str, Orders); 2] = [
    (
        "ix_orders_status_updated_id",
        "ix_orders_status_updated",
        Orders::UpdatedAt,
    ),
    (
        "ix_orders_status_created_id",
        "ix_orders_status_created",
        Orders::CreatedAt,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Orders::Table)
                    .add_column(
                        ColumnDef::new(Orders::ClaimedUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (new, old, key) in WALKS {
            manager
                .create_index(
                    Index::create()
                        .name(new)
                        .table(Orders::Table)
                        .col(Orders::Status)
                        .col(key)
                        .col(Orders::Id)
                        .to_owned(),
                )
                .await?;
            manager
                .drop_index(Index::drop().name(old).table(Orders::Table).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (new, old, key) in WALKS {
            manager
                .create_index(
                    Index::create()
                        .name(old)
                        .table(Orders::Table)
                        .col(Orders::Status)
                        .col(key)
                        .to_owned(),
                )
                .await?;
            manager
                .drop_index(Index::drop().name(new).table(Orders::Table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Orders::Table)
                    .drop_column(Orders::ClaimedUntil)
                    .to_owned(),
            )
            .await
    }
}
