//! CompleteOrder and CancelOrder: their effect on stock, idempotency, the rules between
//! them, and concurrent complete/cancel of one order.

use std::sync::Arc;

use futures::future::join_all;
use stockmesh::proto::inventory::v1::ReservationStatus;
use stockmesh::proto::orders::v1 as pb;
use stockmesh::testing::Backend;
use tonic::Code;

use crate::support::{Env, expect_code, status_of};

pub async fn complete_commits_and_cancel_releases_idempotently(backend: Backend) {
    let env = Env::start(backend).await;
    let widget = env.product("widget", 250, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    let c = env.customer.token.clone();
    let op = env.operator.token.clone();

    let done = env
        .create(&c, "to-complete", &[(&widget, 3), (&widget, 1)])
        .await
        .unwrap();
    let dropped = env.create(&c, "to-cancel", &[(&widget, 2)]).await.unwrap();
    let stock = env.stock(&widget).await;
    assert_eq!((stock.total_on_hand, stock.total_reserved), (10, 6));

    let completed = env.complete(&op, &done.id).await.unwrap();
    assert_eq!(status_of(&completed), pb::OrderStatus::Completed);
    assert_eq!(completed.items, done.items);
    for item in &completed.items {
        let r = env.reservation(&item.reservation_id).await.unwrap();
        assert_eq!(r.status, ReservationStatus::Committed as i32);
    }
    let stock = env.stock(&widget).await;
    assert_eq!((stock.total_on_hand, stock.total_reserved), (6, 2));
    // Again: same answer, stock moves once.
    let again = env.complete(&env.admin.token, &done.id).await.unwrap();
    assert_eq!(status_of(&again), pb::OrderStatus::Completed);
    assert_eq!(env.stock(&widget).await.total_on_hand, 6);
    // A completed order cannot be cancelled, by anyone.
    expect_code(
        env.cancel(&op, &done.id, "too late").await,
        Code::FailedPrecondition,
    );
    expect_code(
        env.cancel(&c, &done.id, "too late").await,
        Code::FailedPrecondition,
    );

    // The owner cancels a pending order, with a reason.
    let cancelled = env
        .cancel(&c, &dropped.id, "changed my mind")
        .await
        .unwrap();
    assert_eq!(status_of(&cancelled), pb::OrderStatus::Cancelled);
    assert_eq!(cancelled.cancel_reason, "changed my mind");
    let r = env
        .reservation(&dropped.items[0].reservation_id)
        .await
        .unwrap();
    assert_eq!(r.status, ReservationStatus::Released as i32);
    let stock = env.stock(&widget).await;
    assert_eq!(
        (
            stock.total_on_hand,
            stock.total_reserved,
            stock.total_available
        ),
        (6, 0, 6)
    );
    // Again (by the owner or an operator): same answer, the first reason kept.
    let again = env.cancel(&c, &dropped.id, "").await.unwrap();
    assert_eq!(again.cancel_reason, "changed my mind");
    let again = env.cancel(&op, &dropped.id, "other").await.unwrap();
    assert_eq!(again.cancel_reason, "changed my mind");
    assert_eq!(env.stock(&widget).await.total_available, 6);
    // A cancelled order cannot be completed.
    expect_code(
        env.complete(&op, &dropped.id).await,
        Code::FailedPrecondition,
    );

    // An operator may cancel anyone's pending order; no reason gets a default one.
    let third = env.create(&c, "third", &[(&widget, 1)]).await.unwrap();
    let cancelled = env.cancel(&op, &third.id, "").await.unwrap();
    assert_eq!(status_of(&cancelled), pb::OrderStatus::Cancelled);
    assert!(!cancelled.cancel_reason.is_empty());

    // Unknown ids and missing ids.
    expect_code(env.complete(&op, "no-such-order").await, Code::NotFound);
    expect_code(env.cancel(&op, "no-such-order", "").await, Code::NotFound);
    expect_code(env.complete(&op, "").await, Code::InvalidArgument);
    env.assert_books_balance().await;
}

pub async fn customers_cannot_cancel_other_peoples_orders(backend: Backend) {
    let env = Env::start(backend).await;
    let widget = env.product("widget", 250, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    let order = env
        .create(&env.customer.token, "mine", &[(&widget, 2)])
        .await
        .unwrap();
    expect_code(
        env.cancel(&env.other.token, &order.id, "").await,
        Code::NotFound,
    );
    expect_code(
        env.cancel(&env.service.token, &order.id, "").await,
        Code::NotFound,
    );
    let still = env.get(&env.customer.token, &order.id).await.unwrap();
    assert_eq!(status_of(&still), pb::OrderStatus::Pending);
    assert_eq!(env.stock(&widget).await.total_reserved, 2);
    env.assert_books_balance().await;
}

pub async fn concurrent_complete_and_cancel_have_one_winner(backend: Backend) {
    let env = Arc::new(Env::start(backend).await);
    let widget = env.product("widget", 250, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 100).await;

    for round in 0..5 {
        let order = env
            .create(
                &env.customer.token,
                &format!("race-{round}"),
                &[(&widget, 1), (&widget, 2), (&widget, 3)],
            )
            .await
            .unwrap();
        let calls = (0..6).map(|i| {
            let env = env.clone();
            let id = order.id.clone();
            async move {
                if i % 2 == 0 {
                    env.complete(&env.operator.token, &id).await
                } else {
                    env.cancel(&env.operator.token, &id, "race").await
                }
            }
        });
        let results = join_all(calls).await;
        let end = env.get(&env.operator.token, &order.id).await.unwrap();
        let end_status = status_of(&end);
        assert_ne!(
            end_status,
            pb::OrderStatus::Pending,
            "one of them finished it"
        );
        for r in results {
            match r {
                // Every success reports the one end state.
                Ok(o) => assert_eq!(status_of(&o), end_status),
                // The losers are refused, or told to retry.
                Err(s) => assert!(
                    matches!(s.code(), Code::FailedPrecondition | Code::Aborted),
                    "{s:?}"
                ),
            }
        }
        let want = if end_status == pb::OrderStatus::Completed {
            ReservationStatus::Committed
        } else {
            ReservationStatus::Released
        };
        for item in &end.items {
            let r = env.reservation(&item.reservation_id).await.unwrap();
            assert_eq!(r.status, want as i32, "every line follows the order");
        }
    }
    env.assert_books_balance().await;
}
