//! What the stock events need: a per-row change counter and per-product low-stock
//! thresholds.
//!
//! * `stock.version`: bumped by every change of the row (and written into its
//!   `StockChanged` event), so that a watcher holding the row as of version n ignores an
//!   event of version n or less. Events are delivered at least once and an event committed
//!   before a watcher's snapshot may arrive after it; without a counter such an event
//!   would move the watcher's numbers backwards. Existing rows start at 0.
//! * `stock_thresholds(product_id, threshold, updated_at)`: SetLowStockThreshold's
//!   per-product threshold (>= 0, 0 = never low); products without a row use
//!   `STOCKMESH_LOW_STOCK_THRESHOLD`. Keyed by product only: no foreign key, products
//!   live in another service (the RPC checks the product exists, as Restock does).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Stock {
    Table,
    Version,
}

#[derive(DeriveIden)]
enum StockThresholds {
    Table,
    ProductId,
    Threshold,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Stock::Table)
                    .add_column(
                        ColumnDef::new(Stock::Version)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(StockThresholds::Table)
                    .col(
                        ColumnDef::new(StockThresholds::ProductId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(StockThresholds::Threshold)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StockThresholds::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .check((
                        "stock_thresholds_not_negative",
                        Expr::col(StockThresholds::Threshold).gte(0),
                    ))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StockThresholds::Table).take())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Stock::Table)
                    .drop_column(Stock::Version)
                    .take(),
            )
            .await
    }
}
