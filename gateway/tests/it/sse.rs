//! REST server streams: Server-Sent Events and newline-delimited JSON framing,
//! `Last-Event-ID` → `after_event_id`, errors before the stream as REST errors.

use std::time::Duration;

use http::Method;
use stockmesh::testing::Backend;

use crate::streams::stocked;
use crate::support::{Env, sse_fields};

const WAIT: Duration = Duration::from_secs(5);
const EVENT: &str = "stockmesh.inventory.v1.WatchStockResponse";

pub async fn sse_and_ndjson_streams(backend: Backend) {
    let env = Env::start(backend).await;
    let (pid, wid) = stocked(&env, 2).await;
    let path = format!("/v1/stock:watch?productIds={pid}");

    let mut sse = env
        .open(
            Method::GET,
            &path,
            &[("accept", "text/event-stream")],
            "",
            false,
        )
        .await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache"));
    let (id, event, data) = sse_fields(&sse.next_event(WAIT).await);
    assert_eq!(id, None, "the first message has no event id");
    assert_eq!(event.as_deref(), Some(EVENT));
    let data = data.unwrap();
    assert_eq!(data["stock"]["totalOnHand"], "2", "{data}");
    assert_eq!(data["eventId"], "", "REST JSON keeps default fields");

    let mut ndjson = env.open(Method::GET, &path, &[], "", false).await;
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    let first = ndjson.next_line(WAIT).await;
    assert_eq!(first["result"]["stock"]["totalOnHand"], "2", "{first}");

    let mut ids = Vec::new();
    for n in 1..=2 {
        env.restock(&pid, &wid, 1).await;
        let (id, event, data) = sse_fields(&sse.next_event(WAIT).await);
        let id = id.expect("a change has an event id");
        assert_eq!(event.as_deref(), Some(EVENT));
        let data = data.unwrap();
        assert_eq!(data["eventId"], id.as_str());
        assert_eq!(data["stock"]["totalOnHand"], (2 + n).to_string(), "{data}");
        assert_eq!(data["cause"], "STOCK_CHANGE_CAUSE_RESTOCK");
        let line = ndjson.next_line(WAIT).await;
        assert_eq!(line["result"]["eventId"], id.as_str(), "{line}");
        ids.push(id);
    }
    drop(sse);
    drop(ndjson);

    // Last-Event-ID (an EventSource reconnecting) becomes after_event_id: a watcher of
    // every product that resumes after the first change is sent the second one, which a
    // new watcher of every product would never see.
    let mut resumed = env
        .open(
            Method::GET,
            "/v1/stock:watch",
            &[("accept", "text/event-stream"), ("last-event-id", &ids[0])],
            "",
            false,
        )
        .await;
    assert_eq!(resumed.status, 200);
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < until,
            "the resumed stream did not replay {}",
            ids[1]
        );
        let event = resumed.next_event(WAIT).await;
        if event.starts_with(':') {
            continue;
        }
        let (id, _, data) = sse_fields(&event);
        let data = data.unwrap_or_default();
        if data["stock"]["productId"] != pid.as_str() {
            continue;
        }
        assert_ne!(
            id.as_deref(),
            Some(ids[0].as_str()),
            "resumed after, not at, {}",
            ids[0]
        );
        if id.as_deref() == Some(ids[1].as_str()) {
            break;
        }
    }
    drop(resumed);

    // Errors before the first message are REST errors, whatever the format.
    let resp = env.rest(Method::GET, "/v1/orders:watch", None, None).await;
    resp.assert_error(401, 16);
    let resp = env
        .send(
            Method::GET,
            "/v1/orders:watch",
            &[("accept", "text/event-stream")],
            "",
        )
        .await;
    resp.assert_error(401, 16);
    let resp = env
        .send(
            Method::GET,
            "/v1/stock:watch?productIds=",
            &[("accept", "text/event-stream")],
            "",
        )
        .await;
    resp.assert_error(400, 3);

    // A signed-in watcher of orders gets a stream (its own orders' changes).
    let customer = env.user("ROLE_CUSTOMER").await;
    let auth = format!("Bearer {customer}");
    let mut orders = env
        .open(
            Method::GET,
            "/v1/orders:watch",
            &[("accept", "text/event-stream"), ("authorization", &auth)],
            "",
            false,
        )
        .await;
    assert_eq!(orders.status, 200);
    let resp = env
        .rest(
            Method::POST,
            "/v1/orders",
            Some(&customer),
            Some(serde_json::json!({
                "requestId": crate::support::unique("order"),
                "items": [{"productId": pid, "quantity": 1}],
            })),
        )
        .await;
    let order = resp.ok()["order"]["id"].as_str().unwrap().to_string();
    let (id, event, data) = sse_fields(&orders.next_event(WAIT).await);
    assert!(id.is_some());
    assert_eq!(
        event.as_deref(),
        Some("stockmesh.orders.v1.WatchOrdersResponse")
    );
    assert_eq!(data.unwrap()["order"]["id"], order.as_str());
}
