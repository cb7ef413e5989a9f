//! Edge behaviour: token checks before any service, rate limits, CORS, request ids,
//! readiness, metrics and the OpenAPI document.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::Value;
use stockmesh::Target;
use stockmesh::authn::{AUDIENCE, Claims, ISSUER};
use stockmesh::proto::products::v1 as pb;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::testing::{Backend, with_token};
use stockmesh_auth::entity::signing_key;
use tonic::Code;

use crate::support::Env;

fn claims(sub: &str, exp_in: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: sub.into(),
        email: "admin@stockmesh.test".into(),
        role: "ROLE_ADMIN".into(),
        exp: now + exp_in,
        iat: now - 3600,
        jti: uuid::Uuid::new_v4().to_string(),
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
    }
}

fn sign(kid: &str, key: &EncodingKey, claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// The key auth signs with, read from its database (as an attacker with a dump would).
async fn real_key(env: &Env) -> (String, EncodingKey) {
    let db = sea_orm::Database::connect(env.mesh.database_url(Target::Auth))
        .await
        .unwrap();
    let row = signing_key::Entity::find()
        .order_by_desc(signing_key::Column::Kid)
        .one(&db)
        .await
        .unwrap()
        .expect("auth stored a signing key");
    db.close().await.unwrap();
    let der = STANDARD.decode(row.private_key).unwrap();
    (row.kid, EncodingKey::from_ed_der(&der))
}

/// Malformed, forged and expired tokens get 401 / UNAUTHENTICATED from the gateway itself:
/// with products stopped, they still get 401, not 503.
pub async fn bad_tokens_are_refused_at_the_edge(backend: Backend) {
    let mut env = Env::start(backend).await;
    let jwks = env.get("/v1/auth/jwks", None).await.ok();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    let (real_kid, real) = real_key(&env).await;
    assert_eq!(kid, real_kid);
    let other = SigningKey::from_bytes(&[7u8; 32]);
    let other = EncodingKey::from_ed_der(other.to_pkcs8_der().unwrap().as_bytes());
    let forged = sign(&kid, &other, &claims("someone", 600));
    let expired = sign(&kid, &real, &claims("someone", -60));
    let valid = sign(&kid, &real, &claims("someone", 600));

    env.stop_products().await;
    for (what, header) in [
        ("malformed header", "Token abc".to_string()),
        ("garbage token", "Bearer not-a-jwt".to_string()),
        ("forged signature", format!("Bearer {forged}")),
        ("expired", format!("Bearer {expired}")),
    ] {
        let resp = env
            .send(
                Method::GET,
                "/v1/products/x",
                &[("authorization", &header)],
                "",
            )
            .await;
        let msg = resp.assert_error(401, 16);
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{what}");
        if what == "expired" {
            assert!(msg.contains("expired"), "{msg}");
        }
    }
    // A valid token passes the edge and meets the stopped service: 503, quickly.
    let started = Instant::now();
    env.get("/v1/products/x", Some(&valid))
        .await
        .assert_error(503, 14);
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");

    // The same over gRPC.
    let mut client = ProductServiceClient::new(env.channel().await);
    let err = client
        .get_product(with_token(
            pb::GetProductRequest { id: "x".into() },
            &forged,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .get_product(with_token(pb::GetProductRequest { id: "x".into() }, &valid))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

/// Over the limit: 429 + Retry-After on REST, RESOURCE_EXHAUSTED on gRPC; signed-in users
/// have their own bucket.
pub async fn rate_limits(backend: Backend) {
    let env = Env::start_with(backend, |c| {
        c.gateway.rate_limit_rps = 1;
        c.gateway.rate_limit_burst = 3;
    })
    .await;
    let mut limited = None;
    for _ in 0..10 {
        let resp = env.get("/v1/products", None).await;
        if resp.status.as_u16() == 429 {
            limited = Some(resp);
            break;
        }
        resp.ok();
    }
    let resp = limited.expect("anonymous requests from one IP are limited");
    resp.assert_error(429, 8);
    let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");

    let mut client = ProductServiceClient::new(env.channel().await);
    let mut exhausted = false;
    for _ in 0..10 {
        match client
            .list_products(pb::ListProductsRequest::default())
            .await
        {
            Err(s) if s.code() == Code::ResourceExhausted => {
                exhausted = true;
                break;
            }
            Err(s) => panic!("unexpected {s:?}"),
            Ok(_) => {}
        }
    }
    assert!(exhausted, "gRPC shares the IP's bucket");

    // The admin is counted per user, not per IP.
    env.get("/v1/products", Some(&env.admin)).await.ok();
}

/// Preflight answered for allowed origins only; gRPC status headers exposed.
pub async fn cors(backend: Backend) {
    let env = Env::start_with(backend, |c| {
        c.gateway.cors_origins = vec!["https://shop.example".into()];
    })
    .await;
    let path = "/stockmesh.products.v1.ProductService/GetProduct";
    let preflight = env
        .send(
            Method::OPTIONS,
            path,
            &[
                ("origin", "https://shop.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,x-grpc-web,x-user-agent,authorization",
                ),
            ],
            "",
        )
        .await;
    assert!(preflight.status.is_success(), "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("x-grpc-web") && allowed.contains("authorization"),
        "{allowed}"
    );
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );

    let evil = env
        .send(
            Method::OPTIONS,
            path,
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
            "",
        )
        .await;
    assert!(
        evil.header("access-control-allow-origin").is_none(),
        "{evil:?}"
    );

    let resp = env
        .send(
            Method::GET,
            "/v1/products",
            &[("origin", "https://shop.example")],
            "",
        )
        .await;
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let exposed = resp
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );
}

/// /readyz names every upstream; 503 while products is down, 200 once it is back. An
/// upstream that is down answers 503 / UNAVAILABLE, never hangs.
pub async fn readiness_follows_upstreams(backend: Backend) {
    let mut env = Env::start(backend).await;
    let ready = env.get("/readyz", None).await.ok();
    for t in ["auth", "products", "inventory", "orders"] {
        assert_eq!(ready["upstreams"][t], "SERVING", "{ready}");
    }
    assert_eq!(ready["ready"], true);
    let product = env.product("Desk", 100).await;
    let id = product["id"].as_str().unwrap().to_string();

    let addr = env.stop_products().await;
    let resp = env.get("/readyz", None).await;
    let body = resp.json();
    assert_eq!(resp.status.as_u16(), 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_ne!(body["upstreams"]["products"], "SERVING", "{body}");
    assert_eq!(body["upstreams"]["auth"], "SERVING", "{body}");
    env.get(&format!("/v1/products/{id}"), None)
        .await
        .assert_error(503, 14);

    env.restart_products(addr).await;
    // The breaker may hold the upstream open for a while after it returns: /readyz is
    // the signal being tested, so poll it (bounded).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let resp = env.get("/readyz", None).await;
        if resp.status.is_success() {
            assert_eq!(resp.json()["upstreams"]["products"], "SERVING");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again: {}",
            resp.json()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    env.get(&format!("/v1/products/{id}"), None).await.ok();
}

/// /healthz, request ids, /metrics and /openapi.json.
pub async fn operations_endpoints(backend: Backend) {
    let env = Env::start(backend).await;
    assert_eq!(env.get("/healthz", None).await.ok()["status"], "ok");

    let resp = env
        .send(
            Method::GET,
            "/v1/products",
            &[("x-request-id", "req-abc.123")],
            "",
        )
        .await;
    assert_eq!(resp.header("x-request-id"), Some("req-abc.123"));
    let resp = env.get("/v1/products", None).await;
    let generated = resp.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    let resp = env
        .send(
            Method::GET,
            "/v1/products",
            &[("x-request-id", "bad id with spaces")],
            "",
        )
        .await;
    assert!(uuid::Uuid::parse_str(resp.header("x-request-id").unwrap()).is_ok());
    env.get("/v1/products/missing", None)
        .await
        .assert_error(404, 5);

    let metrics = env.get("/metrics", None).await;
    assert!(metrics.status.is_success());
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(text.contains("gateway_requests_total"), "{text}");
    assert!(
        text.contains(r#"route="GET /v1/products/{id}""#) && text.contains(r#"status="404""#),
        "{text}"
    );
    assert!(
        text.contains("gateway_request_duration_seconds_bucket"),
        "{text}"
    );

    let doc: Value = env.get("/openapi.json", None).await.ok();
    assert_eq!(stockmesh_gateway::openapi::lint(&doc), Vec::<String>::new());
    assert!(doc["paths"]["/v1/orders/{id}:cancel"]["post"].is_object());
}

/// Shutdown starts with a drain: the gateway says NOT_SERVING (its own health) and
/// `/readyz` answers 503 at once, while requests still get answers for the drain delay.
pub async fn a_draining_gateway_is_not_ready_but_still_serves(backend: Backend) {
    let env = Env::start_with(backend, |c| c.drain_delay_ms = 5_000).await;
    let product = env.product("Lamp", 100).await;
    let id = product["id"].as_str().unwrap().to_string();
    assert_eq!(env.get("/readyz", None).await.status.as_u16(), 200);

    // The readiness signal: the gateway's own health Watch reports NOT_SERVING.
    let mut watch = tonic_health::pb::health_client::HealthClient::new(env.channel().await)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: Target::Gateway.grpc_service().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    env.gateway.shutdown.trigger();
    let started = Instant::now();
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(
        next.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );

    let ready = env.get("/readyz", None).await;
    assert_eq!(ready.status.as_u16(), 503);
    assert_eq!(ready.json()["draining"], true);
    // Still answering: REST through to a service, and the liveness probe.
    let got = env.get(&format!("/v1/products/{id}"), None).await.ok();
    assert_eq!(got["product"]["id"], id);
    assert_eq!(env.get("/healthz", None).await.status.as_u16(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "checked within the drain delay"
    );
}
