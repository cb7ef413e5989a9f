//! Reserve / Commit / Release / expiry: never oversell, move stock exactly once, pick the
//! right warehouse.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::join_all;
use stockmesh::proto::inventory::v1::{self as pb, ReservationStatus};
use stockmesh::testing::Backend;
use tonic::Code;

use crate::common::{Env, expect_code, reserve_req, status};

stockmesh::db_tests!(
    fifty_concurrent_reserves_of_one_against_twenty_take_exactly_twenty,
    reserve_replays_return_the_same_reservation_even_concurrently,
    warehouse_choice_preferred_then_nearest_then_most_available,
    short_stock_names_product_and_available,
    commit_and_release_follow_the_state_machine,
    racing_commits_and_releases_move_stock_once,
    expired_reservations_return_their_stock,
);

async fn fifty_concurrent_reserves_of_one_against_twenty_take_exactly_twenty(backend: Backend) {
    let env = Arc::new(Env::start(backend).await);
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 10.0, 10.0).await;
    env.restock(&product, &wh, 20).await;

    // Watch the stock while the reserves run: reserved must never exceed on_hand.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (env, product, done) = (env.clone(), product.clone(), done.clone());
        tokio::spawn(async move {
            let mut observations = 0u32;
            while !done.load(Ordering::SeqCst) {
                let s = env.stock(&product).await;
                assert!(s.total_reserved >= 0, "reserved negative: {s:?}");
                assert!(s.total_available >= 0, "oversold: {s:?}");
                assert!(s.total_reserved <= 20, "oversold: {s:?}");
                observations += 1;
            }
            observations
        })
    };

    let calls = (0..50).map(|i| {
        let (env, product) = (env.clone(), product.clone());
        async move {
            env.reserve(reserve_req(&format!("r-{i}"), &product, 1))
                .await
        }
    });
    let results = join_all(calls).await;
    done.store(true, Ordering::SeqCst);
    let observations = watcher.await.unwrap_or_else(|e| panic!("watcher: {e}"));
    assert!(observations > 0);

    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 20, "exactly the stock can be reserved");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::FailedPrecondition, "{r:?}");
    }
    let s = env.stock(&product).await;
    assert_eq!(
        (s.total_on_hand, s.total_reserved, s.total_available),
        (20, 20, 0)
    );
}

async fn reserve_replays_return_the_same_reservation_even_concurrently(backend: Backend) {
    let env = Arc::new(Env::start(backend).await);
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    // Exactly the quantity: a replay must not be mistaken for a shortage.
    env.restock(&product, &wh, 3).await;

    let calls = (0..10).map(|_| {
        let (env, product) = (env.clone(), product.clone());
        async move {
            env.reserve(reserve_req("order-1/line-0", &product, 3))
                .await
        }
    });
    let results: Vec<pb::Reservation> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|s| panic!("replay failed: {s:?}")))
        .collect();
    for r in &results {
        assert_eq!(r, &results[0], "every replay returns the same reservation");
    }
    assert_eq!(status(&results[0]), ReservationStatus::Reserved);
    assert_eq!(results[0].warehouse_id, wh);
    assert_eq!(env.stock_in(&product, &wh).await, (3, 3), "reserved once");

    // Sequential replay, and replay after release, still return the one reservation.
    let again = env
        .reserve(reserve_req("order-1/line-0", &product, 3))
        .await;
    assert_eq!(again.ok().as_ref(), Some(&results[0]));
    env.release("order-1/line-0")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let after = env
        .reserve(reserve_req("order-1/line-0", &product, 3))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status(&after), ReservationStatus::Released);
    assert_eq!(
        env.stock_in(&product, &wh).await,
        (3, 0),
        "a replay never reserves again"
    );

    // The key is bound to its product and quantity.
    let msg = expect_code(
        env.reserve(reserve_req("order-1/line-0", &product, 2))
            .await,
        Code::AlreadyExists,
    );
    assert!(msg.contains("order-1/line-0"), "{msg}");
}

async fn warehouse_choice_preferred_then_nearest_then_most_available(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("widget").await;
    let paris = env.warehouse("paris", 48.8566, 2.3522).await;
    let brussels = env.warehouse("brussels", 50.8503, 4.3517).await;
    let london = env.warehouse("london", 51.5074, -0.1278).await;
    env.restock(&product, &paris, 5).await;
    env.restock(&product, &brussels, 20).await;
    env.restock(&product, &london, 100).await;
    let at_paris = |id: &str, qty: i64| pb::ReserveRequest {
        latitude: Some(48.85),
        longitude: Some(2.35),
        ..reserve_req(id, &product, qty)
    };

    // Nearest able warehouse to the delivery point.
    let r = env
        .reserve(at_paris("near", 3))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(r.warehouse_id, paris);
    // Paris has 2 left: the next nearest able one (Brussels, 264 km) beats London (344 km).
    let r = env
        .reserve(at_paris("next", 10))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(r.warehouse_id, brussels);
    // A preferred warehouse that can serve wins over distance.
    let r = env
        .reserve(pb::ReserveRequest {
            warehouse_id: Some(london.clone()),
            ..at_paris("pref", 1)
        })
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(r.warehouse_id, london);
    // A preferred warehouse that cannot serve falls back to the nearest able one.
    let r = env
        .reserve(pb::ReserveRequest {
            warehouse_id: Some(paris.clone()),
            ..at_paris("pref-short", 5)
        })
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(r.warehouse_id, brussels);
    // No delivery point: the most available.
    let r = env
        .reserve(reserve_req("most", &product, 2))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(r.warehouse_id, london);

    let s = env.stock(&product).await;
    assert_eq!(s.total_on_hand, 125);
    assert_eq!(s.total_reserved, 3 + 10 + 1 + 5 + 2);
    assert_eq!(env.stock_in(&product, &paris).await, (5, 3));
    assert_eq!(env.stock_in(&product, &brussels).await, (20, 15));
    assert_eq!(env.stock_in(&product, &london).await, (100, 3));
}

async fn short_stock_names_product_and_available(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("widget").await;
    let a = env.warehouse("a", 1.0, 1.0).await;
    let b = env.warehouse("b", 2.0, 2.0).await;
    env.restock(&product, &a, 4).await;
    env.restock(&product, &b, 6).await;

    let msg = expect_code(
        env.reserve(reserve_req("too-many", &product, 11)).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains(&product), "{msg}");
    assert!(msg.contains("available 10"), "{msg}");
    // Enough in total, but no single warehouse can serve the whole quantity.
    let msg = expect_code(
        env.reserve(reserve_req("split", &product, 8)).await,
        Code::FailedPrecondition,
    );
    assert!(
        msg.contains("available 10") && msg.contains("single warehouse"),
        "{msg}"
    );
    // A product never stocked.
    let msg = expect_code(
        env.reserve(reserve_req("none", "no-such-product", 1)).await,
        Code::FailedPrecondition,
    );
    assert!(
        msg.contains("no-such-product") && msg.contains("available 0"),
        "{msg}"
    );
    // Nothing moved, and the failed ids are not taken.
    assert_eq!(env.stock(&product).await.total_reserved, 0);
    expect_code(env.get_reservation("too-many").await, Code::NotFound);
    let ok = env.reserve(reserve_req("too-many", &product, 6)).await;
    assert_eq!(ok.map(|r| r.warehouse_id).ok(), Some(b));

    // Bad input names the field.
    let msg = expect_code(
        env.reserve(reserve_req("zero", &product, 0)).await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("quantity"), "{msg}");
    let msg = expect_code(
        env.reserve(pb::ReserveRequest {
            latitude: Some(91.0),
            longitude: Some(0.0),
            ..reserve_req("lat", &product, 1)
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("latitude"), "{msg}");
    let msg = expect_code(
        env.reserve(reserve_req("", &product, 1)).await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("reservation_id"), "{msg}");
}

async fn commit_and_release_follow_the_state_machine(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.restock(&product, &wh, 10).await;

    // RESERVED → COMMITTED: the units leave on_hand and reserved.
    env.reserve(reserve_req("c", &product, 4))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(env.stock_in(&product, &wh).await, (10, 4));
    let committed = env.commit("c").await.unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status(&committed), ReservationStatus::Committed);
    assert_eq!(env.stock_in(&product, &wh).await, (6, 0));
    // Idempotent, and stock moved once.
    let again = env.commit("c").await.unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status(&again), ReservationStatus::Committed);
    assert_eq!(env.stock_in(&product, &wh).await, (6, 0));
    let msg = expect_code(env.release("c").await, Code::FailedPrecondition);
    assert!(msg.contains("COMMITTED"), "{msg}");

    // RESERVED → RELEASED: the units return to available.
    env.reserve(reserve_req("r", &product, 5))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(env.stock_in(&product, &wh).await, (6, 5));
    let released = env.release("r").await.unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status(&released), ReservationStatus::Released);
    assert_eq!(env.stock_in(&product, &wh).await, (6, 0));
    let again = env.release("r").await.unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status(&again), ReservationStatus::Released);
    assert_eq!(env.stock_in(&product, &wh).await, (6, 0));
    let msg = expect_code(env.commit("r").await, Code::FailedPrecondition);
    assert!(msg.contains("RELEASED"), "{msg}");

    let fetched = env
        .get_reservation("r")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status(&fetched), ReservationStatus::Released);
    assert_eq!(
        (fetched.product_id.as_str(), fetched.quantity),
        (product.as_str(), 5)
    );

    // Unknown ids (a release of one records a tombstone: see tombstones.rs).
    expect_code(env.commit("nope").await, Code::NotFound);
    expect_code(env.get_reservation("nope").await, Code::NotFound);

    // AdjustStock never takes on_hand below reserved.
    env.reserve(reserve_req("held", &product, 4))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let msg = expect_code(
        env.inv()
            .adjust_stock(stockmesh::testing::with_token(
                pb::AdjustStockRequest {
                    product_id: product.clone(),
                    warehouse_id: wh.clone(),
                    delta: -3,
                    reason: "shrinkage".into(),
                    request_id: "adj-below".into(),
                },
                &env.operator,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains("below reserved"), "{msg}");
    assert_eq!(env.stock_in(&product, &wh).await, (6, 4));
}

async fn racing_commits_and_releases_move_stock_once(backend: Backend) {
    let env = Arc::new(Env::start(backend).await);
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.restock(&product, &wh, 10).await;
    env.reserve(reserve_req("race", &product, 4))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));

    let calls = (0..20).map(|i| {
        let env = env.clone();
        async move {
            if i % 2 == 0 {
                env.commit("race").await
            } else {
                env.release("race").await
            }
        }
    });
    let results = join_all(calls).await;
    let winner = match env.get_reservation("race").await.map(|r| status(&r)) {
        Ok(s @ (ReservationStatus::Committed | ReservationStatus::Released)) => s,
        other => panic!("unexpected final state {other:?}"),
    };
    for (i, r) in results.iter().enumerate() {
        let is_commit = i % 2 == 0;
        let agrees = (winner == ReservationStatus::Committed) == is_commit;
        match r {
            Ok(res) => {
                assert!(agrees, "call {i} succeeded against the winner: {res:?}");
                assert_eq!(status(res), winner);
            }
            Err(s) => {
                assert!(
                    !agrees,
                    "call {i} failed though it agrees with the winner: {s:?}"
                );
                assert_eq!(s.code(), Code::FailedPrecondition);
            }
        }
    }
    let expected = if winner == ReservationStatus::Committed {
        (6, 0)
    } else {
        (10, 0)
    };
    assert_eq!(env.stock_in(&product, &wh).await, expected);
}

async fn expired_reservations_return_their_stock(backend: Backend) {
    let env = Env::start_with(backend, |c| {
        c.inventory.reservation_ttl_secs = 1;
        c.inventory.reservation_sweep_ms = 50;
    })
    .await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.restock(&product, &wh, 5).await;
    let r = env
        .reserve(reserve_req("orphan", &product, 2))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status(&r), ReservationStatus::Reserved);
    assert_eq!(env.stock_in(&product, &wh).await, (5, 2));

    // Poll the reservation's state (bounded), not the clock.
    let mut expired = None;
    for _ in 0..200 {
        let r = env
            .get_reservation("orphan")
            .await
            .unwrap_or_else(|s| panic!("{s:?}"));
        if status(&r) != ReservationStatus::Reserved {
            expired = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired = expired.unwrap_or_else(|| panic!("reservation never expired"));
    assert_eq!(status(&expired), ReservationStatus::Expired);
    assert_eq!(env.stock_in(&product, &wh).await, (5, 0), "stock returned");

    let msg = expect_code(env.commit("orphan").await, Code::FailedPrecondition);
    assert!(msg.contains("EXPIRED"), "{msg}");
    let released = env
        .release("orphan")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(
        status(&released),
        ReservationStatus::Expired,
        "release of expired is a no-op"
    );
    assert_eq!(env.stock_in(&product, &wh).await, (5, 0));
}
