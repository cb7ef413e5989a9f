//! `variables`: measurable quantities (temperature, humidity…) that inventory records
//! readings of.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "variables")]
pub struct Model {
    /// UUIDv7 text.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Unique (index `ux_variables_name`).
    pub name: String,
    /// Unit of measure, e.g. "°C"; empty for dimensionless quantities.
    pub unit: String,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
