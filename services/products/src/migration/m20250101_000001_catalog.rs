//! The catalog: suppliers, products, variables.
//!
//! Uniqueness (sku, product name, variable name) and "a product's supplier exists" are
//! constraints here, not only checks in code, so two concurrent writers cannot both win;
//! the domain turns the violations into ALREADY_EXISTS / FAILED_PRECONDITION. Unique
//! indexes are named `ux_<table>_<column>` because the domain recognises which one fired
//! by that name (PostgreSQL) or by `<table>.<column>` (SQLite).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, string, string_null, text, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("suppliers")
                    .col(string("id").primary_key())
                    .col(string("name"))
                    .col(string("contact_email"))
                    .col(string("phone"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("products")
                    .col(string("id").primary_key())
                    .col(string("sku"))
                    .col(string("name"))
                    .col(string("name_folded"))
                    .col(text("description"))
                    .col(
                        big_integer("price_cents")
                            .check(Expr::col("price_cents").gte(0))
                            .to_owned(),
                    )
                    .col(string("currency"))
                    .col(string_null("supplier_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_products_supplier_id")
                            .from("products", "supplier_id")
                            .to("suppliers", "id")
                            // NO ACTION, not RESTRICT: both refuse to orphan a product,
                            // but SQLite reports RESTRICT as a trigger error (extended code
                            // 1811) that is not recognisable as a foreign-key violation.
                            .on_delete(ForeignKeyAction::NoAction)
                            .on_update(ForeignKeyAction::NoAction),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column, unique) in [
            ("ux_products_sku", "sku", true),
            ("ux_products_name", "name", true),
            // ListProducts filtered by supplier, and the foreign-key check on supplier delete.
            ("ix_products_supplier_id", "supplier_id", false),
        ] {
            let mut index = Index::create();
            index.name(name).table("products").col(column);
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table("variables")
                    .col(string("id").primary_key())
                    .col(string("name"))
                    .col(string("unit"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_variables_name")
                    .table("variables")
                    .col("name")
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["variables", "products", "suppliers"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
