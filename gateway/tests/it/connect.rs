//! The Connect protocol through the gateway: unary POST (JSON and protobuf), GET for
//! reads, errors with the spec's HTTP status and code, `Connect-Timeout-Ms`, server
//! streaming envelopes and the end-of-stream message, CORS for the Connect headers.

use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::Method;
use prost::Message;
use serde_json::{Value, json};
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::products::v1 as pb;
use stockmesh::testing::Backend;

use crate::streams::stocked;
use crate::support::{Env, Resp, series_total};

const GET_PRODUCT: &str = "/stockmesh.products.v1.ProductService/GetProduct";
const WATCH_STOCK: &str = "/stockmesh.inventory.v1.InventoryService/WatchStock";
const WAIT: Duration = Duration::from_secs(5);

fn connect_error(resp: &Resp, http: u16, code: &str) -> String {
    let json = resp.json();
    assert_eq!(resp.status.as_u16(), http, "{json}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(json["code"], code, "{json}");
    json["message"].as_str().unwrap_or_default().to_string()
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

pub async fn connect_unary_and_get(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("Kettle", 2100).await;
    let id = product["id"].as_str().unwrap().to_string();
    let json_ct = [
        ("content-type", "application/json"),
        ("connect-protocol-version", "1"),
    ];

    // POST JSON.
    let body = json!({"id": id}).to_string();
    let resp = env
        .send(Method::POST, GET_PRODUCT, &json_ct, body.clone())
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json()["product"]["name"], product["name"]);
    assert_eq!(resp.json()["product"]["priceCents"], "2100");

    // POST protobuf.
    let resp = env
        .send(
            Method::POST,
            GET_PRODUCT,
            &[("content-type", "application/proto")],
            pb::GetProductRequest { id: id.clone() }.encode_to_vec(),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/proto"));
    let reply = pb::GetProductResponse::decode(resp.body.clone()).unwrap();
    assert_eq!(reply.product.unwrap().id, id);

    // GET, JSON percent-encoded and protobuf in base64.
    let message: String = url_encode(&body);
    let resp = env
        .get(
            &format!("{GET_PRODUCT}?connect=v1&encoding=json&message={message}"),
            None,
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["product"]["id"], id.as_str());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(pb::GetProductRequest { id: id.clone() }.encode_to_vec());
    let resp = env
        .get(
            &format!("{GET_PRODUCT}?connect=v1&encoding=proto&base64=1&message={b64}"),
            None,
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        pb::GetProductResponse::decode(resp.body.clone())
            .unwrap()
            .product
            .unwrap()
            .id,
        id
    );
    // Writes cannot be called with GET.
    let resp = env
        .get(
            "/stockmesh.products.v1.ProductService/CreateProduct?encoding=json&message=%7B%7D",
            Some(&env.admin),
        )
        .await;
    connect_error(&resp, 405, "unimplemented");
    assert_eq!(resp.header("allow"), Some("POST"));

    // Errors: the spec's HTTP status and code name.
    let missing = json!({"id": "does-not-exist"}).to_string();
    let resp = env
        .send(Method::POST, GET_PRODUCT, &json_ct, missing.clone())
        .await;
    connect_error(&resp, 404, "not_found");
    let resp = env
        .send(
            Method::POST,
            GET_PRODUCT,
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer forged"),
            ],
            body.clone(),
        )
        .await;
    connect_error(&resp, 401, "unauthenticated");
    let customer = env.user("ROLE_CUSTOMER").await;
    let auth = format!("Bearer {customer}");
    let resp = env
        .send(
            Method::POST,
            "/stockmesh.products.v1.ProductService/DeleteProduct",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            body.clone(),
        )
        .await;
    connect_error(&resp, 403, "permission_denied");
    let resp = env
        .send(
            Method::POST,
            GET_PRODUCT,
            &json_ct,
            r#"{"id": 5, "colour": 1}"#,
        )
        .await;
    let message = connect_error(&resp, 400, "invalid_argument");
    assert!(
        message.contains("id") || message.contains("colour"),
        "{message}"
    );
    let resp = env
        .send(
            Method::POST,
            GET_PRODUCT,
            &[("content-type", "application/proto")],
            vec![0xff, 0xff],
        )
        .await;
    connect_error(&resp, 400, "invalid_argument");
    let resp = env
        .send(
            Method::POST,
            GET_PRODUCT,
            &[("content-type", "application/xml")],
            "<id/>",
        )
        .await;
    assert_eq!(resp.status, 415, "{resp:?}");
    let resp = env
        .send(
            Method::POST,
            GET_PRODUCT,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            body.clone(),
        )
        .await;
    let message = connect_error(&resp, 501, "unimplemented");
    assert!(message.contains("identity"), "{message}");
    // A unary content type on a streaming method.
    let resp = env.send(Method::POST, WATCH_STOCK, &json_ct, "{}").await;
    assert_eq!(resp.status, 415, "{resp:?}");

    // Connect-Timeout-Ms becomes the call's deadline: 0 has passed already.
    let resp = env
        .send(
            Method::POST,
            GET_PRODUCT,
            &[
                ("content-type", "application/json"),
                ("connect-timeout-ms", "0"),
            ],
            body.clone(),
        )
        .await;
    connect_error(&resp, 504, "deadline_exceeded");
    let resp = env
        .send(
            Method::POST,
            GET_PRODUCT,
            &[
                ("content-type", "application/json"),
                ("connect-timeout-ms", "soon"),
            ],
            body.clone(),
        )
        .await;
    connect_error(&resp, 400, "invalid_argument");
    let resp = env
        .send(
            Method::POST,
            GET_PRODUCT,
            &[
                ("content-type", "application/json"),
                ("connect-timeout-ms", "5000"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");

    // REST on its own paths is unchanged.
    let rest = env.get(&format!("/v1/products/{id}"), None).await.ok();
    assert_eq!(
        rest["product"]["supplierId"], "",
        "REST keeps default fields: {rest}"
    );

    // Browsers: a preflight for the Connect headers is allowed.
    let resp = env
        .send(
            Method::OPTIONS,
            GET_PRODUCT,
            &[
                ("origin", "https://shop.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,connect-protocol-version,connect-timeout-ms",
                ),
            ],
            Bytes::new(),
        )
        .await;
    assert!(resp.status.is_success(), "{resp:?}");
    let allowed = resp.header("access-control-allow-headers").unwrap_or("");
    assert!(allowed.contains("connect-protocol-version"), "{resp:?}");
    assert!(allowed.contains("connect-timeout-ms"), "{resp:?}");
}

fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Envelopes out, one per message as it happens, then the end-of-stream message.
pub async fn connect_streams(backend: Backend) {
    let env = Env::start(backend).await;
    let (pid, wid) = stocked(&env, 4).await;
    let request = json!({"productIds": [pid]}).to_string();

    let mut stream = env
        .open(
            Method::POST,
            WATCH_STOCK,
            &[
                ("content-type", "application/connect+json"),
                ("connect-protocol-version", "1"),
            ],
            envelope(0, request.as_bytes()),
            false,
        )
        .await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.header("content-type"),
        Some("application/connect+json")
    );
    let (flags, first) = stream.next_frame(WAIT).await;
    assert_eq!(flags, 0);
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(first["stock"]["totalOnHand"], "4", "{first}");
    assert!(
        first.get("eventId").is_none(),
        "defaults are left out: {first}"
    );

    let mut proto = env
        .open(
            Method::POST,
            WATCH_STOCK,
            &[("content-type", "application/connect+proto")],
            envelope(
                0,
                &inv::WatchStockRequest {
                    product_ids: vec![pid.clone()],
                    after_event_id: String::new(),
                }
                .encode_to_vec(),
            ),
            false,
        )
        .await;
    assert_eq!(
        proto.header("content-type"),
        Some("application/connect+proto")
    );
    let (_, first) = proto.next_frame(WAIT).await;
    assert_eq!(
        inv::WatchStockResponse::decode(first)
            .unwrap()
            .stock
            .unwrap()
            .total_on_hand,
        4
    );

    env.restock(&pid, &wid, 3).await;
    let (flags, change) = stream.next_frame(WAIT).await;
    assert_eq!(flags, 0);
    let change: Value = serde_json::from_slice(&change).unwrap();
    assert_eq!(change["stock"]["totalOnHand"], "7", "{change}");
    assert_eq!(change["cause"], "STOCK_CHANGE_CAUSE_RESTOCK");
    let (_, change_proto) = proto.next_frame(WAIT).await;
    let change_proto = inv::WatchStockResponse::decode(change_proto).unwrap();
    assert_eq!(change["eventId"], change_proto.event_id.as_str());

    // Connect-Timeout-Ms ends a stream with deadline_exceeded in the end-of-stream
    // message, and the access metrics record that status when it ends.
    let route = format!("route=\"{WATCH_STOCK}\"");
    let labels = [
        "protocol=\"connect\"",
        route.as_str(),
        "status=\"DeadlineExceeded\"",
    ];
    let before = series_total(&env.metrics_text().await, "gateway_requests_total", &labels);
    let mut timed = env
        .open(
            Method::POST,
            WATCH_STOCK,
            &[
                ("content-type", "application/connect+json"),
                ("connect-timeout-ms", "400"),
            ],
            envelope(0, request.as_bytes()),
            false,
        )
        .await;
    let (flags, _) = timed.next_frame(WAIT).await;
    assert_eq!(flags, 0);
    let (flags, end) = timed.next_frame(WAIT).await;
    assert_eq!(flags, 2);
    let end: Value = serde_json::from_slice(&end).unwrap();
    assert_eq!(end["error"]["code"], "deadline_exceeded", "{end}");
    drop(timed);
    let deadline = tokio::time::Instant::now() + WAIT;
    while series_total(&env.metrics_text().await, "gateway_requests_total", &labels) < before + 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no DeadlineExceeded stream in the metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Errors of a stream are in its end-of-stream message, with HTTP 200.
    let resp = env
        .send(
            Method::POST,
            "/stockmesh.orders.v1.OrderService/WatchOrders",
            &[("content-type", "application/connect+json")],
            envelope(0, b"{}"),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let end = end_of_stream(&resp.body);
    assert_eq!(end["error"]["code"], "unauthenticated", "{end}");
    let too_many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
    let resp = env
        .send(
            Method::POST,
            WATCH_STOCK,
            &[("content-type", "application/connect+json")],
            envelope(0, json!({"productIds": too_many}).to_string().as_bytes()),
        )
        .await;
    let end = end_of_stream(&resp.body);
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
    assert!(
        end["error"]["message"]
            .as_str()
            .unwrap()
            .contains("product_ids"),
        "{end}"
    );
    let resp = env
        .send(
            Method::POST,
            WATCH_STOCK,
            &[
                ("content-type", "application/connect+json"),
                ("connect-content-encoding", "gzip"),
            ],
            envelope(0, b"{}"),
        )
        .await;
    assert_eq!(end_of_stream(&resp.body)["error"]["code"], "unimplemented");
}

/// The end-of-stream message of a whole streaming body (its last envelope, flag 2).
fn end_of_stream(body: &Bytes) -> Value {
    let mut rest = body.clone();
    let mut last = None;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let flags = rest[0];
        let payload = rest.slice(5..5 + len);
        rest = rest.slice(5 + len..);
        last = Some((flags, payload));
    }
    let (flags, payload) = last.unwrap_or_else(|| panic!("no envelope in {body:?}"));
    assert_eq!(flags, 2, "the last envelope ends the stream");
    serde_json::from_slice(&payload).unwrap()
}
