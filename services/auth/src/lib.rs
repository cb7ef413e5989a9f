//! # stockmesh auth service
//!
//! Owns user accounts and credentials, and is the only issuer of access tokens in the
//! mesh:
//!
//! * passwords are stored as Argon2id hashes only ([`password`]);
//! * access tokens are short-lived Ed25519-signed JWTs whose keys live in the auth
//!   database and are published through `GetJwks`, so every other service verifies
//!   tokens locally ([`keys`]);
//! * refresh tokens are opaque, stored hashed, rotated on every use, and reuse of a rotated
//!   token revokes the whole session ([`sessions`]);
//! * login attempts are throttled per (email, client) and per email, in bounded memory
//!   ([`throttle`]);
//! * the mesh's services get their tokens from [`service_tokens`] (an HMAC proof of the
//!   shared secret), never through Login, so they cannot be locked out from the edge;
//! * at start the first admin and the service identities' accounts are made to exist
//!   ([`bootstrap`]).
//!
//! Layout: [`api`] holds the thin gRPC handlers, [`service`] the domain operations they
//! call, [`accounts`] the user table, [`entity`] and [`migration`] the schema.
#![forbid(unsafe_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use stockmesh::proto::auth::v1::auth_service_server::AuthServiceServer;
use stockmesh::server::GrpcServer;
use stockmesh::{Config, Shutdown, Target};
use tokio::net::TcpListener;

pub mod accounts;
pub mod api;
pub mod bootstrap;
pub mod entity;
pub mod error;
pub mod keys;
pub mod migration;
pub mod password;
pub mod service;
pub mod service_tokens;
pub mod sessions;
pub mod throttle;
pub mod validate;

pub use error::Error;
pub use migration::Migrator;

/// How often expired refresh tokens are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Runs the auth gRPC server on `listener` until `shutdown`.
///
/// The server accepts connections at once and answers health NOT_SERVING (and every
/// AuthService call UNAVAILABLE) while migrations, signing keys and the bootstrap accounts
/// are prepared; then it reports SERVING.
pub async fn serve(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> stockmesh::Result<()> {
    let (server, health) = GrpcServer::new(Target::Auth.grpc_service()).await;
    let ready: api::Ready = Arc::new(OnceLock::new());
    let serving = server
        .max_message_bytes(config.max_message_bytes)
        .add_service(
            AuthServiceServer::new(api::AuthApi::new(ready.clone()))
                .max_decoding_message_size(config.max_message_bytes),
        )
        .serve(listener, shutdown.clone(), config.drain());
    tokio::pin!(serving);

    let startup = async {
        let url = config.database_url(Target::Auth);
        let db = stockmesh::db::connect_and_migrate::<Migrator>(&url).await?;
        let auth = service::Auth::start(db, &config).await?;
        Ok::<_, stockmesh::Error>(auth)
    };
    tokio::select! {
        // Shutdown (or a server failure) before start-up finished.
        res = &mut serving => return res,
        res = startup => {
            let auth = Arc::new(res?);
            let db = auth.db().clone();
            // Cannot be set already: this is the only place that sets it.
            let _ = ready.set(auth.clone());
            spawn_sweeper(db.clone(), shutdown.clone());
            spawn_throttle_pruner(auth.clone(), shutdown.clone());
            health.set_serving().await;
            health.watch_database(db, shutdown.clone());
            tracing::info!("auth ready");
        }
    }
    serving.await
}

/// Applies the auth database migrations and returns.
pub async fn migrate(config: &Config) -> stockmesh::Result<()> {
    let db =
        stockmesh::db::connect_and_migrate::<Migrator>(&config.database_url(Target::Auth)).await?;
    db.close().await?;
    Ok(())
}

/// How often the login throttle forgets entries that hold nothing back.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

fn spawn_throttle_pruner(auth: Arc<service::Auth>, shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(PRUNE_EVERY) => {}
            }
            auth.prune_throttle();
        }
    });
}

/// Deletes expired refresh tokens every [`SWEEP_EVERY`] until `shutdown`.
fn spawn_sweeper(db: sea_orm::DatabaseConnection, shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            match sessions::delete_expired(&db, chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "deleted expired refresh tokens"),
                Err(e) => tracing::warn!(error = %e, "cannot delete expired refresh tokens"),
            }
        }
    });
}
