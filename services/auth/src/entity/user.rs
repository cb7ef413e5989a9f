//! An account: a person (customer, operator, admin) or a service identity.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// UUIDv7 text.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Normalised (trimmed, lower-case); unique.
    #[sea_orm(unique)]
    pub email: String,
    pub display_name: String,
    /// Proto enum name, e.g. `ROLE_ADMIN`, so the table reads well and survives enum
    /// renumbering.
    pub role: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
