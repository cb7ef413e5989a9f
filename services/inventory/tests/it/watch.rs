//! WatchStock: the snapshot first, then every change of a watched product within a
//! second; validation; a watcher that never reads ends RESOURCE_EXHAUSTED (not unbounded
//! memory); draining ends streams UNAVAILABLE; resuming with after_event_id gets the
//! changes missed. Embedded event bus (no NATS).

use std::time::Duration;

use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::inventory::v1::{self as pb, StockChangeCause as Cause};
use stockmesh::testing::Backend;
use tonic::Code;
use tonic::codec::Streaming;

use crate::common::{Env, expect_code};

stockmesh::db_tests!(
    watch_sends_the_snapshot_then_changes_within_a_second,
    watch_validates_product_ids,
    a_watcher_that_never_reads_ends_resource_exhausted,
    draining_ends_watch_streams_unavailable,
    resuming_after_an_event_gets_the_changes_missed,
);

const SECOND: Duration = Duration::from_secs(1);
/// For waits that are not the latency under test.
const PATIENCE: Duration = Duration::from_secs(10);

async fn watch(env: &Env, products: &[&str], after: &str) -> Streaming<pb::WatchStockResponse> {
    env.inv()
        .watch_stock(pb::WatchStockRequest {
            product_ids: products.iter().map(|p| p.to_string()).collect(),
            after_event_id: after.to_string(),
        })
        .await
        .unwrap_or_else(|s| panic!("watch: {s:?}"))
        .into_inner()
}

/// The next message within `within`.
async fn next(
    stream: &mut Streaming<pb::WatchStockResponse>,
    within: Duration,
) -> pb::WatchStockResponse {
    match tokio::time::timeout(within, stream.message()).await {
        Ok(Ok(Some(m))) => m,
        Ok(other) => panic!("stream ended: {other:?}"),
        Err(_) => panic!("no message within {within:?}"),
    }
}

/// The status the stream ends with (messages before it are skipped).
async fn end(stream: &mut Streaming<pb::WatchStockResponse>) -> tonic::Status {
    let wait = async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended without a status"),
                Err(s) => return s,
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("stream did not end"))
}

fn summary(m: &pb::WatchStockResponse) -> (String, i64, i64, Cause) {
    let s = m.stock.clone().unwrap_or_default();
    (
        s.product_id,
        s.total_on_hand,
        s.total_reserved,
        Cause::try_from(m.cause).unwrap_or(Cause::Unspecified),
    )
}

async fn watch_sends_the_snapshot_then_changes_within_a_second(backend: Backend) {
    let env = Env::start_with(backend, |c| c.inventory.low_stock_threshold = 3).await;
    let p = env.product("p").await;
    let q = env.product("q").await;
    let never = env.product("never-stocked").await;
    let a = env.warehouse("a", 0.0, 0.0).await;
    let b = env.warehouse("b", 0.0, 1.0).await;
    env.restock(&p, &a, 10).await;
    env.restock(&p, &b, 2).await;
    env.restock(&q, &a, 5).await;

    let mut stream = watch(&env, &[&p, &never, &p], "").await;
    let first = next(&mut stream, SECOND).await;
    assert_eq!(summary(&first), (p.clone(), 12, 0, Cause::Unspecified));
    assert!(first.event_id.is_empty());
    let stock = first.stock.unwrap_or_default();
    assert_eq!(stock.low_stock_threshold, 3);
    assert_eq!(stock.warehouses.len(), 2);
    // Duplicates are dropped; a product never stocked is all zeros.
    let second = next(&mut stream, SECOND).await;
    assert_eq!(summary(&second), (never.clone(), 0, 0, Cause::Unspecified));

    // A change of another product is not sent; the watched product's change is, at once.
    env.restock(&q, &a, 1).await;
    env.restock(&p, &b, 5).await;
    let m = next(&mut stream, SECOND).await;
    assert_eq!(summary(&m), (p.clone(), 17, 0, Cause::Restock));
    assert!(!m.event_id.is_empty());
    let stock = m.stock.unwrap_or_default();
    let row_b = stock.warehouses.iter().find(|w| w.warehouse_id == b);
    assert_eq!(row_b.map(|w| (w.on_hand, w.available)), Some((7, 7)));
    assert_eq!(stock.total_available, 17);

    env.reserve(crate::common::reserve_req("r-1", &p, 4))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let m = next(&mut stream, SECOND).await;
    assert_eq!(summary(&m), (p.clone(), 17, 4, Cause::Reservation));
    // GetStock agrees with the stream.
    let now = env.stock(&p).await;
    assert_eq!(m.stock, Some(now));
}

async fn watch_validates_product_ids(backend: Backend) {
    let env = Env::start(backend).await;
    let too_many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
    let msg = expect_code(
        env.inv()
            .watch_stock(pb::WatchStockRequest {
                product_ids: too_many,
                after_event_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("product_ids"), "{msg}");
    let msg = expect_code(
        env.inv()
            .watch_stock(pb::WatchStockRequest {
                product_ids: vec!["ok".into(), " ".into()],
                after_event_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("product_ids[1]"), "{msg}");
    let msg = expect_code(
        env.inv()
            .watch_stock(pb::WatchStockRequest {
                product_ids: vec!["x".repeat(201)],
                after_event_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("product_ids[0]"), "{msg}");
    // A bad token on a public RPC is still refused.
    let mut req = tonic::Request::new(pb::WatchStockRequest::default());
    req.metadata_mut().insert(
        "authorization",
        "Bearer nonsense".parse().unwrap_or_else(|e| panic!("{e}")),
    );
    expect_code(env.inv().watch_stock(req).await, Code::Unauthenticated);
}

async fn a_watcher_that_never_reads_ends_resource_exhausted(backend: Backend) {
    let env = Env::start_with(backend, |c| c.events.watch_buffer = 4).await;
    let p = env.product("p").await;
    // Big messages (a Stock of many warehouses) and a tiny HTTP/2 window: the server can
    // only hand the stream a few messages before it waits for this client to read, and
    // then the watcher's buffer of 4 fills up.
    let mut warehouses = Vec::new();
    for i in 0..30 {
        warehouses.push(env.warehouse(&format!("w{i}"), 0.0, 0.0).await);
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", env.inventory_addr))
        .unwrap_or_else(|e| panic!("{e}"))
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stream = InventoryServiceClient::new(channel)
        .watch_stock(pb::WatchStockRequest {
            product_ids: vec![p.clone()],
            after_event_id: String::new(),
        })
        .await
        .unwrap_or_else(|s| panic!("watch: {s:?}"))
        .into_inner();
    for round in 0..4 {
        for w in &warehouses {
            env.try_restock(&p, w, 1, &format!("{round}-{w}"))
                .await
                .unwrap_or_else(|s| panic!("{s:?}"));
        }
    }
    let status = end(&mut stream).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("more than 4 events behind")
            && status.message().contains("after_event_id"),
        "{}",
        status.message()
    );
}

async fn draining_ends_watch_streams_unavailable(backend: Backend) {
    let mut env = Env::start(backend).await;
    let p = env.product("p").await;
    let mut stream = watch(&env, &[&p], "").await;
    next(&mut stream, PATIENCE).await;
    let mut everything = watch(&env, &[], "").await;
    if let Some(inventory) = env.inventory.take() {
        tokio::time::timeout(PATIENCE, inventory.stop())
            .await
            .unwrap_or_else(|_| panic!("inventory did not stop: its watch streams kept it"));
    }
    for s in [&mut stream, &mut everything] {
        let status = end(s).await;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("after_event_id"), "{status:?}");
    }
}

async fn resuming_after_an_event_gets_the_changes_missed(backend: Backend) {
    let env = Env::start(backend).await;
    let p = env.product("p").await;
    let q = env.product("q").await;
    let w = env.warehouse("w", 0.0, 0.0).await;

    // Every product, changes only: no first messages.
    let mut stream = watch(&env, &[], "").await;
    env.restock(&p, &w, 1).await;
    let seen = next(&mut stream, PATIENCE).await;
    assert_eq!(summary(&seen), (p.clone(), 1, 0, Cause::Restock));
    drop(stream);

    // Missed while away.
    env.restock(&p, &w, 2).await;
    env.restock(&q, &w, 3).await;

    let mut resumed = watch(&env, &[], &seen.event_id).await;
    let m1 = next(&mut resumed, PATIENCE).await;
    let m2 = next(&mut resumed, PATIENCE).await;
    assert_eq!(summary(&m1), (p.clone(), 3, 0, Cause::Restock));
    assert_eq!(summary(&m2), (q.clone(), 3, 0, Cause::Restock));
    assert!(m1.event_id > seen.event_id && m2.event_id > m1.event_id);

    // Named products: the snapshot (which includes what was missed) first, and the
    // missed events it already includes are not repeated; then live changes.
    let mut named = watch(&env, &[&p], &seen.event_id).await;
    let first = next(&mut named, PATIENCE).await;
    assert_eq!(summary(&first), (p.clone(), 3, 0, Cause::Unspecified));
    env.restock(&p, &w, 4).await;
    let live = next(&mut named, PATIENCE).await;
    assert_eq!(summary(&live), (p.clone(), 7, 0, Cause::Restock));
}
