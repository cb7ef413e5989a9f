//! Operational HTTP endpoints: `/healthz` (the process answers), `/readyz` (every upstream
//! says SERVING, and the gateway is not draining), `/metrics` (Prometheus text) and
//! `/openapi.json`.
//!
//! From the moment shutdown starts `/readyz` answers 503 at once (before any upstream is
//! asked), so the kubelet and load balancers stop sending new requests during the drain
//! delay, while the gateway still serves the ones that arrive.
//!
//! Readiness asks each upstream's `grpc.health.v1` through the same channel requests use,
//! so it reports what the gateway can actually reach — including an open circuit breaker —
//! and it is bounded by a short deadline so a dead upstream never makes the probe hang.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use stockmesh::Target;
use stockmesh::client::UpstreamChannel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Deadline of one upstream health check made by `/readyz`.
const READY_CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the operational endpoints look at.
pub struct Ops<'a> {
    pub upstreams: &'a HashMap<Target, UpstreamChannel>,
    pub openapi: &'a Bytes,
    /// Shutdown has started.
    pub draining: bool,
}

/// Answers `path` if it is an operational endpoint (GET only).
pub async fn handle(state: Ops<'_>, path: &str) -> Option<Response<Body>> {
    Some(match path {
        "/healthz" => json(
            StatusCode::OK,
            serde_json::json!({"status": "ok"}).to_string(),
        ),
        "/readyz" => readyz(&state).await,
        "/metrics" => {
            let mut resp = Response::new(Body::from(stockmesh::metrics::render()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(stockmesh::metrics::CONTENT_TYPE),
            );
            resp
        }
        "/openapi.json" => json(StatusCode::OK, state.openapi.clone()),
        _ => return None,
    })
}

fn json(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn readyz(state: &Ops<'_>) -> Response<Body> {
    if state.draining {
        let body = serde_json::json!({ "ready": false, "draining": true });
        return json(StatusCode::SERVICE_UNAVAILABLE, body.to_string());
    }
    let checks = Target::SERVICES.map(|target| async move {
        let status = match state.upstreams.get(&target) {
            Some(channel) => check(channel.clone(), target).await,
            None => "NO_CHANNEL".to_string(),
        };
        (target, status)
    });
    let results = futures::future::join_all(checks).await;
    let ready = results.iter().all(|(_, s)| s == "SERVING");
    let upstreams: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(t, s)| (t.name().to_string(), serde_json::Value::String(s)))
        .collect();
    let body = serde_json::json!({ "ready": ready, "upstreams": upstreams });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, body.to_string())
}

/// The upstream's serving status name, or `UNAVAILABLE: <why>` when it cannot be asked.
async fn check(channel: stockmesh::client::UpstreamChannel, target: Target) -> String {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: target.grpc_service().to_string(),
    });
    request.set_timeout(READY_CHECK_TIMEOUT);
    let mut client = HealthClient::new(channel);
    match tokio::time::timeout(READY_CHECK_TIMEOUT, client.check(request)).await {
        Ok(Ok(resp)) => ServingStatus::try_from(resp.into_inner().status)
            .map_or("UNKNOWN", |s| s.as_str_name())
            .to_string(),
        Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
        Err(_) => "DEADLINE_EXCEEDED".to_string(),
    }
}
