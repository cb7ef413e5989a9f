//! Server streaming proxied through the gateway: gRPC (h2c) and gRPC-web (binary and
//! text) see each message as it happens, not at the end; a client that goes away cancels
//! the upstream's stream; the access metrics record a stream's status when it ends.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::Method;
use prost::Message;
use stockmesh::proto::inventory::v1 as pb;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::testing::Backend;
use tokio::sync::Mutex;

use crate::support::{Env, decode_grpc_web_text, frame, series_total};

const WATCH_STOCK: &str = "/stockmesh.inventory.v1.InventoryService/WatchStock";
const WAIT: Duration = Duration::from_secs(5);

/// The upstream-side cancel count is process-wide: tests that drop WatchStock streams on
/// purpose and count the cancels run one at a time.
pub static CANCELS: Mutex<()> = Mutex::const_new(());

/// A product with stock in one warehouse: (product id, warehouse id).
pub async fn stocked(env: &Env, quantity: i64) -> (String, String) {
    let product = env.product("Watched", 1000).await;
    let pid = product["id"].as_str().unwrap_or_default().to_string();
    let wid = env.warehouse().await;
    env.restock(&pid, &wid, quantity).await;
    (pid, wid)
}

pub async fn grpc_and_grpc_web_streams(backend: Backend) {
    let env = Env::start(backend).await;
    let (pid, wid) = stocked(&env, 5).await;

    // gRPC, a generated client: the current stock first, then each change as it happens.
    let mut client = InventoryServiceClient::new(env.channel().await);
    let mut stream = client
        .watch_stock(pb::WatchStockRequest {
            product_ids: vec![pid.clone()],
            after_event_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.event_id, "");
    assert_eq!(first.stock.as_ref().unwrap().total_on_hand, 5);

    // gRPC-web binary and text over HTTP/1.1, read frame by frame.
    let request = frame(&pb::WatchStockRequest {
        product_ids: vec![pid.clone()],
        after_event_id: String::new(),
    });
    let mut binary = env
        .open(
            Method::POST,
            WATCH_STOCK,
            &[
                ("content-type", "application/grpc-web+proto"),
                ("x-grpc-web", "1"),
            ],
            request.clone(),
            false,
        )
        .await;
    assert!(binary.status.is_success(), "{}", binary.status);
    let (flags, payload) = binary.next_frame(WAIT).await;
    assert_eq!(flags, 0);
    assert_eq!(
        pb::WatchStockResponse::decode(payload)
            .unwrap()
            .stock
            .unwrap()
            .total_on_hand,
        5
    );
    let mut text = env
        .open(
            Method::POST,
            WATCH_STOCK,
            &[
                ("content-type", "application/grpc-web-text"),
                ("accept", "application/grpc-web-text"),
            ],
            STANDARD.encode(&request),
            false,
        )
        .await;
    assert!(text.status.is_success(), "{}", text.status);
    let first_text = text_message(&mut text, 0).await;
    assert_eq!(first_text.stock.unwrap().total_on_hand, 5);

    // One change reaches all three while their streams stay open.
    env.restock(&pid, &wid, 2).await;
    let change = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!change.event_id.is_empty());
    assert_eq!(change.stock.as_ref().unwrap().total_on_hand, 7);
    assert_eq!(change.cause, pb::StockChangeCause::Restock as i32);
    let (_, payload) = binary.next_frame(WAIT).await;
    assert_eq!(pb::WatchStockResponse::decode(payload).unwrap(), change);
    assert_eq!(text_message(&mut text, 1).await, change);

    // A client that goes away cancels the upstream's stream.
    let _one = CANCELS.lock().await;
    let canceled = |m: &str| {
        series_total(
            m,
            "grpc_server_handled_total",
            &["grpc_method=\"WatchStock\"", "grpc_code=\"Canceled\""],
        )
    };
    let incomplete = |m: &str| {
        series_total(
            m,
            "gateway_requests_total",
            &[
                "protocol=\"grpc-web\"",
                &format!("route=\"{WATCH_STOCK}\""),
                "status=\"incomplete\"",
            ],
        )
    };
    let before = env.metrics_text().await;
    drop(binary);
    drop(text);
    drop(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = env.metrics_text().await;
        // Three streams dropped: three upstream cancels, two of them gRPC-web.
        if canceled(&now) >= canceled(&before) + 3.0
            && incomplete(&now) >= incomplete(&before) + 2.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream cancels {} -> {}, gateway incomplete {} -> {}",
            canceled(&before),
            canceled(&now),
            incomplete(&before),
            incomplete(&now)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `n`-th message (from 0) of a `grpc-web-text` stream: the whole text so far is
/// decoded each time (every chunk is base64 of its own).
async fn text_message(stream: &mut crate::support::Streaming, n: usize) -> pb::WatchStockResponse {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let mut decoded = Bytes::from(decode_grpc_web_text(&stream.buf));
        let mut seen = 0;
        while decoded.len() >= 5 {
            let len = u32::from_be_bytes([decoded[1], decoded[2], decoded[3], decoded[4]]) as usize;
            if decoded.len() < 5 + len {
                break;
            }
            if seen == n {
                return pb::WatchStockResponse::decode(decoded.slice(5..5 + len)).unwrap();
            }
            seen += 1;
            let _ = decoded.split_to(5 + len);
        }
        assert!(
            stream.fill(until).await,
            "no gRPC-web-text message {n} in time"
        );
    }
}

/// A stream is not a call that must answer within the upstream timeout: with the
/// gateway's default deadline at 300 ms, streams through it (proxied and translated)
/// still deliver a change made a second later.
pub async fn streams_outlive_the_upstream_timeout(backend: Backend) {
    let env = Env::start_with(backend, |c| c.resilience.upstream_timeout_ms = 300).await;
    let (pid, wid) = stocked(&env, 1).await;
    let mut client = InventoryServiceClient::new(env.channel().await);
    let mut stream = client
        .watch_stock(pb::WatchStockRequest {
            product_ids: vec![pid.clone()],
            after_event_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut sse = env
        .open(
            Method::GET,
            &format!("/v1/stock:watch?productIds={pid}"),
            &[("accept", "text/event-stream")],
            "",
            false,
        )
        .await;
    sse.next_event(WAIT).await;
    // Time passing is the point here, not a wait for something to happen.
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.restock(&pid, &wid, 1).await;
    let change = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(change.stock.unwrap().total_on_hand, 2);
    let event = sse.next_event(WAIT).await;
    assert!(event.contains("\"totalOnHand\":\"2\""), "{event}");
}
