//! The initial schema. The stock invariant `on_hand >= reserved >= 0`, the coordinate
//! ranges and the reservation states are CHECK constraints, so the database refuses a
//! bad row even if the code had a bug; the code checks the same rules first to answer
//! with a precise error.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Warehouses {
    Table,
    Id,
    Name,
    Address,
    Latitude,
    Longitude,
    Capacity,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Stock {
    Table,
    ProductId,
    WarehouseId,
    OnHand,
    Reserved,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum StockRequests {
    Table,
    RequestId,
    Kind,
    ProductId,
    WarehouseId,
    Quantity,
    Reason,
    Result,
    CreatedAt,
}

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
enum Measurements {
    Table,
    Id,
    VariableId,
    WarehouseId,
    ProductId,
    Value,
    MeasuredAt,
    CreatedAt,
}

fn text<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).text().not_null().take()
}

fn big<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().take()
}

fn double<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).double().not_null().take()
}

fn at<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .take()
}

fn to_warehouse<T: IntoIden + 'static>(
    name: &str,
    table: T,
    col: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, col)
        .to(Warehouses::Table, Warehouses::Id)
        .on_delete(ForeignKeyAction::Restrict)
        .on_update(ForeignKeyAction::Restrict)
        .take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Warehouses::Table)
                    .col(text(Warehouses::Id).primary_key())
                    .col(text(Warehouses::Name).unique_key())
                    .col(text(Warehouses::Address))
                    .col(double(Warehouses::Latitude))
                    .col(double(Warehouses::Longitude))
                    .col(big(Warehouses::Capacity))
                    .col(at(Warehouses::CreatedAt))
                    .col(at(Warehouses::UpdatedAt))
                    .check((
                        "warehouses_name_not_empty",
                        Expr::col(Warehouses::Name).ne(""),
                    ))
                    .check((
                        "warehouses_latitude_range",
                        Expr::col(Warehouses::Latitude).between(-90.0, 90.0),
                    ))
                    .check((
                        "warehouses_longitude_range",
                        Expr::col(Warehouses::Longitude).between(-180.0, 180.0),
                    ))
                    .check((
                        "warehouses_capacity_not_negative",
                        Expr::col(Warehouses::Capacity).gte(0),
                    ))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Stock::Table)
                    .col(text(Stock::ProductId))
                    .col(text(Stock::WarehouseId))
                    .col(big(Stock::OnHand))
                    .col(big(Stock::Reserved))
                    .col(at(Stock::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .name("stock_pkey")
                            .col(Stock::ProductId)
                            .col(Stock::WarehouseId),
                    )
                    .foreign_key(&mut to_warehouse(
                        "stock_warehouse_fk",
                        Stock::Table,
                        Stock::WarehouseId,
                    ))
                    .check((
                        "stock_reserved_not_negative",
                        Expr::col(Stock::Reserved).gte(0),
                    ))
                    .check((
                        "stock_on_hand_covers_reserved",
                        Expr::col(Stock::OnHand).gte(Expr::col(Stock::Reserved)),
                    ))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(StockRequests::Table)
                    .col(text(StockRequests::RequestId).primary_key())
                    .col(text(StockRequests::Kind))
                    .col(text(StockRequests::ProductId))
                    .col(text(StockRequests::WarehouseId))
                    .col(big(StockRequests::Quantity))
                    .col(text(StockRequests::Reason))
                    .col(text(StockRequests::Result))
                    .col(at(StockRequests::CreatedAt))
                    .foreign_key(&mut to_warehouse(
                        "stock_requests_warehouse_fk",
                        StockRequests::Table,
                        StockRequests::WarehouseId,
                    ))
                    .check((
                        "stock_requests_kind",
                        Expr::col(StockRequests::Kind).is_in(["RESTOCK", "ADJUST"]),
                    ))
                    .check((
                        "stock_requests_quantity_not_zero",
                        Expr::col(StockRequests::Quantity).ne(0),
                    ))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Reservations::Table)
                    .col(text(Reservations::ReservationId).primary_key())
                    .col(text(Reservations::ProductId))
                    .col(text(Reservations::WarehouseId))
                    .col(big(Reservations::Quantity))
                    .col(text(Reservations::Status))
                    .col(at(Reservations::ExpiresAt))
                    .col(at(Reservations::CreatedAt))
                    .col(at(Reservations::UpdatedAt))
                    .foreign_key(&mut to_warehouse(
                        "reservations_warehouse_fk",
                        Reservations::Table,
                        Reservations::WarehouseId,
                    ))
                    .check((
                        "reservations_quantity_positive",
                        Expr::col(Reservations::Quantity).gt(0),
                    ))
                    .check((
                        "reservations_status",
                        Expr::col(Reservations::Status).is_in([
                            "RESERVED",
                            "COMMITTED",
                            "RELEASED",
                            "EXPIRED",
                        ]),
                    ))
                    .take(),
            )
            .await?;
        // The sweeper looks for RESERVED rows past their expiry.
        manager
            .create_index(
                Index::create()
                    .name("reservations_status_expires_at")
                    .table(Reservations::Table)
                    .col(Reservations::Status)
                    .col(Reservations::ExpiresAt)
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Measurements::Table)
                    .col(text(Measurements::Id).primary_key())
                    .col(text(Measurements::VariableId))
                    .col(text(Measurements::WarehouseId))
                    .col(ColumnDef::new(Measurements::ProductId).text().null())
                    .col(double(Measurements::Value))
                    .col(at(Measurements::MeasuredAt))
                    .col(at(Measurements::CreatedAt))
                    .foreign_key(&mut to_warehouse(
                        "measurements_warehouse_fk",
                        Measurements::Table,
                        Measurements::WarehouseId,
                    ))
                    .take(),
            )
            .await?;
        for (name, col) in [
            ("measurements_variable_id", Measurements::VariableId),
            ("measurements_warehouse_id", Measurements::WarehouseId),
            ("measurements_product_id", Measurements::ProductId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Measurements::Table)
                        .col(col)
                        .take(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Measurements::Table.into_iden(),
            Reservations::Table.into_iden(),
            StockRequests::Table.into_iden(),
            Stock::Table.into_iden(),
            Warehouses::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).take())
                .await?;
        }
        Ok(())
    }
}
