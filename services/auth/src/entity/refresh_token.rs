//! A refresh token, stored only as its SHA-256 hash. Tokens rotated from one login share a
//! `family_id`, so reuse of a rotated token can revoke the whole session.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Hex SHA-256 of the opaque token; unique.
    #[sea_orm(unique)]
    pub token_hash: String,
    /// Id shared by every token rotated from one login.
    pub family_id: String,
    pub user_id: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// Set when Refresh rotated this token into a new one.
    pub used_at: Option<DateTimeUtc>,
    /// Set by Logout or by reuse detection.
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
