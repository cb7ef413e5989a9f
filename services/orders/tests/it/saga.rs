//! CreateOrder: snapshot and routing, validation, idempotency, concurrency against scarce
//! stock, and the rollback paths (short stock, inventory down) that must leave nothing
//! reserved.

use std::sync::Arc;

use futures::future::join_all;
use stockmesh::proto::orders::v1 as pb;
use stockmesh::testing::Backend;
use tonic::Code;

use crate::support::{Env, expect_code, order_req, status_of};

pub async fn order_snapshots_prices_and_reserves_in_the_nearest_able_warehouse(backend: Backend) {
    let env = Env::start(backend).await;
    let apple = env.product("apple", 150, "EUR").await;
    let pear = env.product("pear", 99, "EUR").await;
    let paris = env.warehouse("paris", 48.85, 2.35).await;
    let berlin = env.warehouse("berlin", 52.52, 13.40).await;
    env.restock(&apple, &paris, 5).await;
    env.restock(&apple, &berlin, 5).await;
    env.restock(&pear, &paris, 1).await;
    env.restock(&pear, &berlin, 10).await;

    // Delivered near Paris: apples from Paris; 3 pears only Berlin can serve.
    let mut req = order_req("snap-1", &[(&apple, 2), (&pear, 3)]);
    req.latitude = Some(48.9);
    req.longitude = Some(2.4);
    let order = env.create_req(&env.customer.token, req).await.unwrap();
    assert_eq!(status_of(&order), pb::OrderStatus::Pending);
    assert_eq!(order.customer_id, env.customer.id);
    assert_eq!(order.request_id, "snap-1");
    assert_eq!(order.currency, "EUR");
    assert_eq!(order.total_cents, 2 * 150 + 3 * 99);
    assert!(order.cancel_reason.is_empty());
    assert!(order.created_at.is_some() && order.updated_at.is_some());
    // The answer is the stored order, field for field (the saga does not read it back).
    assert_eq!(
        env.get(&env.customer.token, &order.id).await.unwrap(),
        order
    );
    assert_eq!(order.items.len(), 2);
    let (a, p) = (&order.items[0], &order.items[1]);
    assert_eq!(
        (
            a.product_id.as_str(),
            a.product_name.as_str(),
            a.quantity,
            a.unit_price_cents
        ),
        (apple.as_str(), "apple", 2, 150)
    );
    assert_eq!(
        (
            p.product_id.as_str(),
            p.product_name.as_str(),
            p.quantity,
            p.unit_price_cents
        ),
        (pear.as_str(), "pear", 3, 99)
    );
    assert_eq!(a.warehouse_id, paris);
    assert_eq!(p.warehouse_id, berlin);
    assert_eq!(a.reservation_id, format!("{}-0", order.id));
    assert_eq!(p.reservation_id, format!("{}-1", order.id));
    let held = env.reservation(&a.reservation_id).await.unwrap();
    assert_eq!(
        (held.quantity, held.warehouse_id.as_str()),
        (2, paris.as_str())
    );

    // A preferred warehouse wins when it can serve the line.
    let mut req = order_req("snap-2", &[(&apple, 1)]);
    req.latitude = Some(48.9);
    req.longitude = Some(2.4);
    req.warehouse_id = Some(berlin.clone());
    let order = env.create_req(&env.customer.token, req).await.unwrap();
    assert_eq!(order.items[0].warehouse_id, berlin);

    // GetOrder shows the same lines.
    let got = env.get(&env.customer.token, &order.id).await.unwrap();
    assert_eq!(got, order);
    env.assert_books_balance().await;
}

pub async fn bad_requests_are_refused_before_anything_is_reserved(backend: Backend) {
    let env = Env::start(backend).await;
    let apple = env.product("apple", 100, "USD").await;
    let yen = env.product("yen-thing", 100, "JPY").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&apple, &w, 10).await;
    env.restock(&yen, &w, 10).await;
    let t = env.customer.token.clone();

    let cases: Vec<(pb::CreateOrderRequest, &str)> = vec![
        (order_req("", &[(&apple, 1)]), "request_id"),
        (order_req("r", &[]), "items"),
        (order_req("r", &vec![(apple.as_str(), 1); 101]), "items"),
        (order_req("r", &[(&apple, 0)]), "items[0].quantity"),
        (
            order_req("r", &[(&apple, 1), (&apple, -1)]),
            "items[1].quantity",
        ),
        (
            order_req("r", &[(&apple, 1), ("", 1)]),
            "items[1].product_id",
        ),
        (
            pb::CreateOrderRequest {
                latitude: Some(90.5),
                longitude: Some(0.0),
                ..order_req("r", &[(&apple, 1)])
            },
            "latitude",
        ),
        (
            pb::CreateOrderRequest {
                latitude: Some(10.0),
                longitude: Some(-181.0),
                ..order_req("r", &[(&apple, 1)])
            },
            "longitude",
        ),
        (
            pb::CreateOrderRequest {
                latitude: Some(10.0),
                ..order_req("r", &[(&apple, 1)])
            },
            "longitude",
        ),
    ];
    for (req, field) in cases {
        let msg = expect_code(env.create_req(&t, req).await, Code::InvalidArgument);
        assert!(msg.starts_with(field), "{msg:?} should name {field}");
    }

    // Unknown product, mixed currencies, a customer ordering for someone else.
    expect_code(
        env.create(&t, "r", &[("no-such-product", 1)]).await,
        Code::NotFound,
    );
    expect_code(
        env.create(&t, "r", &[(&apple, 1), (&yen, 1)]).await,
        Code::FailedPrecondition,
    );
    let mut req = order_req("r", &[(&apple, 1)]);
    req.customer_id = Some(env.other.id.clone());
    expect_code(env.create_req(&t, req).await, Code::PermissionDenied);

    // A hundred lines are fine.
    env.restock(&apple, &w, 90).await;
    let order = env
        .create(&t, "hundred", &vec![(apple.as_str(), 1); 100])
        .await
        .unwrap();
    assert_eq!(order.items.len(), 100);
    assert_eq!(order.total_cents, 100 * 100);

    assert_eq!(env.stock(&apple).await.total_reserved, 100);
    assert_eq!(env.stock(&yen).await.total_reserved, 0);
    assert_eq!(env.all_orders().await.len(), 1);
    env.assert_books_balance().await;
}

pub async fn staff_may_order_for_a_customer(backend: Backend) {
    let env = Env::start(backend).await;
    let apple = env.product("apple", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&apple, &w, 10).await;

    let mut req = order_req("for-them", &[(&apple, 2)]);
    req.customer_id = Some(env.customer.id.clone());
    let order = env
        .create_req(&env.operator.token, req.clone())
        .await
        .unwrap();
    assert_eq!(order.customer_id, env.customer.id);
    // The customer sees it as theirs, and the key is theirs: the same request id from
    // the customer returns the same order.
    assert_eq!(
        env.get(&env.customer.token, &order.id).await.unwrap().id,
        order.id
    );
    let again = env
        .create(&env.customer.token, "for-them", &[(&apple, 2)])
        .await
        .unwrap();
    assert_eq!(again.id, order.id);
    // A customer naming themselves is fine too.
    let mut own = order_req("own", &[(&apple, 1)]);
    own.customer_id = Some(env.customer.id.clone());
    let own = env.create_req(&env.customer.token, own).await.unwrap();
    assert_eq!(own.customer_id, env.customer.id);
    assert_eq!(env.stock(&apple).await.total_reserved, 3);
    env.assert_books_balance().await;
}

pub async fn fifty_concurrent_orders_for_twenty_units_never_oversell(backend: Backend) {
    // One customer places all fifty: lift the open-order cap so stock alone decides.
    let env = Arc::new(
        Env::start_with(backend, |c| c.orders.max_pending_orders_per_customer = 100).await,
    );
    let widget = env.product("widget", 500, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 20).await;

    let calls = (0..50).map(|i| {
        let env = env.clone();
        let widget = widget.clone();
        async move {
            env.create(&env.customer.token, &format!("rush-{i}"), &[(&widget, 1)])
                .await
        }
    });
    let results = join_all(calls).await;
    let mut ok = 0;
    for r in &results {
        match r {
            Ok(order) => {
                assert_eq!(status_of(order), pb::OrderStatus::Pending);
                ok += 1;
            }
            Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
        }
    }
    assert_eq!(ok, 20, "exactly the stock's worth of orders succeed");
    let stock = env.stock(&widget).await;
    assert_eq!(
        (
            stock.total_on_hand,
            stock.total_reserved,
            stock.total_available
        ),
        (20, 20, 0)
    );
    // Failed attempts leave no order behind.
    assert_eq!(env.all_orders().await.len(), 20);
    env.assert_books_balance().await;
}

pub async fn replays_return_the_same_order_and_reserve_once(backend: Backend) {
    let env = Arc::new(Env::start(backend).await);
    let widget = env.product("widget", 500, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 100).await;

    // Sequential replay.
    let first = env
        .create(&env.customer.token, "once", &[(&widget, 3)])
        .await
        .unwrap();
    let again = env
        .create(&env.customer.token, "once", &[(&widget, 3)])
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(env.stock(&widget).await.total_reserved, 3);

    // The same key from another customer is another order.
    let theirs = env
        .create(&env.other.token, "once", &[(&widget, 1)])
        .await
        .unwrap();
    assert_ne!(theirs.id, first.id);
    assert_eq!(env.stock(&widget).await.total_reserved, 4);

    // Ten concurrent calls with one key, racing the first one: one order, one
    // reservation per line.
    let calls = (0..10).map(|_| {
        let env = env.clone();
        let widget = widget.clone();
        async move {
            env.create(&env.customer.token, "burst", &[(&widget, 2), (&widget, 5)])
                .await
        }
    });
    let results = join_all(calls).await;
    let orders: Vec<pb::Order> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|s| panic!("concurrent replay failed: {s:?}")))
        .collect();
    for o in &orders {
        assert_eq!(o.id, orders[0].id);
        assert_eq!(status_of(o), pb::OrderStatus::Pending);
        assert_eq!(o.items.len(), 2);
    }
    assert_eq!(env.stock(&widget).await.total_reserved, 4 + 7);
    assert_eq!(env.all_orders().await.len(), 3);

    // A replay of a completed order returns it as it is now, and moves nothing.
    env.complete(&env.operator.token, &first.id).await.unwrap();
    let replay = env
        .create(&env.customer.token, "once", &[(&widget, 3)])
        .await
        .unwrap();
    assert_eq!(replay.id, first.id);
    assert_eq!(status_of(&replay), pb::OrderStatus::Completed);
    let stock = env.stock(&widget).await;
    assert_eq!((stock.total_on_hand, stock.total_reserved), (97, 8));
    env.assert_books_balance().await;
}

pub async fn a_short_line_rolls_back_the_lines_before_it(backend: Backend) {
    let env = Env::start(backend).await;
    let plenty = env.product("plenty", 100, "USD").await;
    let scarce = env.product("scarce", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&plenty, &w, 10).await;
    env.restock(&scarce, &w, 1).await;

    let msg = expect_code(
        env.create(&env.customer.token, "greedy", &[(&plenty, 4), (&scarce, 2)])
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        msg.contains(&scarce),
        "the message names the short product: {msg}"
    );
    let stock = env.stock(&plenty).await;
    assert_eq!((stock.total_reserved, stock.total_available), (0, 10));
    assert_eq!(env.stock(&scarce).await.total_reserved, 0);
    assert!(env.all_orders().await.is_empty());

    // The failed key is free to succeed once stock allows.
    env.restock(&scarce, &w, 1).await;
    let order = env
        .create(&env.customer.token, "greedy", &[(&plenty, 4), (&scarce, 2)])
        .await
        .unwrap();
    assert_eq!(status_of(&order), pb::OrderStatus::Pending);
    assert_eq!(env.stock(&plenty).await.total_reserved, 4);
    assert_eq!(env.stock(&scarce).await.total_reserved, 2);
    env.assert_books_balance().await;
}

/// The abuse caps: a customer holds at most `max_pending_orders_per_customer` open orders
/// (the next is RESOURCE_EXHAUSTED and writes nothing, even when sent concurrently), a
/// line asks for at most `max_quantity_per_line`; replays of an existing order are never
/// refused, and completing or cancelling one frees a place.
pub async fn open_orders_and_line_quantities_are_capped_per_customer(backend: Backend) {
    let env = Arc::new(
        Env::start_with(backend, |c| {
            c.orders.max_pending_orders_per_customer = 3;
            c.orders.max_quantity_per_line = 50;
        })
        .await,
    );
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 1000).await;
    let t = env.customer.token.clone();

    // Quantity cap: refused before anything happens, naming the line.
    let msg = expect_code(
        env.create(&t, "big", &[(&widget, 1), (&widget, 51)]).await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("items[1].quantity"), "{msg:?}");
    assert!(msg.contains("50"), "{msg:?} should say the cap");

    // Ten concurrent orders against a cap of 3: exactly 3 succeed, the rest are
    // RESOURCE_EXHAUSTED, and nothing of theirs is reserved or stored.
    let calls = (0..10).map(|i| {
        let env = env.clone();
        let widget = widget.clone();
        let t = t.clone();
        async move { env.create(&t, &format!("cap-{i}"), &[(&widget, 50)]).await }
    });
    let results = join_all(calls).await;
    let placed: Vec<&pb::Order> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(placed.len(), 3, "{results:?}");
    for r in &results {
        if let Err(s) = r {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            assert!(s.message().contains("open orders"), "{s:?}");
        }
    }
    assert_eq!(env.stock(&widget).await.total_reserved, 150);
    assert_eq!(env.all_orders().await.len(), 3);

    // A replay of a placed order is answered, cap or not.
    let first = placed[0];
    let again = env
        .create(&t, &first.request_id, &[(&widget, 50)])
        .await
        .unwrap_or_else(|s| panic!("replay refused: {s:?}"));
    assert_eq!(again.id, first.id);

    // Another customer is not affected by this one's cap.
    env.create(&env.other.token, "other-1", &[(&widget, 1)])
        .await
        .unwrap_or_else(|s| panic!("other customer refused: {s:?}"));

    // Cancelling one frees a place.
    expect_code(
        env.create(&t, "fourth", &[(&widget, 1)]).await,
        Code::ResourceExhausted,
    );
    env.cancel(&t, &first.id, "changed my mind").await.unwrap();
    let fourth = env.create(&t, "fourth", &[(&widget, 1)]).await.unwrap();
    assert_eq!(status_of(&fourth), pb::OrderStatus::Pending);
    env.assert_books_balance().await;
}
