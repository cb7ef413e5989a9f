//! Accounts that must exist before auth reports SERVING: the first admin and one account
//! per service identity.

use chrono::Utc;
use rand::RngCore;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection};
use stockmesh::authn::Role;
use stockmesh::identity::{self, SERVICE_ACCOUNTS};
use stockmesh::{Config, Target};

use crate::accounts::{self, NewUser};
use crate::entity::user;
use crate::error::{Error, Result};
use crate::password;

/// Creates an admin when the database has none: `config.auth.admin_email` with
/// `admin_password`, or a random password printed once to stdout. An existing non-admin
/// account with that email is promoted and given that password, since the operator
/// explicitly named it as the admin.
pub async fn ensure_admin(db: &DatabaseConnection, config: &Config) -> Result<()> {
    if accounts::count_admins(db).await? > 0 {
        return Ok(());
    }
    let email = crate::validate::email(&config.auth.admin_email)
        .map_err(|e| Error::Config(format!("STOCKMESH_ADMIN_EMAIL is not usable: {e}")))?;
    let (password, generated) = match config.auth.admin_password.as_deref() {
        Some(p) if !p.is_empty() => (p.to_string(), false),
        _ => (random_password(), true),
    };
    let password_hash = password::hash(password.clone()).await?;
    match accounts::by_email(db, &email).await? {
        Some(existing) => {
            let mut active: user::ActiveModel = existing.into();
            active.role = Set(Role::Admin.as_str_name().to_string());
            active.password_hash = Set(password_hash);
            active.updated_at = Set(Utc::now());
            active.update(db).await?;
            tracing::warn!(%email, "no admin existed: promoted the existing account to ROLE_ADMIN and reset its password");
        }
        None => {
            let created = accounts::insert(
                db,
                NewUser {
                    email: email.clone(),
                    display_name: "Administrator".into(),
                    role: Role::Admin,
                    password_hash,
                },
            )
            .await;
            match created {
                Ok(_) => tracing::info!(%email, "created the bootstrap admin"),
                // Another replica created it at the same moment: its password stands.
                Err(Error::EmailTaken) if accounts::count_admins(db).await? > 0 => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    if generated {
        tracing::warn!(%email, "STOCKMESH_ADMIN_PASSWORD is unset: generated a random admin password (printed once on stdout)");
        println!();
        println!("==================================================================");
        println!("  stockmesh admin account created");
        println!("    email:    {email}");
        println!("    password: {password}");
        println!("  This password is shown only once. Set STOCKMESH_ADMIN_PASSWORD");
        println!("  before the first start to choose it yourself.");
        println!("==================================================================");
        println!();
    }
    Ok(())
}

/// Stored instead of a password hash for service accounts: not a PHC string, so no
/// password ever verifies against it. Services prove themselves with IssueServiceToken.
pub const NO_PASSWORD: &str = "!service-identity";

/// Makes sure every service identity has an account with role SERVICE and no usable
/// password (services sign in with [`crate::service_tokens`]). Also refuses to start
/// without a usable service secret.
pub async fn ensure_service_accounts(db: &DatabaseConnection, config: &Config) -> Result<()> {
    identity::resolve_secret(config)
        .map_err(|e| Error::Config(format!("cannot read the service secret: {e}")))?;
    for target in SERVICE_ACCOUNTS {
        ensure_service_account(db, target).await?;
    }
    Ok(())
}

async fn ensure_service_account(db: &DatabaseConnection, target: Target) -> Result<()> {
    let email = identity::service_email(target);
    match accounts::by_email(db, &email).await? {
        Some(row)
            if row.role == Role::Service.as_str_name() && row.password_hash == NO_PASSWORD => {}
        Some(row) => {
            let mut active: user::ActiveModel = row.into();
            active.role = Set(Role::Service.as_str_name().to_string());
            active.password_hash = Set(NO_PASSWORD.to_string());
            active.updated_at = Set(Utc::now());
            active.update(db).await?;
            tracing::info!(service = %target, "updated the service account (role, or password sign-in removed)");
        }
        None => {
            let created = accounts::insert(
                db,
                NewUser {
                    email,
                    display_name: format!("{target} service"),
                    role: Role::Service,
                    password_hash: NO_PASSWORD.to_string(),
                },
            )
            .await;
            match created {
                Ok(_) => tracing::info!(service = %target, "created the service account"),
                // A replica sharing the database created it concurrently.
                Err(Error::EmailTaken) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// 24 random bytes as base64url: 32 characters, 192 bits.
fn random_password() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
