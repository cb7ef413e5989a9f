//! The gRPC server every service runs: its own services plus `grpc.health.v1` and server
//! reflection (v1 and v1alpha), on a listener the caller has already bound (so tests and
//! `stockmesh up` can use port 0 and know the address before the server starts).
//!
//! Shutdown is graceful and bounded ([`Drain`]): on the signal, health flips to
//! NOT_SERVING while the server keeps answering for the drain delay (clients watching its
//! health move away meanwhile); then its health Watch streams end, the listener stops
//! accepting and every connection gets GOAWAY; in-flight calls get `grace` to finish, and
//! then the server returns regardless.
//!
//! With mTLS on (`STOCKMESH_TLS_DIR`, carried in [`Drain::tls`]) the port speaks only TLS
//! and requires a client certificate from the mesh CA: our own accept loop
//! ([`tls_incoming`]) does each handshake in a task of its own, bounded by
//! [`HANDSHAKE_TIMEOUT`] (a failed or slow handshake never holds up other connections or
//! stops accepting), with the reloading server configuration of [`crate::tls`], and hands
//! the TLS streams to tonic — whose `Connected` impl for rustls streams puts the peer's
//! certificates in each request (`Request::peer_certs`). tonic's own TLS is not used: it
//! cannot reload certificates. Every request is then marked
//! [`MeshPeerRequired`](crate::tls::MeshPeerRequired) for the internal RPCs' check, and a
//! plaintext port serving only `grpc.health.v1` from the same [`HealthHandle`] can be
//! opened for kubelet probes (`STOCKMESH_<SVC>_HEALTH_PORT`): it says NOT_SERVING with the
//! TLS port and closes at GOAWAY.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tower::{Layer, Service};

use crate::health::HealthHandle;
use crate::tls::{MeshPeerRequired, MeshTls};
use crate::{Drain, Shutdown, Target};

/// Longest a client may take to complete its TLS handshake before its connection is
/// dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS handshakes in progress on one port; a connection over it is closed at once.
/// Mesh callers hold a few long-lived HTTP/2 connections each, so this only binds a flood
/// of connections that never finish their handshake (each would otherwise hold a task and
/// its buffers for [`HANDSHAKE_TIMEOUT`]).
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// A service's gRPC server under construction.
pub struct GrpcServer {
    routes: RoutesBuilder,
    /// Health alone, for the plaintext health port (mTLS on).
    health_routes: RoutesBuilder,
    health: HealthHandle,
    service: &'static str,
    names: Vec<&'static str>,
    max_message_bytes: usize,
}

impl GrpcServer {
    /// A server whose health reports `service` (full gRPC name) as NOT_SERVING until
    /// [`HealthHandle::set_serving`] is called on the returned handle.
    pub async fn new(service: &'static str) -> (Self, HealthHandle) {
        let (health, health_server) = HealthHandle::new(service).await;
        let mut routes = RoutesBuilder::default();
        let mut health_routes = RoutesBuilder::default();
        health_routes.add_service(health_server.clone());
        routes.add_service(health_server);
        let server = Self {
            routes,
            health_routes,
            health: health.clone(),
            service,
            names: vec![service],
            max_message_bytes: crate::message_limit::DEFAULT_MAX_MESSAGE_BYTES,
        };
        (server, health)
    }

    /// The largest message each call may receive or send (default 4 MiB); one over it is
    /// RESOURCE_EXHAUSTED ([`crate::message_limit`]). Give the generated servers the same
    /// value as `max_decoding_message_size`, or tonic's own 4 MiB still applies.
    pub fn max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = limit;
        self
    }

    /// Mounts a generated tonic service.
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        if !self.names.contains(&S::NAME) {
            self.names.push(S::NAME);
        }
        self.routes.add_service(svc);
        self
    }

    /// Serves until `shutdown`, then drains as `drain` says (a bare `Duration` is a grace
    /// period with no drain delay).
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: Shutdown,
        drain: impl Into<Drain>,
    ) -> crate::Result<()> {
        let drain = drain.into();
        let mut v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        let mut v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in &self.names {
            v1 = v1.with_service_name(*name);
            v1alpha = v1alpha.with_service_name(*name);
        }
        self.routes.add_service(v1.build_v1()?);
        self.routes.add_service(v1alpha.build_v1alpha()?);

        let addr = listener.local_addr()?;
        let tls = match &drain.tls {
            Some(tls) => Some(self.tls_parts(tls).await?),
            None => None,
        };
        // Closes the plaintext health port at GOAWAY (and when serving ends anyhow).
        let goaway = CancellationToken::new();
        let _close_health = goaway.clone().drop_guard();
        let health = self.health.clone();
        let signal = {
            let shutdown = shutdown.clone();
            let goaway = goaway.clone();
            let delay = drain.delay;
            let grace = drain.grace;
            async move {
                shutdown.wait().await;
                health.drain().await;
                if !delay.is_zero() {
                    tracing::info!(%addr, ?delay, "draining: NOT_SERVING, still answering");
                    tokio::time::sleep(delay).await;
                }
                health.end_watches();
                goaway.cancel();
                tracing::info!(%addr, ?grace, "GOAWAY: no new calls; in-flight calls finishing");
            }
        };
        // Inbound deadlines are fixed on arrival so that calls a handler makes to other
        // services inherit what is left of its caller's time.
        let router = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(crate::metrics::GrpcServerMetricsLayer)
            .layer(crate::telemetry::ServerSpanLayer)
            .layer(crate::resilience::deadline::InboundDeadlineLayer)
            .layer(crate::message_limit::MessageLimitLayer::new(
                self.max_message_bytes,
            ))
            .layer(MarkMeshPeerLayer {
                required: tls.is_some(),
            })
            .add_routes(self.routes.routes());
        let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match tls {
                None => {
                    tracing::info!(%addr, services = ?self.names, "gRPC server listening");
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
                }
                Some((acceptor, health_listener)) => {
                    tracing::info!(%addr, services = ?self.names, "gRPC server listening (mTLS)");
                    if let Some(listener) = health_listener {
                        let routes = self.health_routes.routes();
                        let stop = goaway.clone();
                        tokio::spawn(async move {
                            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                            if let Err(e) = Server::builder()
                                .add_routes(routes)
                                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                                .await
                            {
                                tracing::warn!(error = %e, "plaintext health port failed");
                            }
                        });
                    }
                    let incoming = tls_incoming(listener, acceptor);
                    Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
                }
            };
        tokio::pin!(server);
        tokio::select! {
            res = &mut server => res?,
            () = async { shutdown.wait().await; tokio::time::sleep(drain.delay + drain.grace).await } => {
                tracing::warn!(%addr, grace = ?drain.grace, "in-flight calls outlived the grace period; stopping anyway");
            }
        }
        tracing::info!(%addr, "gRPC server stopped");
        Ok(())
    }
}

impl GrpcServer {
    /// With mTLS on: the acceptor presenting this service's (reloading) certificate, and
    /// the plaintext health port's listener when one is configured.
    async fn tls_parts(&self, tls: &MeshTls) -> crate::Result<(TlsAcceptor, Option<TcpListener>)> {
        let target = Target::SERVICES
            .into_iter()
            .find(|t| t.grpc_service() == self.service)
            .ok_or_else(|| {
                crate::Error::Config(format!(
                    "STOCKMESH_TLS_DIR: no mesh identity for service {}",
                    self.service
                ))
            })?;
        let config = crate::tls::server_config(&tls.dir, target.name())
            .map_err(|e| crate::Error::Config(format!("STOCKMESH_TLS_DIR ({target}): {e}")))?;
        let health = match tls.health_port(target) {
            Some(port) => {
                let addr = std::net::SocketAddr::new(tls.bind, port);
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    crate::Error::Config(format!(
                        "cannot listen on {addr} (STOCKMESH_{}_HEALTH_PORT): {e}",
                        target.name().to_uppercase()
                    ))
                })?;
                tracing::info!(addr = %listener.local_addr()?, %target, "plaintext health port listening");
                Some(listener)
            }
            None => None,
        };
        Ok((TlsAcceptor::from(Arc::new(config)), health))
    }
}

/// The connections of an mTLS port: accepts on `listener` and completes each TLS handshake
/// in its own task (at most [`HANDSHAKE_TIMEOUT`], at most [`MAX_PENDING_HANDSHAKES`] at
/// once); streams that made it are handed on,
/// the others are logged at debug and dropped. Ends — closing the listener — when tonic
/// drops the stream (it does at GOAWAY).
pub fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many TLS handshakes in progress; connection closed");
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Marks every request [`MeshPeerRequired`] when the server runs mTLS (`required`);
/// otherwise passes requests through untouched.
#[derive(Debug, Clone, Copy)]
struct MarkMeshPeerLayer {
    required: bool,
}

impl<S> Layer<S> for MarkMeshPeerLayer {
    type Service = MarkMeshPeer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MarkMeshPeer {
            inner,
            required: self.required,
        }
    }
}

#[derive(Debug, Clone)]
struct MarkMeshPeer<S> {
    inner: S,
    required: bool,
}

impl<S, B> Service<http::Request<B>> for MarkMeshPeer<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if self.required {
            req.extensions_mut().insert(MeshPeerRequired);
        }
        self.inner.call(req)
    }
}
