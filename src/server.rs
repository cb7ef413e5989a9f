//! The gRPC server every service runs: its own services plus `grpc.health.v1` and server
//! reflection (v1 and v1alpha), on a listener the caller has already bound (so tests and
//! `stockmesh up` can use port 0 and know the address before the server starts).
//!
//! Shutdown is graceful and bounded ([`Drain`]): on the signal, health flips to
//! NOT_SERVING while the server keeps answering for the drain delay (clients watching its
//! health move away meanwhile); then its health Watch streams end, the listener stops
//! accepting and every connection gets GOAWAY; in-flight calls get `grace` to finish, and
//! then the server returns regardless.

use std::convert::Infallible;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tower::Service;

use crate::health::HealthHandle;
use crate::{Drain, Shutdown};

/// A service's gRPC server under construction.
pub struct GrpcServer {
    routes: RoutesBuilder,
    health: HealthHandle,
    names: Vec<&'static str>,
    max_message_bytes: usize,
}

impl GrpcServer {
    /// A server whose health reports `service` (full gRPC name) as NOT_SERVING until
    /// [`HealthHandle::set_serving`] is called on the returned handle.
    pub async fn new(service: &'static str) -> (Self, HealthHandle) {
        let (health, health_server) = HealthHandle::new(service).await;
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_server);
        let server = Self {
            routes,
            health: health.clone(),
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
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let health = self.health.clone();
        let signal = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.wait().await;
                health.drain().await;
                if !drain.delay.is_zero() {
                    tracing::info!(%addr, delay = ?drain.delay, "draining: NOT_SERVING, still answering");
                    tokio::time::sleep(drain.delay).await;
                }
                health.end_watches();
                tracing::info!(%addr, grace = ?drain.grace, "GOAWAY: no new calls; in-flight calls finishing");
            }
        };
        tracing::info!(%addr, services = ?self.names, "gRPC server listening");
        // Inbound deadlines are fixed on arrival so that calls a handler makes to other
        // services inherit what is left of its caller's time.
        let server = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(crate::metrics::GrpcServerMetricsLayer)
            .layer(crate::telemetry::ServerSpanLayer)
            .layer(crate::resilience::deadline::InboundDeadlineLayer)
            .layer(crate::message_limit::MessageLimitLayer::new(
                self.max_message_bytes,
            ))
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(incoming, signal);
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
