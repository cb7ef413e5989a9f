//! User accounts: creation, lookup, listing and role changes.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use stockmesh::authn::Role;
use stockmesh::pagination::Page;

use crate::entity::user;
use crate::error::{Error, Result};
use crate::password;

/// A validated new account.
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub password_hash: String,
}

/// Inserts a user; ALREADY_EXISTS comes from the unique index on email, so two concurrent
/// registrations of one address cannot both win.
pub async fn insert(db: &impl ConnectionTrait, new: NewUser) -> Result<user::Model> {
    let now = Utc::now();
    user::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        email: Set(new.email),
        display_name: Set(new.display_name),
        role: Set(new.role.as_str_name().to_string()),
        password_hash: Set(new.password_hash),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .map_err(|e| {
        if stockmesh::error::is_unique_violation(&e) {
            Error::EmailTaken
        } else {
            Error::Db(e)
        }
    })
}

/// Validates and creates an account (hashing off the runtime).
pub async fn create(
    db: &DatabaseConnection,
    email: &str,
    password: &str,
    display_name: &str,
    role: Role,
) -> Result<user::Model> {
    let email = crate::validate::personal_email(email)?;
    crate::validate::new_password(password)?;
    let display_name = crate::validate::display_name(display_name)?;
    if role == Role::Unspecified {
        return Err(Error::invalid("role", "must be set"));
    }
    // Cheap pre-check so a duplicate does not cost a hash; the unique index decides.
    if by_email(db, &email).await?.is_some() {
        return Err(Error::EmailTaken);
    }
    let password_hash = password::hash(password.to_string()).await?;
    insert(
        db,
        NewUser {
            email,
            display_name,
            role,
            password_hash,
        },
    )
    .await
}

pub async fn by_email(db: &impl ConnectionTrait, email: &str) -> Result<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(db)
        .await?)
}

pub async fn by_id(db: &impl ConnectionTrait, id: &str) -> Result<user::Model> {
    if id.is_empty() {
        return Err(Error::invalid("id", "is required"));
    }
    user::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
        .ok_or_else(|| Error::UserNotFound(id.to_string()))
}

/// One page of users in id (creation) order, and the next page token.
pub async fn list(db: &DatabaseConnection, page: &Page) -> Result<(Vec<user::Model>, String)> {
    let mut query = user::Entity::find().order_by_asc(user::Column::Id);
    if let Some(after) = &page.after {
        query = query.filter(user::Column::Id.gt(after.as_str()));
    }
    let mut rows = query.limit(page.fetch_limit()).all(db).await?;
    let next = page.finish(&mut rows, |u| &u.id);
    Ok((rows, next))
}

pub async fn count_admins(db: &impl ConnectionTrait) -> Result<u64> {
    Ok(user::Entity::find()
        .filter(user::Column::Role.eq(Role::Admin.as_str_name()))
        .count(db)
        .await?)
}

/// Changes a user's role. Demoting the last admin is refused: nobody could manage users
/// afterwards. On PostgreSQL the admin rows are locked first, so two concurrent
/// demotions of the last two admins cannot both pass the check; SQLite serialises
/// writers on its own.
pub async fn set_role(db: &DatabaseConnection, id: &str, role: Role) -> Result<user::Model> {
    if id.is_empty() {
        return Err(Error::invalid("id", "is required"));
    }
    if role == Role::Unspecified {
        return Err(Error::invalid("role", "must be set"));
    }
    let txn = db.begin().await?;
    if stockmesh::db::is_sqlite(&txn) {
        // A write first, so SQLite takes its write lock before reading (a read-then-write
        // transaction would fail on a stale snapshot instead of waiting).
        user::Entity::update_many()
            .col_expr(user::Column::UpdatedAt, Expr::col(user::Column::UpdatedAt))
            .filter(user::Column::Id.eq(id))
            .exec(&txn)
            .await?;
    }
    // PostgreSQL: the admin rows are locked before any other row and in id order, so two
    // concurrent demotions queue on the same first lock instead of deadlocking.
    let admins = user::Entity::find()
        .filter(user::Column::Role.eq(Role::Admin.as_str_name()))
        .order_by_asc(user::Column::Id)
        .lock_exclusive()
        .all(&txn)
        .await?;
    let target = by_id(&txn, id).await?;
    if target.role == role.as_str_name() {
        return Ok(target);
    }
    if target.role == Role::Admin.as_str_name() && admins.len() <= 1 {
        return Err(Error::LastAdmin);
    }
    let mut active: user::ActiveModel = target.into();
    active.role = Set(role.as_str_name().to_string());
    active.updated_at = Set(Utc::now());
    let updated = active.update(&txn).await?;
    txn.commit().await?;
    Ok(updated)
}

/// The stored role of `user`; an unreadable value counts as unspecified (no rights).
pub fn role_of(user: &user::Model) -> Role {
    Role::from_str_name(&user.role).unwrap_or(Role::Unspecified)
}

/// The proto view of a user (never the password hash).
pub fn to_proto(user: &user::Model) -> stockmesh::proto::auth::v1::User {
    stockmesh::proto::auth::v1::User {
        id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        role: role_of(user) as i32,
        created_at: Some(stockmesh::proto::timestamp(user.created_at)),
        updated_at: Some(stockmesh::proto::timestamp(user.updated_at)),
    }
}
