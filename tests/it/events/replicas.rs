//! Several replicas, one event stream:
//! * two relays on one database publish every event exactly once (no duplicate publishes
//!   for `Nats-Msg-Id` to absorb while leases hold), at kernel level and through two
//!   inventory replicas whose watchers each see every change once;
//! * a WatchOrders watcher on orders replica A sees an order placed through replica B
//!   within 1 s of the CreateOrder answer, over NATS and in the embedded mode.

use std::time::{Duration, Instant};

use sea_orm::TransactionTrait;
use stockmesh::events::{Events, Topic, append};
use stockmesh::proto::inventory::v1::StockChangeCause;
use stockmesh::proto::orders::v1 as pb;
use stockmesh::proto::orders::v1::order_service_client::OrderServiceClient;
use stockmesh::testing::{Backend, TestDb, TestMesh, nats_url, with_token};
use stockmesh::{Config, Shutdown, Target};

use super::{Names, OutboxOnly, Shop, counts, delete_stream, event, next_change, stream_messages};

const EVENTS: u64 = 300;

/// Two relays (two `Events` of one service) on one database: every event reaches the
/// stream once and the two publish counts add up to the events written.
async fn two_relays_on_one_database_publish_each_event_once(backend: Backend) {
    let Some(url) = nats_url().await else {
        return;
    };
    let names = Names::new();
    let tdb = TestDb::new(backend).await;
    let db = stockmesh::db::connect_and_migrate::<OutboxOnly>(&tdb.url)
        .await
        .unwrap();
    let mut config = Config::from_env().unwrap();
    names.apply(&mut config, &url);
    config.events.outbox_poll_ms = 100;
    let shutdown = Shutdown::new();
    let a = Events::start(&config, Target::Inventory, db.clone(), shutdown.clone())
        .await
        .unwrap();
    let b = Events::start(&config, Target::Inventory, db.clone(), shutdown.clone())
        .await
        .unwrap();
    let writers = (0..4u64).map(|w| {
        let (db, relay) = (db.clone(), if w % 2 == 0 { a.clone() } else { b.clone() });
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..EVENTS / 4 {
                let e = event(Topic::StockChanged, w * 1000 + n);
                let txn = db.begin().await.unwrap();
                append(&txn, &e).await.unwrap();
                txn.commit().await.unwrap();
                relay.committed();
                ids.push(e.id);
            }
            ids
        })
    });
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (sa, sb) = (a.relay_stats(), b.relay_stats());
        if sa.published + sb.published >= EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "published {sa:?} + {sb:?} of {EVENTS}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (sa, sb) = (a.relay_stats(), b.relay_stats());
    eprintln!("two relays ({backend:?}): A {sa:?}, B {sb:?}");
    assert_eq!(
        sa.published + sb.published,
        EVENTS,
        "no event published twice"
    );
    assert_eq!(
        sa.duplicates + sb.duplicates,
        0,
        "nothing for Nats-Msg-Id to absorb"
    );
    let stored = stream_messages(&url, &names.stream).await;
    let stored = counts(stored.iter().map(|(_, id)| id.as_str()));
    assert_eq!(stored.len(), written.len());
    for id in &written {
        assert_eq!(
            stored.get(id.as_str()),
            Some(&1),
            "event {id} once in the stream"
        );
    }
    shutdown.trigger();
    delete_stream(&url, &names.stream).await;
    db.close().await.unwrap();
}

/// Two inventory replicas on one database and one NATS: changes through both reach the
/// watchers of both, each once, and the stream holds each once.
async fn two_inventory_replicas_one_stream(backend: Backend) {
    let Some(url) = nats_url().await else {
        return;
    };
    let names = Names::new();
    let mut mesh = TestMesh::new(backend).await;
    names.apply(&mut mesh.config, &url);
    mesh.config.events.outbox_poll_ms = 200;
    let auth = mesh.start(Target::Auth, stockmesh_auth::serve).await;
    let products = mesh
        .start(Target::Products, stockmesh_products::serve)
        .await;
    let one = mesh
        .start(Target::Inventory, stockmesh_inventory::serve)
        .await;
    let two = mesh
        .start(Target::Inventory, stockmesh_inventory::serve)
        .await;
    let shop = Shop::new(auth.addr, products.addr, one.addr, 10_000).await;
    let mut watch_one = shop.watch_stock(one.addr).await;
    let mut watch_two = shop.watch_stock(two.addr).await;
    const CHANGES: usize = 60;
    let shop = std::sync::Arc::new(shop);
    let tasks: Vec<_> = [one.addr, two.addr]
        .into_iter()
        .map(|addr| {
            let shop = shop.clone();
            tokio::spawn(async move {
                for _ in 0..CHANGES / 2 {
                    shop.adjust(addr, 1).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // WatchStock sends a product's state, skipping an event older than one it already
    // applied (two relays publish in two orders): each watcher must reach the final state,
    // never see an event twice, and the stream must hold every change once.
    let finale = 10_000 + CHANGES as i64;
    for watch in [&mut watch_one, &mut watch_two] {
        let mut seen = Vec::new();
        let mut on_hand = 0;
        while on_hand != finale {
            let m = next_change(watch, Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("stuck at on_hand {on_hand}, want {finale}"));
            on_hand = m.stock.as_ref().map_or(0, |s| s.total_on_hand);
            seen.push(m.event_id);
        }
        assert!(
            next_change(watch, Duration::from_millis(300))
                .await
                .is_none(),
            "nothing after the final state"
        );
        let distinct = counts(seen.iter().map(String::as_str));
        assert_eq!(distinct.len(), seen.len(), "no event twice");
    }
    let adjusted: Vec<String> = events_of_cause(&url, &names, StockChangeCause::Adjustment).await;
    assert_eq!(adjusted.len(), CHANGES, "every change in the stream once");
    let stored = stream_messages(&url, &names.stream).await;
    let stored = counts(stored.iter().map(|(_, id)| id.as_str()));
    for id in &adjusted {
        assert_eq!(
            stored.get(id.as_str()),
            Some(&1),
            "event {id} once in the stream"
        );
    }
    delete_stream(&url, &names.stream).await;
}

/// The ids of the stream's StockChanged events with `cause` (decoded payloads).
async fn events_of_cause(url: &str, names: &Names, cause: StockChangeCause) -> Vec<String> {
    let js = super::jetstream(url).await;
    let mut s = js.get_stream(&names.stream).await.unwrap();
    let state = s.info().await.unwrap().state.clone();
    let subject = format!("{}.{}", names.prefix, Topic::StockChanged.subject());
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        if m.subject.as_str() != subject {
            continue;
        }
        let e =
            <stockmesh::proto::inventory::v1::StockChanged as prost::Message>::decode(m.payload)
                .unwrap();
        if e.cause() == cause {
            out.push(e.event_id);
        }
    }
    out
}

/// A watcher on orders replica A sees orders placed through replica B within 1 s of each
/// CreateOrder answer: over NATS (`nats` = Some) or the embedded bus of one `Config`.
async fn order_through_b_seen_on_a(backend: Backend, nats: Option<(&str, &Names)>) {
    let mut mesh = TestMesh::new(backend).await;
    if let Some((url, names)) = nats {
        names.apply(&mut mesh.config, url);
    } else {
        mesh.config.events.nats_url = None;
    }
    let auth = mesh.start(Target::Auth, stockmesh_auth::serve).await;
    let products = mesh
        .start(Target::Products, stockmesh_products::serve)
        .await;
    let inventory = mesh
        .start(Target::Inventory, stockmesh_inventory::serve)
        .await;
    let a = mesh.start(Target::Orders, stockmesh_orders::serve).await;
    let b = mesh.start(Target::Orders, stockmesh_orders::serve).await;
    let shop = Shop::new(auth.addr, products.addr, inventory.addr, 1000).await;
    let mut watch = OrderServiceClient::new(TestMesh::channel(a.addr).await)
        .watch_orders(with_token(pb::WatchOrdersRequest::default(), &shop.admin))
        .await
        .unwrap()
        .into_inner();
    let mut through_b = OrderServiceClient::new(TestMesh::channel(b.addr).await);
    for n in 0..3 {
        let order = through_b
            .create_order(with_token(
                pb::CreateOrderRequest {
                    request_id: format!("across-{n}-{}", stockmesh::events::new_event_id()),
                    items: vec![pb::CreateOrderItem {
                        product_id: shop.product.clone(),
                        quantity: 1,
                    }],
                    ..Default::default()
                },
                &shop.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        let answered = Instant::now();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), watch.message())
                .await
                .unwrap_or_else(|_| panic!("order {} not seen on replica A", order.id))
                .unwrap()
                .expect("stream open");
            if m.order.as_ref().is_some_and(|o| o.id == order.id) {
                let elapsed = answered.elapsed();
                assert!(
                    elapsed < Duration::from_secs(1),
                    "seen on A {elapsed:?} after B answered"
                );
                break;
            }
        }
    }
    if let Some((url, names)) = nats {
        delete_stream(url, &names.stream).await;
    }
}

async fn order_through_b_seen_on_a_over_nats(backend: Backend) {
    let Some(url) = nats_url().await else {
        return;
    };
    order_through_b_seen_on_a(backend, Some((&url, &Names::new()))).await;
}

async fn order_through_b_seen_on_a_embedded(backend: Backend) {
    order_through_b_seen_on_a(backend, None).await;
}

stockmesh::db_tests!(
    two_relays_on_one_database_publish_each_event_once,
    two_inventory_replicas_one_stream,
    order_through_b_seen_on_a_over_nats,
    order_through_b_seen_on_a_embedded,
);
