//! stockmesh gateway service (being built; see issue tracker).

use std::sync::Arc;

use stockmesh::{Config, Shutdown};
use tokio::net::TcpListener;

/// Runs the gateway gRPC server on `listener` until `shutdown`: SERVING once its
/// descriptor routes are built.
pub async fn serve(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> stockmesh::Result<()> {
    let _ = (config, listener, shutdown);
    Err(stockmesh::Error::Config("the gateway service is not built yet".into()))
}
