//! # stockmesh inventory service
//!
//! Owns warehouses, the stock of every product in every warehouse, reservations of that
//! stock for orders, and measurements taken in warehouses. The contract is the
//! `stockmesh.inventory.v1.InventoryService` proto and `API.md`.
//!
//! The one rule everything here serves: per product and warehouse, at every instant,
//! `on_hand >= reserved >= 0`, and stock never moves twice for one request. The database
//! enforces the inequality with CHECK constraints; the code gets there first with
//! conditional UPDATEs (see [`reservations`]) and records every write under its
//! idempotency key in the same transaction as the stock change (see [`stock`]).
//!
//! Idempotency keys reused with different parameters (a Restock/AdjustStock
//! `request_id`, a Reserve `reservation_id` with another product or quantity) are
//! refused with ALREADY_EXISTS.
//!
//! A ReleaseReservation of an id never reserved records a RELEASED *tombstone* (quantity
//! 0, no product), so that a Reserve of that id landing late (after its caller gave up and
//! compensated) reserves nothing and answers RELEASED; see [`reservations`].
//!
//! Every stock change writes its events (`StockChanged`, `StockLow`) into the outbox in
//! its own transaction ([`events`]); [`watch`] serves WatchStock from the feed.
//!
//! Modules: [`api`] (thin gRPC handlers), [`warehouses`], [`stock`], [`reservations`],
//! [`geo`] (which warehouse serves a reservation), [`measurements`], [`catalog`]
//! (ProductService lookups), [`reports`] (GetStockReport), [`sweeper`] (reservation expiry), [`events`] (what changes
//! publish), [`thresholds`] (low-stock thresholds), [`watch`] (WatchStock), [`txn`],
//! [`entity`], [`migration`], [`error`].

use std::sync::Arc;
use std::time::Duration;

use stockmesh::authn::{RemoteJwks, Verifier};
use stockmesh::events::Events;
use stockmesh::identity::{ServiceIdentity, resolve_secret};
use stockmesh::proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use stockmesh::server::GrpcServer;
use stockmesh::{Config, Shutdown, Target, client};
use tokio::net::TcpListener;

pub mod api;
pub mod catalog;
pub mod entity;
pub mod error;
pub mod events;
pub mod geo;
pub mod measurements;
pub mod migration;
pub mod reports;
pub mod reservations;
pub mod stock;
pub mod sweeper;
pub mod thresholds;
pub mod txn;
pub mod warehouses;
pub mod watch;

pub use migration::Migrator;

/// Runs the inventory gRPC server on `listener` until `shutdown`: migrations first, then
/// the events (outbox relay and feeds), the expiry sweeper, then SERVING.
pub async fn serve(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> stockmesh::Result<()> {
    let target = Target::Inventory;
    let (server, health) = GrpcServer::new(target.grpc_service()).await;
    let db = stockmesh::db::connect_and_migrate::<Migrator>(&config.database_url(target)).await?;
    let auth = client::upstream(&config, Target::Inventory, Target::Auth)?;
    let verifier = Verifier::remote(RemoteJwks::new(auth.clone()));
    // BatchGetProducts (the stock report) is internal: called as the inventory service.
    let identity = Arc::new(ServiceIdentity::new(
        Target::Inventory,
        &resolve_secret(&config)?,
        auth,
    ));
    let catalog = Arc::new(catalog::Catalog::new(
        client::upstream(&config, Target::Inventory, Target::Products)?,
        identity,
    ));
    // A child token: the relay and feeds stop with the service (ending Watch streams
    // with UNAVAILABLE), not with a sibling's failure.
    let events = Events::start(&config, target, db.clone(), shutdown.child()).await?;
    let api = api::InventoryApi::new(
        db.clone(),
        verifier,
        catalog,
        Duration::from_secs(config.inventory.reservation_ttl_secs),
        events.clone(),
        thresholds::default_from(config.inventory.low_stock_threshold),
    );
    // A child token: stopped with the service, and also alone if the server fails
    // (without stopping other services sharing `shutdown` in `stockmesh up`).
    let stop_sweeper = shutdown.child();
    let sweeper = sweeper::spawn(
        db.clone(),
        events,
        Duration::from_millis(config.inventory.reservation_sweep_ms),
        stop_sweeper.clone(),
    );
    health.set_serving().await;
    health.watch_database(db.clone(), shutdown.clone());
    let served = server
        .max_message_bytes(config.max_message_bytes)
        .add_service(
            InventoryServiceServer::new(api).max_decoding_message_size(config.max_message_bytes),
        )
        .serve(listener, shutdown.clone(), config.drain())
        .await;
    stop_sweeper.trigger();
    if let Err(e) = sweeper.await {
        tracing::warn!(error = %e, "reservation sweeper ended abnormally");
    }
    let _ = db.close().await;
    served
}

/// Applies the inventory database migrations and returns.
pub async fn migrate(config: &Config) -> stockmesh::Result<()> {
    let db =
        stockmesh::db::connect_and_migrate::<Migrator>(&config.database_url(Target::Inventory))
            .await?;
    db.close().await?;
    Ok(())
}
