//! Browser TLS on the gateway's port (`STOCKMESH_GATEWAY_TLS_CERT` / `_KEY`): the same
//! accept loop as the services' mTLS ports ([`stockmesh::server::tls_incoming`]: one task
//! per handshake, bounded, failures logged at debug and dropped) behind axum's `Listener`,
//! with the pair re-read when it changes on disk ([`stockmesh::tls::edge_server_config`]).
//! ALPN offers h2 and http/1.1, so gRPC, gRPC-web, Connect and REST all work over it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A listener handing out TLS streams whose handshake is done.
pub struct TlsListener {
    streams: Receiver<Result<TlsStream<TcpStream>, std::io::Error>>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS with the pair at `crt` and `key` on `listener`.
    pub fn new(listener: TcpListener, crt: &Path, key: &Path) -> stockmesh::Result<Self> {
        let local = listener.local_addr()?;
        let config = stockmesh::tls::edge_server_config(crt, key).map_err(|e| {
            stockmesh::Error::Config(format!("STOCKMESH_GATEWAY_TLS_CERT/KEY: {e}"))
        })?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Ok(Self {
            streams: stockmesh::server::tls_incoming(listener, acceptor).into_inner(),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.streams.recv().await {
                Some(Ok(stream)) => match stream.get_ref().0.peer_addr() {
                    Ok(peer) => return (stream, peer),
                    Err(e) => tracing::debug!(error = %e, "TLS connection gone before serving"),
                },
                Some(Err(e)) => tracing::debug!(error = %e, "accept failed"),
                // The accept loop only ends once this listener is dropped.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
