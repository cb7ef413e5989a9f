//! Stock events: written in the transaction of the change (a failure injected between
//! the change and its commit takes both), one `StockChanged` per row changed with the row
//! after it, none for refusals and replays, and `StockLow` on the crossing of the
//! threshold only. Events are read from the database through [`OutboxLog`].

use std::time::{Duration, Instant};

use stockmesh::proto::inventory::v1::{self as pb, StockChangeCause as Cause};
use stockmesh::testing::{Backend, with_token};
use tonic::Code;

use crate::common::{Env, expect_code, reserve_req, status};
use stockmesh::testing::outbox_log::{OutboxLog, fail_outbox, heal_outbox, schema_session};

stockmesh::db_tests!(
    a_change_and_its_events_commit_or_roll_back_together,
    refusals_and_replays_write_no_event,
    every_change_describes_the_row_after_it,
    expiry_writes_one_event_per_reservation_of_a_batch,
    stock_low_fires_on_the_crossing_only,
    set_low_stock_threshold_validates_and_shows_in_every_stock,
);

const CHANGED: &str = "inventory.stock_changed";
const LOW: &str = "inventory.stock_low";

impl Env {
    async fn adjust(
        &self,
        product: &str,
        wh: &str,
        delta: i64,
        id: &str,
    ) -> Result<pb::Stock, tonic::Status> {
        Ok(self
            .inv()
            .adjust_stock(with_token(
                pb::AdjustStockRequest {
                    product_id: product.to_string(),
                    warehouse_id: wh.to_string(),
                    delta,
                    reason: "count".into(),
                    request_id: id.to_string(),
                },
                &self.operator,
            ))
            .await?
            .into_inner()
            .stock
            .unwrap_or_default())
    }

    async fn set_threshold(
        &self,
        product: &str,
        threshold: i64,
    ) -> Result<pb::Stock, tonic::Status> {
        Ok(self
            .inv()
            .set_low_stock_threshold(with_token(
                pb::SetLowStockThresholdRequest {
                    product_id: product.to_string(),
                    threshold,
                },
                &self.operator,
            ))
            .await?
            .into_inner()
            .stock
            .unwrap_or_default())
    }
}

fn cause(e: &pb::StockChanged) -> Cause {
    Cause::try_from(e.cause).unwrap_or(Cause::Unspecified)
}

async fn a_change_and_its_events_commit_or_roll_back_together(backend: Backend) {
    let env = Env::start(backend).await;
    let db = schema_session(&env.mesh.database_url(stockmesh::Target::Inventory)).await;
    let log = OutboxLog::install(env.inventory_db().await).await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.restock(&product, &wh, 10).await;
    env.reserve(reserve_req("held", &product, 2))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let before = log.len().await;

    fail_outbox(&db).await;
    // Each change fails after its own statements, at its event's insert: nothing moves.
    assert!(env.try_restock(&product, &wh, 5, "r1").await.is_err());
    assert!(env.adjust(&product, &wh, -1, "a1").await.is_err());
    assert!(
        env.reserve(reserve_req("res-1", &product, 3))
            .await
            .is_err()
    );
    assert!(env.commit("held").await.is_err());
    assert!(env.release("held").await.is_err());
    assert_eq!(env.stock_in(&product, &wh).await, (10, 2));
    expect_code(env.get_reservation("res-1").await, Code::NotFound);
    let held = env
        .get_reservation("held")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status(&held), pb::ReservationStatus::Reserved);
    assert_eq!(log.len().await, before, "no event without its change");

    heal_outbox(&db).await;
    // The same requests now succeed, each with exactly one event.
    let s = env
        .try_restock(&product, &wh, 5, "r1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(s.total_on_hand, 15);
    env.reserve(reserve_req("res-1", &product, 3))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.commit("held").await.unwrap_or_else(|s| panic!("{s:?}"));
    let events: Vec<pb::StockChanged> = log.since(before, CHANGED).await;
    let causes: Vec<(Cause, &str)> = events
        .iter()
        .map(|e| (cause(e), e.cause_id.as_str()))
        .collect();
    assert_eq!(
        causes,
        [
            (Cause::Restock, "r1"),
            (Cause::Reservation, "res-1"),
            (Cause::Commit, "held")
        ]
    );
    assert_eq!(env.stock_in(&product, &wh).await, (13, 3));
    let _ = db.close().await;
}

async fn refusals_and_replays_write_no_event(backend: Backend) {
    let env = Env::start(backend).await;
    let log = OutboxLog::install(env.inventory_db().await).await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.try_restock(&product, &wh, 10, "r1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.reserve(reserve_req("res-1", &product, 8))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.commit("res-1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.reserve(reserve_req("res-2", &product, 1))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let before = log.len().await;
    let changed: Vec<pb::StockChanged> = log.since(0, CHANGED).await;
    assert_eq!(changed.len(), 4, "one event per change");

    // Refused: below reserved, short stock, an illegal transition.
    expect_code(
        env.adjust(&product, &wh, -2, "a1").await,
        Code::FailedPrecondition,
    );
    expect_code(
        env.reserve(reserve_req("res-3", &product, 5)).await,
        Code::FailedPrecondition,
    );
    expect_code(env.release("res-1").await, Code::FailedPrecondition);
    // Replays.
    env.try_restock(&product, &wh, 10, "r1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.reserve(reserve_req("res-1", &product, 8))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.commit("res-1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    // A tombstone moves no stock.
    env.release("never-reserved")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(log.len().await, before, "nothing moved, nothing written");
    assert_eq!(env.stock_in(&product, &wh).await, (2, 1));
}

async fn every_change_describes_the_row_after_it(backend: Backend) {
    let env = Env::start(backend).await;
    let log = OutboxLog::install(env.inventory_db().await).await;
    let product = env.product("widget").await;
    let a = env.warehouse("a", 0.0, 0.0).await;
    let b = env.warehouse("b", 0.0, 1.0).await;
    env.try_restock(&product, &a, 10, "r-a")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.try_restock(&product, &b, 4, "r-b")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.adjust(&product, &a, -3, "adj")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let mut req = reserve_req("res-1", &product, 2);
    req.warehouse_id = Some(a.clone());
    env.reserve(req).await.unwrap_or_else(|s| panic!("{s:?}"));
    let mut req = reserve_req("res-2", &product, 1);
    req.warehouse_id = Some(a.clone());
    env.reserve(req).await.unwrap_or_else(|s| panic!("{s:?}"));
    env.commit("res-1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.release("res-2")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));

    let logged = log.all().await;
    let events: Vec<pb::StockChanged> = log.since(0, CHANGED).await;
    let got: Vec<(Cause, &str, &str, i64, i64, i64, i64)> = events
        .iter()
        .map(|e| {
            (
                cause(e),
                e.cause_id.as_str(),
                e.warehouse_id.as_str(),
                e.on_hand,
                e.reserved,
                e.available,
                e.version,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Cause::Restock, "r-a", a.as_str(), 10, 0, 10, 1),
            (Cause::Restock, "r-b", b.as_str(), 4, 0, 4, 1),
            (Cause::Adjustment, "adj", a.as_str(), 7, 0, 7, 2),
            (Cause::Reservation, "res-1", a.as_str(), 7, 2, 5, 3),
            (Cause::Reservation, "res-2", a.as_str(), 7, 3, 4, 4),
            (Cause::Commit, "res-1", a.as_str(), 5, 1, 4, 5),
            (Cause::Release, "res-2", a.as_str(), 5, 0, 5, 6),
        ]
    );
    for (e, l) in events.iter().zip(&logged) {
        assert_eq!(e.event_id, l.event_id, "the message carries its event id");
        assert_eq!(e.product_id, product);
        assert!(e.occurred_at.is_some());
    }
}

async fn expiry_writes_one_event_per_reservation_of_a_batch(backend: Backend) {
    let env = Env::start_with(backend, |c| {
        c.inventory.reservation_ttl_secs = 1;
        c.inventory.reservation_sweep_ms = 100;
    })
    .await;
    let log = OutboxLog::install(env.inventory_db().await).await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.restock(&product, &wh, 10).await;
    env.reserve(reserve_req("x-1", &product, 2))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.reserve(reserve_req("x-2", &product, 3))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let give_up = Instant::now() + Duration::from_secs(30);
    while env.stock_in(&product, &wh).await != (10, 0) {
        assert!(Instant::now() < give_up, "the reservations never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired: Vec<pb::StockChanged> = log
        .since(0, CHANGED)
        .await
        .into_iter()
        .filter(|e| cause(e) == Cause::Expiry)
        .collect();
    assert_eq!(expired.len(), 2, "{expired:?}");
    let mut ids: Vec<&str> = expired.iter().map(|e| e.cause_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["x-1", "x-2"]);
    // One after the other: the last leaves the row as it is, versions follow each other.
    let last = &expired[1];
    assert_eq!((last.on_hand, last.reserved, last.version), (10, 0, 5));
    let first = &expired[0];
    assert_eq!(first.version, 4);
    assert_eq!(
        first.reserved,
        5 - if first.cause_id == "x-1" { 2 } else { 3 }
    );
}

async fn stock_low_fires_on_the_crossing_only(backend: Backend) {
    let env = Env::start_with(backend, |c| c.inventory.low_stock_threshold = 5).await;
    let log = OutboxLog::install(env.inventory_db().await).await;
    let wh = env.warehouse("main", 0.0, 0.0).await;

    // The default threshold (5).
    let p = env.product("plain").await;
    env.restock(&p, &wh, 10).await;
    for (id, q) in [("p-1", 3), ("p-2", 3), ("p-3", 1)] {
        env.reserve(reserve_req(id, &p, q))
            .await
            .unwrap_or_else(|s| panic!("{s:?}"));
    }
    let lows: Vec<pb::StockLow> = log.since(0, LOW).await;
    assert_eq!(lows.len(), 1, "7 → 4 crosses, 4 → 3 does not: {lows:?}");
    let changed: Vec<pb::StockChanged> = log.since(0, CHANGED).await;
    let crossing = changed
        .iter()
        .find(|e| e.cause_id == "p-2")
        .unwrap_or_else(|| panic!("no event of p-2"));
    assert_eq!(
        (
            lows[0].product_id.as_str(),
            lows[0].total_available,
            lows[0].threshold,
            lows[0].cause_event_id.as_str()
        ),
        (p.as_str(), 4, 5, crossing.event_id.as_str())
    );
    // Back up, then down again by an adjustment: a new crossing.
    env.release("p-1").await.unwrap_or_else(|s| panic!("{s:?}"));
    env.release("p-2").await.unwrap_or_else(|s| panic!("{s:?}"));
    let mark = log.len().await;
    env.adjust(&p, &wh, -6, "cut")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let lows: Vec<pb::StockLow> = log.since(mark, LOW).await;
    assert_eq!(lows.len(), 1);
    assert_eq!(lows[0].total_available, 3);

    // A product's own threshold, over several warehouses' total.
    let other = env.warehouse("other", 0.0, 1.0).await;
    let own = env.product("own").await;
    env.set_threshold(&own, 20)
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.restock(&own, &wh, 15).await;
    env.restock(&own, &other, 10).await;
    let mark = log.len().await;
    env.reserve(reserve_req("o-1", &own, 4))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert!(
        log.since::<pb::StockLow>(mark, LOW).await.is_empty(),
        "25 → 21"
    );
    env.reserve(reserve_req("o-2", &own, 2))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let lows: Vec<pb::StockLow> = log.since(mark, LOW).await;
    assert_eq!(
        lows.iter()
            .map(|l| (l.total_available, l.threshold))
            .collect::<Vec<_>>(),
        [(19, 20)]
    );

    // 0 = never low.
    let never = env.product("never").await;
    env.set_threshold(&never, 0)
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.restock(&never, &wh, 3).await;
    let mark = log.len().await;
    env.reserve(reserve_req("n-1", &never, 3))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert!(log.since::<pb::StockLow>(mark, LOW).await.is_empty());
}

async fn set_low_stock_threshold_validates_and_shows_in_every_stock(backend: Backend) {
    let env = Env::start_with(backend, |c| c.inventory.low_stock_threshold = 7).await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    assert_eq!(
        env.stock(&product).await.low_stock_threshold,
        7,
        "the default"
    );
    let s = env.restock(&product, &wh, 3).await;
    assert_eq!(s.low_stock_threshold, 7);

    let s = env
        .set_threshold(&product, 2)
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!((s.low_stock_threshold, s.total_on_hand), (2, 3));
    assert_eq!(env.stock(&product).await.low_stock_threshold, 2);
    let s = env
        .try_restock(&product, &wh, 1, "later")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(s.low_stock_threshold, 2);

    let msg = expect_code(env.set_threshold(&product, -1).await, Code::InvalidArgument);
    assert!(msg.starts_with("threshold"), "{msg}");
    let msg = expect_code(env.set_threshold("", 1).await, Code::InvalidArgument);
    assert!(msg.starts_with("product_id"), "{msg}");
    expect_code(
        env.set_threshold("no-such-product", 1).await,
        Code::NotFound,
    );
    let as_customer = env
        .inv()
        .set_low_stock_threshold(with_token(
            pb::SetLowStockThresholdRequest {
                product_id: product.clone(),
                threshold: 1,
            },
            &env.customer,
        ))
        .await;
    expect_code(as_customer, Code::PermissionDenied);
    assert_eq!(env.stock(&product).await.low_stock_threshold, 2);
}
