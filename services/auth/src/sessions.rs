//! Refresh tokens: opaque, single use, stored only as SHA-256 hashes.
//!
//! A login starts a *family*; each Refresh marks the presented token used and issues the
//! next one in the same family. Presenting a token that was already used means a copy
//! exists somewhere else (theft, or a replay), so the whole family is revoked and both
//! holders must sign in again (OAuth 2.0 Security BCP, refresh token rotation).
//!
//! Claiming a token is one conditional UPDATE (`used_at IS NULL AND revoked_at IS NULL`)
//! issued as the first statement of the transaction: of two concurrent refreshes with the
//! same token exactly one claims it, and the other sees it used. Being the first statement
//! also makes SQLite take its write lock before reading, so the loser waits instead of
//! failing on a stale snapshot.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, QueryFilter, TransactionTrait,
};
use sha2::{Digest, Sha256};

use crate::entity::{refresh_token, user};
use crate::error::{Error, Result};

/// A fresh opaque token: 32 random bytes, base64url without padding.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for a token.
fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Stores a new token for `user_id` in `family_id` and returns it.
pub async fn issue(
    db: &impl ConnectionTrait,
    user_id: &str,
    family_id: &str,
    ttl: chrono::Duration,
) -> Result<String> {
    let token = new_token();
    let now = Utc::now();
    refresh_token::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        token_hash: Set(hash(&token)),
        family_id: Set(family_id.to_string()),
        user_id: Set(user_id.to_string()),
        created_at: Set(now),
        expires_at: Set(now + ttl),
        used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(token)
}

/// Starts a new family (a login) and returns its first token.
pub async fn start(
    db: &DatabaseConnection,
    user_id: &str,
    ttl: chrono::Duration,
) -> Result<String> {
    issue(db, user_id, &uuid::Uuid::now_v7().to_string(), ttl).await
}

/// Exchanges `token` for the next one in its family; returns the token's user and the
/// new token. A reused token revokes its family.
pub async fn rotate(
    db: &DatabaseConnection,
    token: &str,
    ttl: chrono::Duration,
) -> Result<(user::Model, String)> {
    if token.is_empty() {
        return Err(Error::invalid("refresh_token", "is required"));
    }
    let token_hash = hash(token);
    let now = Utc::now();
    let txn = db.begin().await?;
    let claimed = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
        .filter(refresh_token::Column::TokenHash.eq(&token_hash))
        .filter(refresh_token::Column::UsedAt.is_null())
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    let row = refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(&token_hash))
        .one(&txn)
        .await?
        .ok_or(Error::InvalidRefreshToken)?;
    if !claimed {
        if row.revoked_at.is_some() {
            return Err(Error::InvalidRefreshToken);
        }
        // Used before and not revoked: a second holder. End the session for both.
        let revoked = revoke_family(&txn, &row.family_id, now).await?;
        txn.commit().await?;
        tracing::warn!(
            user_id = %row.user_id,
            family_id = %row.family_id,
            revoked,
            "a rotated refresh token was reused; its session is revoked"
        );
        return Err(Error::RefreshTokenReused);
    }
    // Checked in Rust, not SQL: SQLite stores timestamps as text, which compares badly.
    if row.expires_at <= now {
        return Err(Error::InvalidRefreshToken);
    }
    let user = user::Entity::find_by_id(row.user_id.clone())
        .one(&txn)
        .await?
        .ok_or(Error::InvalidRefreshToken)?;
    let next = issue(&txn, &user.id, &row.family_id, ttl).await?;
    txn.commit().await?;
    Ok((user, next))
}

/// Revokes `token`'s whole family (the session it belongs to). Unknown and already
/// revoked tokens are fine: logging out twice is not an error.
pub async fn revoke(db: &DatabaseConnection, token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(Error::invalid("refresh_token", "is required"));
    }
    let family_of_token = Query::select()
        .column(refresh_token::Column::FamilyId)
        .from(refresh_token::Entity)
        .and_where(refresh_token::Column::TokenHash.eq(hash(token)))
        .to_owned();
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(refresh_token::Column::FamilyId.in_subquery(family_of_token))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

async fn revoke_family(
    db: &impl ConnectionTrait,
    family_id: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(now))
        .filter(refresh_token::Column::FamilyId.eq(family_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?
        .rows_affected)
}

/// Deletes tokens that expired before `cutoff`; they can never be used again and reuse
/// detection does not need them (an expired token is refused anyway).
pub async fn delete_expired(db: &DatabaseConnection, cutoff: DateTime<Utc>) -> Result<u64> {
    Ok(refresh_token::Entity::delete_many()
        .filter(refresh_token::Column::ExpiresAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token();
        assert_eq!(a.len(), 43, "32 bytes base64url without padding");
        assert_ne!(a, new_token());
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), a);
    }
}
