//! # stockmesh orders service
//!
//! `stockmesh.orders.v1.OrderService`: customers place orders, operators complete them,
//! either may cancel. Orders own only their own database; product names and prices are
//! copied from products at order time, and stock is held by reservations in inventory.
//!
//! * [`api`]: thin gRPC handlers (authenticate, role rules, map errors).
//! * [`saga`]: CreateOrder as a saga: intent row, price snapshot, one reservation per line
//!   with a deterministic id, PENDING, or a rollback that leaves nothing reserved.
//! * [`orders`]: reads with ownership rules, CompleteOrder and CancelOrder.
//! * [`reconciler`]: background task finishing orders that a crash or an outage left
//!   half-way, and cancelling PENDING orders whose reservations expired; each round drains
//!   everything due in batches that replicas claim, so N replicas never work on one order
//!   at once.
//! * [`reports`]: GetSalesReport, one aggregate query per report.
//! * [`store`]: database access, with every status change a conditional update.
//! * [`upstream`]: calls to products and inventory as the orders *service identity*.
//! * [`events`]: the `OrderStatusChanged` every visible status change writes into the
//!   outbox in its own transaction; [`watch`]: WatchOrders, served from the feed.
//!
//! ## A PENDING order lasts as long as its reservations
//!
//! Inventory expires reservations after `STOCKMESH_RESERVATION_TTL_SECS` (default 900 s)
//! whatever the order's state. Rather than keep reservations alive forever, the decision
//! is that a PENDING order is a *hold* that lasts as long as its reservations do: once
//! any of them has expired (or is released or unknown), the order ends CANCELLED with
//! reason "reservation expired" and its remaining reservations are released, so that "no
//! PENDING order lacks its reservations" stays true. Two paths get there, both through
//! the same conditional transitions as CancelOrder (PENDING → CANCELLING → CANCELLED), so
//! neither can race a CompleteOrder:
//!
//! * the [`reconciler`] checks, every round, every PENDING order older than the TTL
//!   (`config.inventory.reservation_ttl_secs`, oldest first, in claimed batches so that
//!   several replicas share the work) with GetReservation on each line;
//! * CompleteOrder whose commit is refused because a reservation expired cancels the
//!   order the same way and answers FAILED_PRECONDITION ("reservation expired"), instead
//!   of leaving it PENDING.
//!
//! Orders must therefore be completed within the TTL of their creation; deployments that
//! need longer raise the TTL (both services read the same setting).
//!
//! ## Late reservations
//!
//! A Reserve that timed out may land after the saga released its line. Inventory records
//! the release of an unknown reservation as a RELEASED tombstone and answers the late
//! Reserve with it, reserving nothing; the saga treats any answer that is not RESERVED as
//! a failed line (see [`saga`]).
//!
//! Access tokens are verified locally with auth's published keys
//! ([`Verifier::remote`]); internal RPCs of other services are called with this service's
//! own token ([`ServiceIdentity`]), never the end user's.

use std::sync::Arc;
use std::time::Duration;

use stockmesh::authn::{RemoteJwks, Verifier};
use stockmesh::client;
use stockmesh::events::Events;
use stockmesh::identity::{ServiceIdentity, resolve_secret};
use stockmesh::proto::orders::v1::order_service_server::OrderServiceServer;
use stockmesh::server::GrpcServer;
use stockmesh::{Config, Shutdown, Target};
use tokio::net::TcpListener;

pub mod api;
pub mod entity;
pub mod error;
pub mod events;
pub mod migration;
pub mod orders;
pub mod reconciler;
pub mod reports;
pub mod saga;
pub mod store;
pub mod upstream;
pub mod watch;

pub use error::{Error, Result};

/// Runs the orders gRPC server on `listener` until `shutdown`: settings checked first
/// (a configuration error names the bad variable), migrations, the events (outbox relay
/// and feed), then the reconciler, then SERVING.
pub async fn serve(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> stockmesh::Result<()> {
    let limits = saga::Limits::from_settings(&config.orders)?;
    let (server, health) = GrpcServer::new(Target::Orders.grpc_service()).await;
    let db = stockmesh::db::connect_and_migrate::<migration::Migrator>(
        &config.database_url(Target::Orders),
    )
    .await?;

    let auth = client::upstream(&config, Target::Orders, Target::Auth)?;
    let verifier = Verifier::remote(RemoteJwks::new(auth.clone()));
    let identity = Arc::new(ServiceIdentity::new(
        Target::Orders,
        &resolve_secret(&config)?,
        auth,
    ));
    let upstreams = upstream::Upstreams::new(
        identity,
        client::upstream(&config, Target::Orders, Target::Products)?,
        client::upstream(&config, Target::Orders, Target::Inventory)?,
    );
    // A child token: the relay and feeds stop with the service (ending Watch streams
    // with UNAVAILABLE), not with a sibling's failure.
    let events = Events::start(&config, Target::Orders, db.clone(), shutdown.child()).await?;
    let orders = orders::Orders::new(
        db.clone(),
        upstreams,
        Duration::from_secs(config.orders.reconcile_after_secs),
        Duration::from_secs(config.inventory.reservation_ttl_secs),
        limits,
        events,
    );

    // Its own token, so that it also stops when the server ends on its own.
    let stop_reconciler = shutdown.child();
    let reconciler = tokio::spawn(reconciler::run(
        orders.clone(),
        Duration::from_millis(config.orders.reconcile_interval_ms.max(1)),
        stop_reconciler.clone(),
    ));
    let server = server
        .max_message_bytes(config.max_message_bytes)
        .add_service(
            OrderServiceServer::new(api::OrderApi::new(verifier, orders))
                .max_decoding_message_size(config.max_message_bytes),
        );
    health.set_serving().await;
    health.watch_database(db, shutdown.clone());
    let served = server
        .serve(listener, shutdown.clone(), config.drain())
        .await;
    stop_reconciler.trigger();
    // Cancelled only when the runtime itself is going away (a test's, say): not a failure.
    if let Err(e) = reconciler.await
        && !e.is_cancelled()
    {
        tracing::error!(error = %e, "reconciler task failed");
    }
    served
}

/// Applies the orders database migrations and returns.
pub async fn migrate(config: &Config) -> stockmesh::Result<()> {
    let db = stockmesh::db::connect_and_migrate::<migration::Migrator>(
        &config.database_url(Target::Orders),
    )
    .await?;
    db.close().await?;
    Ok(())
}
