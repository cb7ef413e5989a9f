//! # stockmesh products service
//!
//! Owns the catalog: products (unique sku and name, price in minor units and an ISO 4217
//! currency, optional supplier), suppliers, and the measurable variables inventory
//! records readings of. Implements `stockmesh.products.v1.ProductService` (see API.md
//! for who may call what).
//!
//! * [`api`]: thin gRPC handlers — authorise with tokens verified against auth's JWKS,
//!   then call the catalog.
//! * [`catalog`]: the domain — validation, database reads and writes, error translation.
//! * [`mask`]: `update_mask` handling for the Update RPCs.
//! * [`entity`] / [`migration`]: the sea-orm tables and their schema.
//! * [`error`]: the one error enum and its mapping to gRPC status codes.
//!
//! Choices worth knowing: a `supplier_id` that names no supplier is FAILED_PRECONDITION
//! (the request is well-formed; the catalog lacks the supplier — create it, then retry),
//! and so is deleting a supplier that products still reference. All lists are
//! keyset-paginated by id with tokens bound to their filters.
#![forbid(unsafe_code)]

use std::sync::{Arc, OnceLock};

use stockmesh::authn::{RemoteJwks, Verifier};
use stockmesh::proto::products::v1::product_service_server::ProductServiceServer;
use stockmesh::server::GrpcServer;
use stockmesh::{Config, Shutdown, Target};
use tokio::net::TcpListener;

pub mod api;
pub mod catalog;
pub mod entity;
pub mod error;
pub mod mask;
pub mod migration;

use migration::Migrator;

/// Runs the products gRPC server on `listener` until `shutdown`.
///
/// The server accepts connections at once and answers health NOT_SERVING (and every
/// ProductService call UNAVAILABLE) while migrations run; then it reports SERVING.
pub async fn serve(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> stockmesh::Result<()> {
    let (server, health) = GrpcServer::new(Target::Products.grpc_service()).await;
    // Keys are fetched lazily on the first token, so products starts even while auth is
    // still starting (or down: anonymous reads keep working).
    let verifier = Verifier::remote(RemoteJwks::new(stockmesh::client::upstream(
        &config,
        Target::Products,
        Target::Auth,
    )?));
    let ready: api::Ready = Arc::new(OnceLock::new());
    let serving = server
        .max_message_bytes(config.max_message_bytes)
        .add_service(
            ProductServiceServer::new(api::ProductApi::new(ready.clone(), verifier))
                .max_decoding_message_size(config.max_message_bytes),
        )
        .serve(listener, shutdown.clone(), config.drain());
    tokio::pin!(serving);

    let url = config.database_url(Target::Products);
    let startup = stockmesh::db::connect_and_migrate::<Migrator>(&url);
    tokio::select! {
        // Shutdown (or a server failure) before start-up finished.
        res = &mut serving => return res,
        res = startup => {
            let db = res?;
            // Cannot be set already: this is the only place that sets it.
            let _ = ready.set(catalog::Catalog::new(db.clone(), catalog::cache::ProductCache::from_env()));
            health.set_serving().await;
            health.watch_database(db, shutdown.clone());
            tracing::info!("products ready");
        }
    }
    serving.await
}

/// Applies the products database migrations and returns.
pub async fn migrate(config: &Config) -> stockmesh::Result<()> {
    let db = stockmesh::db::connect_and_migrate::<Migrator>(&config.database_url(Target::Products))
        .await?;
    db.close().await?;
    Ok(())
}
