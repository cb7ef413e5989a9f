//! The dispatcher behind the one port: operational endpoints, then by content type gRPC
//! (proxied), gRPC-web (translated by tonic-web, then proxied the same way), then by path
//! Connect (a known `/pkg.Service/Method`, [`crate::connect`]) or REST (transcoded into a
//! gRPC call; server-streaming routes answer as SSE or NDJSON, [`crate::streaming`]).
//!
//! Proxying is a plain tower call on the upstream's [`UpstreamChannel`]: the request's
//! headers (`authorization`, `grpc-timeout`, `x-request-id`, custom metadata) and body
//! stream go through untouched, and the response — headers, message stream and trailers —
//! comes back as it is, so streaming RPCs work and deadlines propagate. The channel's
//! resilience stack (deadline, retry, breaker) sits inside, so a dead upstream answers
//! UNAVAILABLE quickly instead of hanging the client.
//!
//! Every gRPC call — proxied or answered here (health, reflection) — passes the edge
//! checks (token, rate limit) keyed by the resolved client address ([`crate::client_ip`])
//! before anything of its body is read: an RPC that needs a caller ([`crate::contract`])
//! answers UNAUTHENTICATED / 401 to a call without a token whatever the body holds,
//! and its body is capped while it streams ([`crate::body_cap`]). A proxied call carries
//! the client address to the services, stamped by the kernel's [`ClientAttestor`] (any
//! client-supplied copy is replaced).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use stockmesh::client::UpstreamChannel;
use stockmesh::identity::{CLIENT_IP_HEADER, CLIENT_PROOF_HEADER, ClientAttestor};
use stockmesh::{Config, Target};
use tonic::Status;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::body_cap::{CappedBody, Tripped};
use crate::client_ip::{ClientIp, TrustedProxies};
use crate::contract::Access;
use crate::edge::Edge;
use crate::error::Error;
use crate::observe::{Protocol, RouteLabel, StatusSlot};
use crate::routes::{Lookup, Route, Routes};
use crate::{ops, transcode, upstream};

/// A gRPC service the gateway answers itself (health, reflection).
pub type LocalService =
    BoxCloneSyncService<Request<tonic::body::Body>, Response<tonic::body::Body>, Infallible>;

/// The peer address of the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The methods of the services answered locally: the only local paths that get their own
/// metric label (anything else on those services is `unknown`, like any unknown path).
pub const LOCAL_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Everything a request may need, shared by all connections.
pub struct State {
    pub config: Arc<Config>,
    pub routes: Routes,
    pub pool: DescriptorPool,
    upstreams: HashMap<Target, UpstreamChannel>,
    /// gRPC service name → the upstream that owns it.
    owners: HashMap<String, Target>,
    /// `/pkg.Service/Method` of every method the gateway knows (metric labels).
    grpc_paths: HashSet<String>,
    /// The proxied services' methods by `/pkg.Service/Method` (Connect).
    methods: HashMap<String, (Target, MethodDescriptor)>,
    /// Services answered locally, by full name.
    local: HashMap<&'static str, LocalService>,
    /// Who may call each method, by `/pkg.Service/Method` ([`crate::contract`]).
    access: HashMap<String, Access>,
    pub edge: Edge,
    /// Whose `X-Forwarded-For` is believed.
    trusted: TrustedProxies,
    /// Stamps the client address onto proxied calls.
    attestor: ClientAttestor,
    pub openapi: Bytes,
    /// Shutdown has started: `/readyz` says 503.
    draining: AtomicBool,
}

impl State {
    /// Marks the gateway as draining (see [`crate::ops`]).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn ops(&self) -> ops::Ops<'_> {
        ops::Ops {
            upstreams: &self.upstreams,
            openapi: &self.openapi,
            draining: self.draining.load(Ordering::SeqCst),
        }
    }

    pub fn new(
        config: Arc<Config>,
        local: HashMap<&'static str, LocalService>,
    ) -> stockmesh::Result<Self> {
        let pool = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| stockmesh::Error::Config(format!("descriptor set: {e}")))?;
        let routes = Routes::from_pool(&pool)
            .map_err(|e| stockmesh::Error::Config(format!("google.api.http rules: {e}")))?;
        let mut upstreams = HashMap::new();
        let mut owners = HashMap::new();
        let mut grpc_paths: HashSet<String> = LOCAL_METHODS.iter().map(|m| m.to_string()).collect();
        let mut methods = HashMap::new();
        for target in Target::SERVICES {
            upstreams.insert(
                target,
                stockmesh::client::upstream(&config, Target::Gateway, target)?,
            );
            owners.insert(target.grpc_service().to_string(), target);
            if let Some(svc) = pool.get_service_by_name(target.grpc_service()) {
                for m in svc.methods() {
                    let path = format!("/{}/{}", svc.full_name(), m.name());
                    grpc_paths.insert(path.clone());
                    methods.insert(path, (target, m));
                }
            }
        }
        let openapi = Bytes::from(crate::openapi::document(&pool, &routes).to_string());
        let access = crate::contract::access_table(&pool);
        let edge = Edge::new(&config)?;
        let trusted = TrustedProxies::parse(&config.gateway.trusted_proxies)?;
        let attestor = ClientAttestor::new(&stockmesh::identity::resolve_secret(&config)?);
        Ok(Self {
            config,
            routes,
            pool,
            upstreams,
            owners,
            grpc_paths,
            methods,
            local,
            access,
            edge,
            trusted,
            attestor,
            openapi,
            draining: AtomicBool::new(false),
        })
    }

    /// Who may call the method at `grpc_path`. Paths of no proxied method (health,
    /// reflection, unknown ones answered UNIMPLEMENTED) need no caller.
    pub fn access(&self, grpc_path: &str) -> Access {
        self.access
            .get(grpc_path)
            .copied()
            .unwrap_or(Access::Public)
    }

    /// The edge checks for a call of the method at `grpc_path` ([`Edge::admit`]).
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        grpc_path: &str,
    ) -> Result<(), Error> {
        self.edge
            .admit(headers, client, self.access(grpc_path))
            .await
    }

    pub fn upstream(&self, target: Target) -> Option<UpstreamChannel> {
        self.upstreams.get(&target).cloned()
    }

    /// What stamps the client address onto a call the gateway makes itself.
    pub(crate) fn attest(&self, client: Option<IpAddr>) -> Option<(&ClientAttestor, IpAddr)> {
        client.map(|ip| (&self.attestor, ip))
    }

    /// Routes one request.
    async fn dispatch(self: Arc<Self>, mut req: Request<Body>) -> Response<Body> {
        if let Some(peer) = req.extensions().get::<ClientAddr>().map(|a| a.0.ip()) {
            let client = self.trusted.resolve(peer, req.headers());
            req.extensions_mut().insert(ClientIp(client));
        }
        let protocol = Protocol::of(req.headers());
        let (label, mut resp) = match protocol {
            Protocol::Grpc => {
                let label = self.grpc_label(req.uri().path());
                let resp = self.clone().grpc(req.map(tonic::body::Body::new)).await;
                (label, resp.map(Body::new))
            }
            Protocol::GrpcWeb => {
                let label = self.grpc_label(req.uri().path());
                let svc = tonic_web::GrpcWebLayer::new().layer(GrpcHandler(self.clone()));
                let resp = match svc.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                (label, resp.map(Body::new))
            }
            _ => match self.methods.get(req.uri().path()) {
                Some((target, method)) if crate::connect::is_connect(req.method()) => {
                    let label = req.uri().path().to_string();
                    let resp = crate::connect::handle(&self, method, *target, req).await;
                    (label, resp)
                }
                _ => self.rest(req).await,
            },
        };
        resp.extensions_mut().insert(RouteLabel(label));
        // Connect and REST streams name their own protocol.
        if resp.extensions().get::<Protocol>().is_none() {
            resp.extensions_mut().insert(protocol);
        }
        resp
    }

    /// The metric label of a gRPC path: the path of a real method, else `unknown`.
    fn grpc_label(&self, path: &str) -> String {
        if self.grpc_paths.contains(path) {
            path.to_string()
        } else {
            "unknown".to_string()
        }
    }

    /// A gRPC call (also a translated gRPC-web one): answered locally or proxied.
    async fn grpc(self: Arc<Self>, req: Request<tonic::body::Body>) -> Response<tonic::body::Body> {
        let slot = req.extensions().get::<StatusSlot>().cloned();
        let resp = self.grpc_inner(req).await;
        match slot {
            Some(slot) => slot.watch(resp),
            None => resp,
        }
    }

    async fn grpc_inner(&self, req: Request<tonic::body::Body>) -> Response<tonic::body::Body> {
        let service = req
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let client = req.extensions().get::<ClientIp>().map(|c| c.0);
        if let Err(e) = self.admit(req.headers(), client, req.uri().path()).await {
            return Status::from(e).into_http();
        }
        let limit = self.config.gateway.max_body_bytes;
        if content_length(req.headers()).is_some_and(|n| n > limit) {
            return crate::body_cap::too_large(limit).into_http();
        }
        let tripped = Tripped::default();
        let req =
            req.map(|body| tonic::body::Body::new(CappedBody::new(body, limit, tripped.clone())));
        if let Some(local) = self.local.get(service.as_str()) {
            let resp = match local.clone().oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            return capped(resp, &tripped, limit);
        }
        let Some(target) = self.owners.get(&service).copied() else {
            return Status::unimplemented(format!("unknown service {service}")).into_http();
        };
        let Some(channel) = self.upstream(target) else {
            return Status::unavailable(format!("no channel to {target}")).into_http();
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        self.stamp(client, &mut parts.headers);
        parts.version = Version::HTTP_2;
        match channel.oneshot(Request::from_parts(parts, body)).await {
            Ok(resp) => capped(resp, &tripped, limit),
            Err(_) if tripped.get() => crate::body_cap::too_large(limit).into_http(),
            Err(status) => status.into_http(),
        }
    }

    /// Puts the client address on a call to a service (and drops any client-sent copy).
    fn stamp(&self, client: Option<IpAddr>, headers: &mut HeaderMap) {
        match client {
            Some(ip) => self.attestor.stamp(ip, headers),
            None => {
                headers.remove(CLIENT_IP_HEADER);
                headers.remove(CLIENT_PROOF_HEADER);
            }
        }
    }

    /// A REST request (or an operational endpoint).
    async fn rest(&self, req: Request<Body>) -> (String, Response<Body>) {
        if req.method() == Method::GET
            && let Some(resp) = ops::handle(self.ops(), req.uri().path()).await
        {
            return (req.uri().path().to_string(), resp);
        }
        let (route, values) = match self.routes.find(req.method(), req.uri().path()) {
            Lookup::Found(route, values) => (route, values),
            Lookup::MethodNotAllowed(allow) => {
                let err = Error::MethodNotAllowed {
                    method: req.method().clone(),
                    path: req.uri().path().to_string(),
                    allow,
                };
                return ("unmatched".into(), err.into_rest());
            }
            Lookup::NotFound => {
                // Paths the API does not have may be the web console's (`/`, its assets).
                if let Some(resp) =
                    crate::web::handle(req.method(), req.uri().path(), req.headers())
                {
                    return ("console".into(), resp);
                }
                let err = Error::NotFound {
                    method: req.method().clone(),
                    path: req.uri().path().to_string(),
                };
                return ("unmatched".into(), err.into_rest());
            }
        };
        let stream = route
            .method
            .is_server_streaming()
            .then(|| crate::streaming::Format::of(req.headers()));
        let slot = req.extensions().get::<StatusSlot>().cloned();
        let resp = match self.transcode(route, values, req).await {
            Ok(resp) => resp,
            Err(e) => {
                let code = e.code();
                let mut resp = e.into_rest();
                // A stream refused before it began is still counted as that stream.
                if let (Some(format), Some(slot)) = (stream, slot) {
                    slot.set(code as i32);
                    resp.extensions_mut().insert(format.protocol());
                }
                resp
            }
        };
        (route.label.clone(), resp)
    }

    async fn transcode(
        &self,
        route: &Route,
        values: Vec<String>,
        req: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        let client = parts.extensions.get::<ClientIp>().map(|c| c.0);
        self.admit(&parts.headers, client, &route.grpc_path).await?;
        let answer = crate::csv::negotiate(route, &parts.headers)?;

        let limit = self.config.gateway.max_body_bytes;
        let has_body = !matches!(route.body, crate::routes::BodyRule::None);
        if has_body && let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !is_json(ct) {
                return Err(Error::UnsupportedMediaType(ct.to_string()));
            }
        }
        if content_length(&parts.headers).is_some_and(|n| n > limit) {
            return Err(Error::TooLarge { limit });
        }
        let bytes = if has_body {
            match Limited::new(body, limit).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => return Err(Error::TooLarge { limit }),
                Err(e) => return Err(Error::BadBody(format!("cannot read the body: {e}"))),
            }
        } else {
            Bytes::new()
        };

        let mut msg = transcode::request(route, values, parts.uri.query(), &bytes)?;
        let Some(channel) = self.upstream(route.target) else {
            return Err(Status::unavailable(format!("no channel to {}", route.target)).into());
        };
        if route.method.is_server_streaming() {
            crate::streaming::resume_from(&mut msg, &parts.headers)?;
            let req = upstream::request(
                &route.grpc_path,
                upstream::rest_metadata(&parts.headers),
                self.attest(client),
                transcode::encode_frame(&msg),
            )?;
            let reply = upstream::start(channel, req).await?;
            return Ok(crate::streaming::rest(
                crate::streaming::Format::of(&parts.headers),
                route.method.output(),
                reply.frames,
                parts.extensions.get::<StatusSlot>().cloned(),
            ));
        }
        let req = upstream::request(
            &route.grpc_path,
            upstream::rest_metadata(&parts.headers),
            self.attest(client),
            transcode::encode_frame(&msg),
        )?;
        let reply = upstream::unary(channel, req).await?;
        let out = DynamicMessage::decode(route.method.output(), reply)
            .map_err(|e| Status::internal(format!("undecodable response from upstream: {e}")))?;
        if answer == crate::csv::Answer::Csv {
            return crate::csv::response(&out, parts.uri.path());
        }
        let json = transcode::response_json(route, &out)?;
        let mut resp = Response::new(Body::from(json));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}

/// The inner service of the gRPC-web translation.
#[derive(Clone)]
struct GrpcHandler(Arc<State>);

impl Service<Request<tonic::body::Body>> for GrpcHandler {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move { Ok(state.grpc(req).await) })
    }
}

/// The whole gateway as one tower service (before CORS and observation layers).
#[derive(Clone)]
pub struct Gateway(pub Arc<State>);

impl Service<Request<Body>> for Gateway {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move { Ok(state.dispatch(req).await) })
    }
}

/// The response of a call whose request body went through a [`CappedBody`]: when the body
/// was refused, RESOURCE_EXHAUSTED instead of whatever came back; else the response, its
/// body guarded in case the refusal comes while it streams.
fn capped(
    resp: Response<tonic::body::Body>,
    tripped: &Tripped,
    limit: usize,
) -> Response<tonic::body::Body> {
    if tripped.get() {
        return crate::body_cap::too_large(limit).into_http();
    }
    let tripped = tripped.clone();
    resp.map(|body| tripped.guard(body, crate::body_cap::too_large(limit)))
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Connection-level headers of the client's hop must not reach the upstream's (HTTP/2
/// forbids them); the body may also be re-framed, so its length goes too.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION.as_str(),
        "keep-alive",
        "proxy-connection",
        header::TRANSFER_ENCODING.as_str(),
        header::UPGRADE.as_str(),
        header::HOST.as_str(),
        header::CONTENT_LENGTH.as_str(),
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
