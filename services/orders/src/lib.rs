//! stockmesh orders service (being built; see issue tracker).

use std::sync::Arc;

use stockmesh::{Config, Shutdown};
use tokio::net::TcpListener;

/// Runs the orders gRPC server on `listener` until `shutdown`: migrations first, then
/// SERVING.
pub async fn serve(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> stockmesh::Result<()> {
    let _ = (config, listener, shutdown);
    Err(stockmesh::Error::Config("the orders service is not built yet".into()))
}

/// Applies the orders database migrations and returns.
pub async fn migrate(config: &Config) -> stockmesh::Result<()> {
    let _ = config;
    Err(stockmesh::Error::Config("the orders service is not built yet".into()))
}
