//! Convergence after failures: an inventory outage during CreateOrder, and orders a crash
//! left half-way (staged directly in the orders database, exactly as a killed process
//! would leave them), finished by the reconciler.

use std::time::Duration;

use stockmesh::Target;
use stockmesh::proto::inventory::v1::ReservationStatus;
use stockmesh::proto::orders::v1 as pb;
use stockmesh::testing::Backend;
use stockmesh_orders::entity::order::{self, Status};
use stockmesh_orders::entity::order_item;
use stockmesh_orders::store::{self, OrderRecord};
use tonic::Code;

use crate::support::{Env, eventually, expect_code, status_of};

/// How long the reconciler gets to converge (it runs every 100 ms here; an open circuit
/// breaker to a restarted upstream may hold it back a few seconds).
const CONVERGE: Duration = Duration::from_secs(45);

async fn fast_reconciler(backend: Backend) -> Env {
    Env::start_with(backend, |c| {
        c.orders.reconcile_interval_ms = 100;
        c.orders.reconcile_after_secs = 1;
    })
    .await
}

async fn order_with_request(env: &Env, request_id: &str) -> Option<pb::Order> {
    env.all_orders()
        .await
        .into_iter()
        .find(|o| o.request_id == request_id)
}

pub async fn inventory_down_mid_saga_fails_unavailable_and_converges(backend: Backend) {
    let mut env = fast_reconciler(backend).await;
    let widget = env.product("widget", 100, "USD").await;
    let gadget = env.product("gadget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    env.restock(&gadget, &w, 10).await;

    env.stop_inventory().await;
    expect_code(
        env.create(&env.customer.token, "outage", &[(&widget, 2), (&gadget, 1)])
            .await,
        Code::Unavailable,
    );
    // The failed order is not shown while its rollback is pending.
    assert!(order_with_request(&env, "outage").await.is_none());

    env.restart_inventory().await;
    let cancelled = eventually(
        CONVERGE,
        "the reconciler to cancel the failed order",
        || async {
            order_with_request(&env, "outage")
                .await
                .filter(|o| status_of(o) == pb::OrderStatus::Cancelled)
        },
    )
    .await;
    assert!(
        cancelled.cancel_reason.starts_with("saga did not complete"),
        "{}",
        cancelled.cancel_reason
    );
    for item in &cancelled.items {
        if let Some(r) = env.reservation(&item.reservation_id).await {
            assert_ne!(r.status, ReservationStatus::Reserved as i32, "{r:?}");
        }
    }
    assert_eq!(env.stock(&widget).await.total_reserved, 0);
    assert_eq!(env.stock(&gadget).await.total_reserved, 0);

    // A replay now gets the outcome; a new key works again.
    let replay = env
        .create(&env.customer.token, "outage", &[(&widget, 2), (&gadget, 1)])
        .await
        .unwrap();
    assert_eq!(replay.id, cancelled.id);
    assert_eq!(status_of(&replay), pb::OrderStatus::Cancelled);
    let order = eventually(CONVERGE, "orders to reach inventory again", || async {
        env.create(&env.customer.token, "after", &[(&widget, 2), (&gadget, 1)])
            .await
            .ok()
    })
    .await;
    assert_eq!(status_of(&order), pb::OrderStatus::Pending);
    assert_eq!(env.stock(&widget).await.total_reserved, 2);
    env.assert_books_balance().await;
}

/// Writes an order as a crashed process would have left it, idle for an hour; `lines`
/// are (product, quantity, whether inventory holds its reservation). Returns its id.
async fn stage(
    env: &Env,
    db: &sea_orm::DatabaseConnection,
    status: Status,
    request_id: &str,
    lines: &[(&str, i64, bool)],
) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let at = store::now() - chrono::Duration::hours(1);
    let mut items = Vec::new();
    for (line, (product, quantity, reserved)) in lines.iter().enumerate() {
        let reservation_id = format!("{id}-{line}");
        let warehouse_id = if *reserved {
            env.reserve(&reservation_id, product, *quantity)
                .await
                .warehouse_id
        } else {
            String::new()
        };
        items.push(order_item::Model {
            order_id: id.clone(),
            line: line as i32,
            product_id: product.to_string(),
            product_name: "staged".into(),
            quantity: *quantity,
            unit_price_cents: 100,
            // A CREATING intent does not know its warehouses yet.
            warehouse_id: if status == Status::Creating {
                String::new()
            } else {
                warehouse_id
            },
            reservation_id,
        });
    }
    let total = items.iter().map(|i| i.quantity * 100).sum();
    let record = OrderRecord {
        order: order::Model {
            id: id.clone(),
            customer_id: env.customer.id.clone(),
            request_id: request_id.into(),
            status,
            total_cents: total,
            currency: "USD".into(),
            cancel_reason: String::new(),
            version: 3,
            created_at: at,
            updated_at: at,
            claimed_until: None,
        },
        items,
    };
    store::insert(db, &record, u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("stage order: {e}"));
    id
}

pub async fn interrupted_orders_are_finished_by_the_reconciler(backend: Backend) {
    let env = fast_reconciler(backend).await;
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 50).await;
    let db = stockmesh::db::connect(&env.mesh.database_url(Target::Orders))
        .await
        .unwrap_or_else(|e| panic!("orders db: {e}"));

    // Crashed after reserving every line, before PENDING: the order stands.
    let all_reserved = stage(
        &env,
        &db,
        Status::Creating,
        "a",
        &[(&widget, 2, true), (&widget, 3, true)],
    )
    .await;
    // Crashed after the first of two lines: rolled back.
    let half = stage(
        &env,
        &db,
        Status::Creating,
        "b",
        &[(&widget, 4, true), (&widget, 1, false)],
    )
    .await;
    // Failed, and crashed while releasing: rolled back.
    let aborting = stage(&env, &db, Status::Aborting, "c", &[(&widget, 5, true)]).await;
    // Complete and cancel whose inventory calls did not all happen: finished.
    let completing = stage(
        &env,
        &db,
        Status::Completing,
        "d",
        &[(&widget, 6, true), (&widget, 1, true)],
    )
    .await;
    let cancelling = stage(&env, &db, Status::Cancelling, "e", &[(&widget, 7, true)]).await;

    let expect = [
        (&all_reserved, pb::OrderStatus::Pending),
        (&half, pb::OrderStatus::Cancelled),
        (&aborting, pb::OrderStatus::Cancelled),
        (&completing, pb::OrderStatus::Completed),
        (&cancelling, pb::OrderStatus::Cancelled),
    ];
    for (id, status) in expect {
        let order = eventually(
            CONVERGE,
            "the reconciler to finish an interrupted order",
            || async {
                env.get(&env.operator.token, id)
                    .await
                    .ok()
                    .filter(|o| status_of(o) == status)
            },
        )
        .await;
        assert_eq!(order.customer_id, env.customer.id);
    }

    // Completed to PENDING with the warehouses inventory chose.
    let a = env.get(&env.customer.token, &all_reserved).await.unwrap();
    for item in &a.items {
        assert_eq!(item.warehouse_id, w);
        let r = env.reservation(&item.reservation_id).await.unwrap();
        assert_eq!(r.status, ReservationStatus::Reserved as i32);
    }
    let b = env.get(&env.customer.token, &half).await.unwrap();
    assert_eq!(b.cancel_reason, "saga did not complete");
    let released = env.reservation(&format!("{half}-0")).await.unwrap();
    assert_eq!(released.status, ReservationStatus::Released as i32);
    // Never reserved: inventory has nothing (or a released tombstone) for line 1.
    if let Some(r) = env.reservation(&format!("{half}-1")).await {
        assert_ne!(r.status, ReservationStatus::Reserved as i32);
    }
    let c = env.reservation(&format!("{aborting}-0")).await.unwrap();
    assert_eq!(c.status, ReservationStatus::Released as i32);
    for line in 0..2 {
        let d = env
            .reservation(&format!("{completing}-{line}"))
            .await
            .unwrap();
        assert_eq!(d.status, ReservationStatus::Committed as i32);
    }
    let e = env.reservation(&format!("{cancelling}-0")).await.unwrap();
    assert_eq!(e.status, ReservationStatus::Released as i32);

    let stock = env.stock(&widget).await;
    assert_eq!(
        (stock.total_on_hand, stock.total_reserved),
        (50 - 7, 5),
        "only the pending order holds stock; the completed one took 7"
    );
    env.assert_books_balance().await;
}

/// With inventory's circuit breaker open, CreateOrder fails UNAVAILABLE before touching
/// the database: no intent is inserted (nothing to roll back, nothing for the
/// reconciler); a replay is refused the same way meanwhile and returns its order once
/// inventory is back.
pub async fn an_open_inventory_breaker_fails_orders_before_any_write(backend: Backend) {
    let mut env = Env::start_with(backend, |c| {
        c.resilience.breaker_failures = 1;
        c.resilience.breaker_open_ms = 60_000;
        c.resilience.breaker_max_open_ms = 60_000;
    })
    .await;
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    let before = env
        .create(&env.customer.token, "before", &[(&widget, 1)])
        .await
        .unwrap();

    env.stop_inventory().await;
    // Orders placed while inventory is down trip its breaker.
    let mut tripped = false;
    for i in 0..10 {
        let err = env
            .create(&env.customer.token, &format!("trip-{i}"), &[(&widget, 1)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        if err.message().contains("circuit breaker open") {
            tripped = true;
            break;
        }
    }
    assert!(tripped, "inventory's breaker never opened");

    let db = stockmesh::db::connect(&env.mesh.database_url(Target::Orders))
        .await
        .unwrap_or_else(|e| panic!("orders db: {e}"));
    let rows = || async {
        use sea_orm::{EntityTrait, PaginatorTrait};
        (
            order::Entity::find().count(&db).await.unwrap(),
            order_item::Entity::find().count(&db).await.unwrap(),
        )
    };
    let written = rows().await;
    for i in 0..5 {
        let err = env
            .create(&env.customer.token, &format!("fast-{i}"), &[(&widget, 1)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains("inventory") && err.message().contains("circuit breaker open"),
            "{}",
            err.message()
        );
    }
    assert_eq!(
        rows().await,
        written,
        "no order or line written while refused"
    );
    // A replay is refused too (the refusal reads nothing), and retryable.
    let err = env
        .create(&env.customer.token, "before", &[(&widget, 1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // Inventory back: its health watch closes the breaker and orders go through again.
    env.restart_inventory().await;
    let after = eventually(CONVERGE, "orders to reach inventory again", || async {
        env.create(&env.customer.token, "after", &[(&widget, 1)])
            .await
            .ok()
    })
    .await;
    assert_eq!(status_of(&after), pb::OrderStatus::Pending);
    // The replay now returns the order placed before the outage, not a new one.
    let replay = env
        .create(&env.customer.token, "before", &[(&widget, 1)])
        .await
        .unwrap();
    assert_eq!(replay.id, before.id);
    assert_eq!(status_of(&replay), pb::OrderStatus::Pending);
    assert_eq!(env.stock(&widget).await.total_reserved, 2);
}
