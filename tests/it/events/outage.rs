//! NATS outage drill: the mesh's NATS (a server of the drill's own) is SIGKILLed while a
//! WatchStock watcher is open. Stock changes keep succeeding (the API never waits for the
//! bus); their events wait in the outbox. NATS comes back on the same port and store: every
//! change reaches the watcher, none twice, and the stream holds each event once.

use std::collections::HashSet;
use std::time::Duration;

use stockmesh::Target;
use stockmesh::events::Topic;
use stockmesh::proto::inventory::v1::StockChangeCause;
use stockmesh::testing::{Backend, TestMesh};

use super::{Names, OwnNats, Shop, counts, next_change, outbox_rows, stream_messages};

const CHANGES: usize = 20;

async fn nats_outage_loses_nothing(backend: Backend) {
    let Some(mut nats) = OwnNats::start().await else {
        return;
    };
    let names = Names::new();
    let mut mesh = TestMesh::new(backend).await;
    names.apply(&mut mesh.config, &nats.url());
    mesh.config.events.outbox_poll_ms = 200;
    let auth = mesh.start(Target::Auth, stockmesh_auth::serve).await;
    let products = mesh
        .start(Target::Products, stockmesh_products::serve)
        .await;
    let inventory = mesh
        .start(Target::Inventory, stockmesh_inventory::serve)
        .await;
    let shop = Shop::new(auth.addr, products.addr, inventory.addr, 1000).await;
    let mut watch = shop.watch_stock(inventory.addr).await;
    // A change while NATS is up: the path works end to end before the outage.
    shop.adjust(inventory.addr, 1).await;
    let mut seen: Vec<String> = Vec::new();
    let mut adjusted: HashSet<String> = HashSet::new();
    while adjusted.is_empty() {
        let m = next_change(&mut watch, Duration::from_secs(10))
            .await
            .expect("the first adjustment arrives");
        seen.push(m.event_id.clone());
        if m.cause() == StockChangeCause::Adjustment {
            adjusted.insert(m.event_id);
        }
    }

    nats.kill().await;
    for _ in 0..CHANGES {
        shop.adjust(inventory.addr, 1).await;
    }
    // Nothing can have left: every one of them waits in the outbox.
    let url = mesh.database_url(Target::Inventory);
    assert_eq!(outbox_rows(&url).await, CHANGES as u64);

    nats.spawn().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while adjusted.len() < 1 + CHANGES {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(m) = next_change(&mut watch, left).await else {
            panic!(
                "{} of {CHANGES} changes reached the watcher after NATS came back",
                adjusted.len() - 1
            );
        };
        seen.push(m.event_id.clone());
        if m.cause() == StockChangeCause::Adjustment {
            adjusted.insert(m.event_id);
        }
    }
    // A little longer: a duplicate would come now, if at all.
    while let Some(m) = next_change(&mut watch, Duration::from_millis(500)).await {
        seen.push(m.event_id);
    }
    let twice: Vec<_> = counts(seen.iter().map(String::as_str))
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "events seen twice: {twice:?}");

    let subject = format!("{}.{}", names.prefix, Topic::StockChanged.subject());
    let stored = stream_messages(&nats.url(), &names.stream).await;
    let stored = counts(
        stored
            .iter()
            .filter(|(s, _)| *s == subject)
            .map(|(_, id)| id.as_str()),
    );
    for id in &adjusted {
        assert_eq!(
            stored.get(id.as_str()),
            Some(&1),
            "event {id} once in the stream"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while outbox_rows(&url).await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "outbox drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inventory.stop().await;
}

/// A service whose NATS is down when it starts: start does not wait for it (beyond the
/// feeds' short first try), events wait in the outbox, go out once NATS comes up, and
/// reach a watcher that attached during the outage.
async fn start_with_nats_down_then_catch_up(backend: Backend) {
    let Some(mut nats) = OwnNats::start().await else {
        return;
    };
    nats.kill().await;
    let names = Names::new();
    let tdb = stockmesh::testing::TestDb::new(backend).await;
    let db = stockmesh::db::connect_and_migrate::<super::OutboxOnly>(&tdb.url)
        .await
        .unwrap();
    let mut config = stockmesh::Config::from_env().unwrap();
    names.apply(&mut config, &nats.url());
    config.events.outbox_poll_ms = 100;
    let shutdown = stockmesh::Shutdown::new();
    let started = std::time::Instant::now();
    let events =
        stockmesh::events::Events::start(&config, Target::Orders, db.clone(), shutdown.clone())
            .await
            .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "start took {:?} with NATS down",
        started.elapsed()
    );
    let sent: Vec<_> = (0..5)
        .map(|n| super::event(Topic::OrderStatusChanged, n))
        .collect();
    for e in &sent {
        stockmesh::events::append(&db, e).await.unwrap();
        events.committed();
    }
    assert_eq!(stockmesh::events::outbox::pending(&db).await.unwrap(), 5);
    // Attached while NATS is down: its feed's first consumer comes after the relay may
    // have published, and still must not skip those events.
    let mut watcher = events.feed(Topic::OrderStatusChanged).watch(None);
    nats.spawn().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while events.relay_stats().published < 5 {
        assert!(tokio::time::Instant::now() < deadline, "relay caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids: Vec<String> = stream_messages(&nats.url(), &names.stream)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let want: Vec<String> = sent.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, want, "in order, once");
    for e in &sent {
        assert_eq!(
            &super::next_event(&mut watcher, Duration::from_secs(20)).await,
            e
        );
    }
    shutdown.trigger();
    db.close().await.unwrap();
}

stockmesh::db_tests!(
    nats_outage_loses_nothing,
    start_with_nats_down_then_catch_up
);
