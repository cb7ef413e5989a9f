//! # stockmesh gateway
//!
//! One port (HTTP/1.1 and h2c) in front of the four services, for every kind of client:
//!
//! * **gRPC** is proxied to the upstream owning the service named in the path, streaming
//!   and trailers intact, through the kernel's resilience stack ([`app`]).
//! * **gRPC-web** (binary and text) is translated to gRPC by tonic-web and proxied the same
//!   way, so browsers need no Envoy.
//! * **Connect** (unary POST with JSON or protobuf, GET for reads, server streaming) on the
//!   method paths is translated to gRPC ([`connect`]), so `createConnectTransport` works.
//! * **REST/JSON** is transcoded per the `google.api.http` rules of the embedded descriptor
//!   set ([`routes`], [`template`], [`transcode`]); server-streaming routes answer as
//!   Server-Sent Events or NDJSON ([`streaming`]); `/openapi.json` documents it
//!   ([`openapi`]); report reads also answer `text/csv` ([`csv`]). Translated calls
//!   reach the upstream through [`upstream`], which reads replies message by message.
//!
//! Around that: CORS, token checks and rate limits at the edge ([`edge`]) keyed by the
//! client address ([`client_ip`], trusted proxies), body caps enforced while bodies stream
//! ([`body_cap`]), request ids, access logs and Prometheus metrics ([`observe`]), and
//! `/healthz`, `/readyz`, `/metrics` plus the gateway's own `grpc.health.v1` and
//! reflection ([`ops`]). The web console's embedded bundle is served at `/` ([`web`]).
//!
//! The layers are assembled in [`serve`], outermost first: observe → CORS → dispatch.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::serve::{IncomingStream, ListenerExt};
use http::{HeaderName, HeaderValue, Method, Request};
use stockmesh::health::HealthHandle;
use stockmesh::{Config, Shutdown, Target};
use tokio::net::TcpListener;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

pub mod app;
pub mod body_cap;
pub mod client_ip;
pub mod connect;
pub mod contract;
pub mod csv;
pub mod edge;
pub mod error;
pub mod https;
pub mod observe;
pub mod openapi;
pub mod ops;
pub mod rate_store;
pub mod routes;
pub mod streaming;
pub mod template;
pub mod transcode;
pub mod upstream;
pub mod web;

/// How often idle rate-limit buckets are forgotten and histogram upkeep runs.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

/// Runs the gateway on `listener` until `shutdown`: SERVING (own `grpc.health.v1`) once its
/// routes are built; on shutdown NOT_SERVING (and `/readyz` 503) at once, still serving for
/// the drain delay, then no new connections and at most the grace period for in-flight
/// requests (`config.drain()`).
pub async fn serve(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> stockmesh::Result<()> {
    let name = Target::Gateway.grpc_service();
    let (health, health_server) = HealthHandle::new(name).await;
    let state = Arc::new(app::State::new(
        config.clone(),
        local_services(health_server)?,
    )?);
    let routes = state.routes.len();
    // Touch the recorder now so the first request does not pay for installing it.
    stockmesh::metrics::handle();

    let app = ServiceBuilder::new()
        .layer(observe::ObserveLayer)
        .layer(cors(&config))
        .service(app::Gateway(state.clone()));

    {
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(HOUSEKEEPING_EVERY) => {}
                }
                state.edge.forget_idle();
                stockmesh::metrics::handle().run_upkeep();
            }
        });
    }

    let addr = listener.local_addr()?;
    let edge_tls = config.gateway_tls()?;
    let per_connection = move |peer: std::net::SocketAddr| {
        let peer = app::ClientAddr(peer);
        app.clone().map_request(move |mut req: Request<Body>| {
            req.extensions_mut().insert(peer);
            req
        })
    };
    let (delay, grace) = (config.drain().delay, config.drain().grace);
    let signal = {
        let shutdown = shutdown.clone();
        let health = health.clone();
        let state = state.clone();
        async move {
            shutdown.wait().await;
            state.start_draining();
            health.drain().await;
            if !delay.is_zero() {
                tracing::info!(%addr, ?delay, "draining: /readyz 503, still answering");
                tokio::time::sleep(delay).await;
            }
            health.end_watches();
            tracing::info!(%addr, ?grace, "no new connections; in-flight requests finishing");
        }
    };
    let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match edge_tls
    {
        None => {
            let make = move |incoming: IncomingStream<'_, _>| {
                std::future::ready(Ok::<_, Infallible>(per_connection(*incoming.remote_addr())))
            };
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            health.set_serving().await;
            tracing::info!(%addr, routes, "gateway listening (HTTP/1.1 and h2c: gRPC, gRPC-web, Connect, REST)");
            Box::pin(
                axum::serve(listener, tower::service_fn(make))
                    .with_graceful_shutdown(signal)
                    .into_future(),
            )
        }
        Some((crt, key)) => {
            let make = move |incoming: IncomingStream<'_, _>| {
                std::future::ready(Ok::<_, Infallible>(per_connection(*incoming.remote_addr())))
            };
            let listener = https::TlsListener::new(listener, crt, key)?;
            health.set_serving().await;
            tracing::info!(%addr, routes, "gateway listening (HTTPS, h2 and HTTP/1.1: gRPC, gRPC-web, Connect, REST)");
            Box::pin(
                axum::serve(listener, tower::service_fn(make))
                    .with_graceful_shutdown(signal)
                    .into_future(),
            )
        }
    };
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => res?,
        () = async { shutdown.wait().await; tokio::time::sleep(delay + grace).await } => {
            tracing::warn!(%addr, ?grace, "in-flight requests outlived the grace period; stopping anyway");
        }
    }
    tracing::info!(%addr, "gateway stopped");
    Ok(())
}

/// The gRPC services the gateway answers itself: health, and reflection over the whole
/// mesh's descriptors so grpcurl works against port 8080.
fn local_services(
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> stockmesh::Result<HashMap<&'static str, app::LocalService>> {
    let mut v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(stockmesh::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    let mut v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(stockmesh::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for target in Target::SERVICES {
        v1 = v1.with_service_name(target.grpc_service());
        v1alpha = v1alpha.with_service_name(target.grpc_service());
    }
    let mut local: HashMap<&'static str, app::LocalService> = HashMap::new();
    local.insert("grpc.health.v1.Health", BoxCloneSyncService::new(health));
    local.insert(
        "grpc.reflection.v1.ServerReflection",
        BoxCloneSyncService::new(v1.build_v1()?),
    );
    local.insert(
        "grpc.reflection.v1alpha.ServerReflection",
        BoxCloneSyncService::new(v1alpha.build_v1alpha()?),
    );
    Ok(local)
}

/// CORS for browsers: origins from `STOCKMESH_CORS_ORIGINS` (`*` = any), request headers
/// mirrored (gRPC-web clients send `x-grpc-web`, `x-user-agent`, `grpc-timeout`, …;
/// Connect clients `connect-protocol-version`, `connect-timeout-ms`; a reconnecting
/// EventSource `last-event-id`), and the gRPC status headers exposed so scripts can read
/// them (Connect puts its errors in the body).
fn cors(config: &Config) -> CorsLayer {
    let origins = &config.gateway.cors_origins;
    let allow_origin = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(ExposeHeaders::list([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            HeaderName::from_static(observe::REQUEST_ID),
            http::header::RETRY_AFTER,
        ]))
        .max_age(Duration::from_secs(24 * 3600))
}
