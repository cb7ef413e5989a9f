//! Unit tests of the feed (ring, dedup, lag, end) and of the relay on the embedded bus.

use std::time::Duration;

use bytes::Bytes;
use sea_orm_migration::{MigrationTrait, MigratorTrait};

use super::feed::Feed;
use super::*;

fn settings(buffer: usize, retain: usize) -> Settings {
    Settings {
        poll: Duration::from_millis(50),
        watch_buffer: buffer,
        retain,
    }
}

fn event(n: u32) -> Event {
    Event {
        id: format!("e{n}"),
        topic: Topic::StockChanged,
        payload: Bytes::from(n.to_be_bytes().to_vec()),
    }
}

async fn next(w: &mut Watcher) -> Option<Result<Event, Lagged>> {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watcher answers")
}

fn ids(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

#[tokio::test]
async fn resume_after_a_retained_id_replays_the_rest_then_goes_live() {
    let feed = Feed::new(Target::Inventory, Topic::StockChanged, &settings(16, 4));
    for n in 1..=6 {
        assert!(feed.deliver(event(n)));
    }
    // The ring holds e3..e6.
    let mut w = feed.watch(Some("e4"));
    assert!(w.resumed);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next(&mut w).await.unwrap().unwrap());
    }
    assert_eq!(ids(&got), ["e5", "e6"]);
    feed.deliver(event(7));
    assert_eq!(next(&mut w).await.unwrap().unwrap().id, "e7");

    // Evicted (or unknown) ids: live events only.
    let mut evicted = feed.watch(Some("e1"));
    assert!(!evicted.resumed);
    let mut fresh = feed.watch(None);
    assert!(!fresh.resumed);
    feed.deliver(event(8));
    assert_eq!(next(&mut evicted).await.unwrap().unwrap().id, "e8");
    assert_eq!(next(&mut fresh).await.unwrap().unwrap().id, "e8");
}

#[tokio::test]
async fn a_duplicate_id_reaches_watchers_once() {
    let feed = Feed::new(Target::Orders, Topic::StockChanged, &settings(16, 8));
    let mut w = feed.watch(None);
    assert!(feed.deliver(event(1)));
    assert!(!feed.deliver(event(1)), "same id again is a duplicate");
    assert!(feed.deliver(event(2)));
    assert_eq!(next(&mut w).await.unwrap().unwrap().id, "e1");
    assert_eq!(next(&mut w).await.unwrap().unwrap().id, "e2");
}

#[tokio::test]
async fn a_full_watcher_gets_what_it_holds_then_lagged_and_is_detached() {
    let feed = Feed::new(Target::Inventory, Topic::StockChanged, &settings(2, 8));
    let mut slow = feed.watch(None);
    let mut fast = feed.watch(None);
    assert_eq!(feed.watchers(), 2);
    for n in 1..=3 {
        feed.deliver(event(n));
        assert_eq!(next(&mut fast).await.unwrap().unwrap().id, format!("e{n}"));
    }
    assert_eq!(feed.watchers(), 1, "the slow watcher is detached");
    assert_eq!(next(&mut slow).await.unwrap().unwrap().id, "e1");
    assert_eq!(next(&mut slow).await.unwrap().unwrap().id, "e2");
    assert_eq!(next(&mut slow).await.unwrap().unwrap_err(), Lagged(2));
    assert!(next(&mut slow).await.is_none());
    // The fast one is unaffected.
    feed.deliver(event(4));
    assert_eq!(next(&mut fast).await.unwrap().unwrap().id, "e4");
    drop(fast);
    assert_eq!(feed.watchers(), 0, "a dropped watcher detaches");
}

#[tokio::test]
async fn ending_the_feed_ends_every_watcher() {
    let feed = Feed::new(Target::Inventory, Topic::StockChanged, &settings(4, 8));
    let mut w = feed.watch(None);
    feed.deliver(event(1));
    feed.end();
    assert_eq!(next(&mut w).await.unwrap().unwrap().id, "e1");
    assert!(next(&mut w).await.is_none());
    let mut late = feed.watch(None);
    assert!(
        next(&mut late).await.is_none(),
        "an ended feed serves nothing"
    );
}

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(OutboxMigration)]
    }
}

fn temp_sqlite() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("stockmesh_events_{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}/events.db", dir.display());
    (dir, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_reach_every_feed_of_one_config_and_end_on_shutdown() {
    let (dir, url) = temp_sqlite();
    let db = crate::db::connect_and_migrate::<Migrator>(&url)
        .await
        .unwrap();
    let mut config = Config::from_env().unwrap();
    config.events.nats_url = None;
    // A long poll: only `committed()` can make the relay publish in time.
    config.events.outbox_poll_ms = 60_000;
    let shutdown = Shutdown::new();
    let a = Events::start(&config, Target::Inventory, db.clone(), shutdown.clone())
        .await
        .unwrap();
    // A second replica of the same Config shares the embedded bus; another Config does not.
    let b = Events::start(
        &config.clone(),
        Target::Inventory,
        db.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let (other_dir, other_url) = temp_sqlite();
    let other_db = crate::db::connect_and_migrate::<Migrator>(&other_url)
        .await
        .unwrap();
    let other = Events::start(
        &Config::from_env().unwrap(),
        Target::Inventory,
        other_db.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut wa = a.feed(Topic::StockChanged).watch(None);
    let mut wb = b.feed(Topic::StockChanged).watch(None);
    let mut wo = other.feed(Topic::StockChanged).watch(None);

    let e = Event::new(
        new_event_id(),
        Topic::StockChanged,
        &prost_types::Duration {
            seconds: 7,
            nanos: 0,
        },
    );
    append(&db, &e).await.unwrap();
    a.committed();
    assert_eq!(next(&mut wa).await.unwrap().unwrap(), e);
    assert_eq!(next(&mut wb).await.unwrap().unwrap(), e);
    // Published rows are deleted (just after the bus took them).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while outbox::pending(&db).await.unwrap() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "row still in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    shutdown.trigger();
    assert!(next(&mut wa).await.is_none());
    assert!(next(&mut wb).await.is_none());
    assert!(
        next(&mut wo).await.is_none(),
        "another Config's bus saw nothing"
    );
    db.close().await.unwrap();
    other_db.close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(other_dir);
}

#[test]
fn event_ids_are_time_ordered_uuids() {
    let a = new_event_id();
    let b = new_event_id();
    assert!(a < b, "{a} < {b}");
    assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 7);
}

#[test]
fn subjects_round_trip() {
    for t in Topic::ALL {
        assert_eq!(Topic::from_subject(t.subject()), Some(t));
    }
}
