//! An Ed25519 key pair that signs access tokens. Kept in the database so restarts and
//! every replica sharing a PostgreSQL database sign and verify with the same keys.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    /// The JWT `kid` (UUIDv7 text, so keys sort by creation).
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    /// PKCS#8 DER of the private key, base64 (standard alphabet).
    pub private_key: String,
    /// Public key, base64url without padding (the JWK `x`).
    pub public_key: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
