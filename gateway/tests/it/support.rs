//! Starts the whole mesh (auth, products, inventory, orders) plus the gateway in-process,
//! and talks to the gateway the way outside clients do: HTTP/1.1 for REST and gRPC-web,
//! h2c for gRPC.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use stockmesh::Target;
use stockmesh::testing::{Backend, Running, TestMesh};

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A string unique within this test binary, for skus, names and emails.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a `google.rpc.Status` error with this HTTP status and gRPC code.
    #[track_caller]
    pub fn assert_error(&self, http: u16, code: i32) -> String {
        let json = self.json();
        assert_eq!(self.status.as_u16(), http, "{json}");
        assert_eq!(json["code"], code, "{json}");
        assert!(json["details"].is_array(), "{json}");
        json["message"].as_str().unwrap_or_default().to_string()
    }

    #[track_caller]
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
}

/// Settings a test may change before the gateway starts.
pub type Tweak = fn(&mut stockmesh::Config);

/// The mesh and the gateway in front of it.
pub struct Env {
    pub mesh: TestMesh,
    /// Kept so the services run as long as the test.
    _auth: Running,
    pub products: Option<Running>,
    _inventory: Running,
    _orders: Running,
    pub gateway: Running,
    pub base: String,
    http: Client<HttpConnector, Full<Bytes>>,
    h2: Client<HttpConnector, Full<Bytes>>,
    pub admin: String,
}

impl Env {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts everything; `tweak` adjusts the gateway's settings.
    pub async fn start_with(backend: Backend, tweak: Tweak) -> Self {
        Self::start_tweaked(backend, |_| {}, tweak).await
    }

    /// Starts everything; `services` adjusts every service's settings, then `tweak` the
    /// gateway's.
    pub async fn start_tweaked(backend: Backend, services: Tweak, tweak: Tweak) -> Self {
        stockmesh::telemetry::init(stockmesh::telemetry::LogFormat::Human, "stockmesh-test");
        let mut mesh = TestMesh::new(backend).await;
        services(&mut mesh.config);
        let auth = mesh.start(Target::Auth, stockmesh_auth::serve).await;
        let products = mesh
            .start(Target::Products, stockmesh_products::serve)
            .await;
        let inventory = mesh
            .start(Target::Inventory, stockmesh_inventory::serve)
            .await;
        let orders = mesh.start(Target::Orders, stockmesh_orders::serve).await;
        tweak(&mut mesh.config);
        let gateway = mesh.start(Target::Gateway, stockmesh_gateway::serve).await;
        let base = format!("http://{}", gateway.addr);
        let http = Client::builder(TokioExecutor::new()).build_http();
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let mut env = Self {
            mesh,
            _auth: auth,
            products: Some(products),
            _inventory: inventory,
            _orders: orders,
            gateway,
            base,
            http,
            h2,
            admin: String::new(),
        };
        env.admin = env
            .login(TestMesh::ADMIN_EMAIL, TestMesh::ADMIN_PASSWORD)
            .await;
        env
    }

    /// One HTTP/1.1 request to the gateway.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        self.request(&self.http, method, path, headers, body.into())
            .await
    }

    /// A raw gRPC call over h2c (trailers merged into the headers).
    pub async fn h2c(&self, path: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
        let mut all = vec![("content-type", "application/grpc"), ("te", "trailers")];
        all.extend_from_slice(headers);
        self.request(&self.h2, Method::POST, path, &all, body).await
    }

    async fn request(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .unwrap_or_else(|e| panic!("bad request: {e}"));
        let resp = client
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let (parts, body) = resp.into_parts();
        let collected = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{path}: body: {e}"));
        let mut headers = parts.headers;
        // gRPC-web over HTTP/1.1 has no trailers; gRPC over h2 is not sent this way.
        if let Some(t) = collected.trailers() {
            headers.extend(t.clone());
        }
        Resp {
            status: parts.status,
            headers,
            body: collected.to_bytes(),
        }
    }

    /// A request whose response body is read as it streams (HTTP/1.1, or h2c with `h2`).
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
        h2: bool,
    ) -> Streaming {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body.into()))
            .unwrap_or_else(|e| panic!("bad request: {e}"));
        let client = if h2 { &self.h2 } else { &self.http };
        let resp = client
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let (parts, body) = resp.into_parts();
        Streaming {
            status: parts.status,
            headers: parts.headers,
            body,
            buf: BytesMut::new(),
            trailers: None,
            ended: false,
        }
    }

    /// Creates a warehouse (as admin); returns its id.
    pub async fn warehouse(&self) -> String {
        let resp = self
            .rest(
                Method::POST,
                "/v1/warehouses",
                Some(&self.admin),
                Some(json!({"name": unique("Depot"), "address": "1 Road", "latitude": 48.1, "longitude": 11.5})),
            )
            .await;
        resp.ok()["warehouse"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no warehouse id"))
            .to_string()
    }

    /// Restocks `quantity` of a product in a warehouse (as admin); returns the stock JSON.
    pub async fn restock(&self, product: &str, warehouse: &str, quantity: i64) -> Value {
        let resp = self
            .rest(
                Method::POST,
                &format!("/v1/stock/{product}:restock"),
                Some(&self.admin),
                Some(json!({
                    "warehouseId": warehouse,
                    "quantity": quantity.to_string(),
                    "requestId": unique("restock"),
                })),
            )
            .await;
        resp.ok()["stock"].clone()
    }

    /// The gateway's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let resp = self.get("/metrics", None).await;
        assert!(resp.status.is_success(), "{resp:?}");
        String::from_utf8_lossy(&resp.body).into_owned()
    }

    /// A JSON request, optionally with a bearer token.
    pub async fn rest(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let body = match body {
            Some(v) => {
                headers.push(("content-type", "application/json"));
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        self.send(method, path, &headers, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.rest(Method::GET, path, token, None).await
    }

    /// Signs in through the gateway's REST surface; returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let resp = self
            .rest(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        let json = resp.ok();
        assert_eq!(json["tokenType"], "Bearer", "{json}");
        json["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no accessToken in {json}"))
            .to_string()
    }

    /// Creates a user with `role` (as admin) and signs in as them.
    pub async fn user(&self, role: &str) -> String {
        let email = format!("{}@example.com", unique(&role.to_ascii_lowercase()));
        let password = "correct-horse-battery";
        self.rest(
            Method::POST,
            "/v1/users",
            Some(&self.admin),
            Some(json!({
                "email": email,
                "password": password,
                "displayName": role,
                "role": role,
            })),
        )
        .await
        .ok();
        self.login(&email, password).await
    }

    /// Creates a product (as admin) through REST; returns its JSON.
    pub async fn product(&self, name: &str, price_cents: i64) -> Value {
        let resp = self
            .rest(
                Method::POST,
                "/v1/products",
                Some(&self.admin),
                Some(json!({
                    "sku": unique("SKU"),
                    "name": unique(name),
                    "description": "made by a test",
                    "priceCents": price_cents.to_string(),
                })),
            )
            .await;
        resp.ok()["product"].clone()
    }

    /// A plain h2c channel to the gateway (no resilience stack), for tonic clients.
    pub async fn channel(&self) -> tonic::transport::Channel {
        TestMesh::channel(self.gateway.addr).await
    }

    /// Stops the products service (as if it crashed); returns its address.
    pub async fn stop_products(&mut self) -> SocketAddr {
        let products = self
            .products
            .take()
            .unwrap_or_else(|| panic!("products not running"));
        let addr = products.addr;
        products.stop().await;
        addr
    }

    /// Brings products back on `addr`.
    pub async fn restart_products(&mut self, addr: SocketAddr) {
        let running = self
            .mesh
            .restart_on(Target::Products, addr, stockmesh_products::serve)
            .await;
        self.products = Some(running);
    }
}

/// One gRPC message frame.
pub fn frame(msg: &impl prost::Message) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0);
    b.put_u32(u32::try_from(msg.encoded_len()).unwrap_or(u32::MAX));
    msg.encode(&mut b).unwrap_or_else(|e| panic!("encode: {e}"));
    b.freeze()
}

/// Splits a gRPC-web response body into its messages and its trailers.
pub fn grpc_web_frames(mut body: Bytes) -> (Vec<Bytes>, HeaderMap) {
    let mut messages = Vec::new();
    let mut trailers = HeaderMap::new();
    while body.len() >= 5 {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let payload = body.split_to(len);
        if flag & 0x80 != 0 {
            for line in String::from_utf8_lossy(&payload).split("\r\n") {
                if let Some((k, v)) = line.split_once(':')
                    && let (Ok(k), Ok(v)) = (
                        http::HeaderName::from_bytes(k.trim().as_bytes()),
                        http::HeaderValue::from_str(v.trim()),
                    )
                {
                    trailers.insert(k, v);
                }
            }
        } else {
            messages.push(payload);
        }
    }
    assert!(body.is_empty(), "trailing bytes in gRPC-web body");
    (messages, trailers)
}

/// Decodes a `grpc-web-text` body: base64 chunks, each padded on its own.
pub fn decode_grpc_web_text(text: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut current = Vec::new();
    for quad in text.chunks(4) {
        current.extend_from_slice(quad);
        if quad.contains(&b'=') {
            out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&current)
                    .unwrap_or_else(|e| panic!("bad base64: {e}")),
            );
            current.clear();
        }
    }
    if !current.is_empty() {
        out.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&current)
                .unwrap_or_else(|e| panic!("bad base64: {e}")),
        );
    }
    out
}

/// A response being read as it streams.
pub struct Streaming {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    /// Bytes received and not yet taken.
    pub buf: BytesMut,
    pub trailers: Option<HeaderMap>,
    pub ended: bool,
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads more of the body into `buf`; false once it ended or `until` passed.
    pub async fn fill(&mut self, until: tokio::time::Instant) -> bool {
        if self.ended {
            return false;
        }
        match tokio::time::timeout_at(until, self.body.frame()).await {
            Err(_) => false,
            Ok(None) => {
                self.ended = true;
                false
            }
            Ok(Some(Ok(frame))) => {
                match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => self.trailers = frame.into_trailers().ok(),
                }
                true
            }
            Ok(Some(Err(e))) => panic!("stream failed: {e}"),
        }
    }

    /// Takes the next piece `split` finds at the front of `buf` (it returns the length
    /// to take), reading as needed; panics after `within`.
    #[track_caller]
    pub fn next_piece(
        &mut self,
        within: std::time::Duration,
        split: fn(&[u8]) -> Option<usize>,
    ) -> impl std::future::Future<Output = Bytes> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let until = tokio::time::Instant::now() + within;
            loop {
                if let Some(n) = split(&self.buf) {
                    return self.buf.split_to(n).freeze();
                }
                if !self.fill(until).await {
                    panic!(
                        "{caller}: no complete piece within {within:?} (ended: {}); have {:?}",
                        self.ended,
                        String::from_utf8_lossy(&self.buf)
                    );
                }
            }
        }
    }

    /// The next length-prefixed frame (gRPC, gRPC-web, Connect): flags and payload.
    pub async fn next_frame(&mut self, within: std::time::Duration) -> (u8, Bytes) {
        let mut frame = self.next_piece(within, frame_len).await;
        let flags = frame.get_u8();
        frame.advance(4);
        (flags, frame)
    }

    /// The next SSE event (up to its blank line), without the blank line.
    pub async fn next_event(&mut self, within: std::time::Duration) -> String {
        let event = self.next_piece(within, sse_len).await;
        String::from_utf8_lossy(&event).trim_end().to_string()
    }

    /// The next NDJSON line.
    pub async fn next_line(&mut self, within: std::time::Duration) -> Value {
        let line = self.next_piece(within, line_len).await;
        serde_json::from_slice(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }
}

fn frame_len(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..5)?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    (buf.len() >= 5 + len).then_some(5 + len)
}

fn sse_len(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2)
}

fn line_len(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|b| *b == b'\n').map(|p| p + 1)
}

/// An SSE event's fields: (id, event, data).
pub fn sse_fields(event: &str) -> (Option<String>, Option<String>, Option<Value>) {
    let (mut id, mut name, mut data) = (None, None, None);
    for line in event.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("event: ") {
            name = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(
                serde_json::from_str(v).unwrap_or_else(|e| panic!("data not JSON ({e}): {v}")),
            );
        }
    }
    (id, name, data)
}

/// The sum of a Prometheus series over the lines containing every one of `labels`.
pub fn series_total(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}
