//! A PENDING order lasts as long as its reservations: once inventory expires one (its
//! TTL), the order ends CANCELLED "reservation expired" with nothing left reserved,
//! whether the reconciler notices first or a CompleteOrder does.

use std::time::Duration;

use stockmesh::Target;
use stockmesh::proto::inventory::v1::ReservationStatus;
use stockmesh::proto::orders::v1 as pb;
use stockmesh::testing::Backend;
use stockmesh_orders::entity::order::{self, Status};
use stockmesh_orders::entity::order_item;
use stockmesh_orders::orders::RESERVATION_EXPIRED;
use stockmesh_orders::store::{self, OrderRecord};
use tonic::Code;

use crate::support::{Env, eventually, expect_code, status_of};

/// Bound on waiting for background work (expiry sweeps every 50 ms, the TTL is 1 s).
const CONVERGE: Duration = Duration::from_secs(45);

pub async fn pending_orders_whose_reservations_expire_are_cancelled(backend: Backend) {
    let env = Env::start_with(backend, |c| {
        c.inventory.reservation_ttl_secs = 1;
        c.inventory.reservation_sweep_ms = 50;
        c.orders.reconcile_interval_ms = 100;
    })
    .await;
    let widget = env.product("widget", 100, "USD").await;
    let gadget = env.product("gadget", 250, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    env.restock(&gadget, &w, 10).await;

    let order = env
        .create(&env.customer.token, "held", &[(&widget, 2), (&gadget, 3)])
        .await
        .unwrap();
    assert_eq!(status_of(&order), pb::OrderStatus::Pending);
    assert_eq!(env.stock(&widget).await.total_reserved, 2);
    assert_eq!(env.stock(&gadget).await.total_reserved, 3);

    let cancelled = eventually(
        CONVERGE,
        "the reconciler to cancel the order whose reservations expired",
        || async {
            env.get(&env.customer.token, &order.id)
                .await
                .ok()
                .filter(|o| status_of(o) == pb::OrderStatus::Cancelled)
        },
    )
    .await;
    assert_eq!(cancelled.cancel_reason, RESERVATION_EXPIRED);
    assert_eq!(cancelled.items, order.items);
    let mut expired = 0;
    for item in &cancelled.items {
        let r = env.reservation(&item.reservation_id).await.unwrap();
        // Expired by inventory, or released by the reconciler if it got there first.
        match ReservationStatus::try_from(r.status) {
            Ok(ReservationStatus::Expired) => expired += 1,
            Ok(ReservationStatus::Released) => {}
            other => panic!("line {} ended {other:?}", item.reservation_id),
        }
    }
    assert!(expired >= 1, "an expiry is what cancelled the order");
    for product in [&widget, &gadget] {
        let stock = env.stock(product).await;
        assert_eq!(
            (stock.total_on_hand, stock.total_reserved),
            (10, 0),
            "nothing held, nothing shipped"
        );
    }

    // Too late to complete; cancelling again is a no-op that keeps the reason.
    let msg = expect_code(
        env.complete(&env.operator.token, &order.id).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains(RESERVATION_EXPIRED), "{msg}");
    let again = env
        .cancel(&env.customer.token, &order.id, "never mind")
        .await
        .unwrap();
    assert_eq!(again.cancel_reason, RESERVATION_EXPIRED);
    env.assert_books_balance().await;
}

pub async fn completing_an_order_whose_reservation_expired_cancels_it(backend: Backend) {
    let mut env = Env::start_with(backend, |c| {
        c.inventory.reservation_ttl_secs = 1;
        c.inventory.reservation_sweep_ms = 50;
        // The reconciler stays out of it: CompleteOrder must find the expiry itself.
        c.orders.reconcile_interval_ms = 3_600_000;
    })
    .await;
    let widget = env.product("widget", 100, "USD").await;
    let gadget = env.product("gadget", 250, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    env.restock(&gadget, &w, 10).await;

    // A PENDING order whose line 0 reservation has expired while line 1's is still held
    // (inventory restarted with a long TTL in between), so that what CompleteOrder does
    // to the line it can still release is visible.
    let id = uuid::Uuid::now_v7().to_string();
    let line0 = format!("{id}-0");
    let line1 = format!("{id}-1");
    env.reserve(&line0, &widget, 2).await;
    eventually(CONVERGE, "line 0's reservation to expire", || async {
        env.reservation(&line0)
            .await
            .filter(|r| r.status == ReservationStatus::Expired as i32)
    })
    .await;
    env.stop_inventory().await;
    env.mesh.config.inventory.reservation_ttl_secs = 3600;
    env.restart_inventory().await;
    let held = env.reserve(&line1, &gadget, 3).await;
    assert_eq!(held.status, ReservationStatus::Reserved as i32);
    stage_pending(&env, &id, &[(&widget, 2, &w), (&gadget, 3, &w)]).await;
    assert_eq!(env.stock(&widget).await.total_reserved, 0);
    assert_eq!(env.stock(&gadget).await.total_reserved, 3);

    let msg = expect_code(
        env.complete(&env.operator.token, &id).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains(RESERVATION_EXPIRED), "{msg}");
    let order = env.get(&env.operator.token, &id).await.unwrap();
    assert_eq!(status_of(&order), pb::OrderStatus::Cancelled);
    assert_eq!(order.cancel_reason, RESERVATION_EXPIRED);
    let r0 = env.reservation(&line0).await.unwrap();
    assert_eq!(r0.status, ReservationStatus::Expired as i32);
    let r1 = env.reservation(&line1).await.unwrap();
    assert_eq!(
        r1.status,
        ReservationStatus::Released as i32,
        "the line still held is released, not committed"
    );
    for product in [&widget, &gadget] {
        let stock = env.stock(product).await;
        assert_eq!((stock.total_on_hand, stock.total_reserved), (10, 0));
    }

    // Completing again says the same; the order stays cancelled.
    let msg = expect_code(
        env.complete(&env.admin.token, &id).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains(RESERVATION_EXPIRED), "{msg}");
    let order = env.get(&env.customer.token, &id).await.unwrap();
    assert_eq!(status_of(&order), pb::OrderStatus::Cancelled);
    env.assert_books_balance().await;
}

/// Writes a PENDING order of the customer's with id `id` whose lines (product, quantity,
/// warehouse) use the reservations `<id>-<line>`, as CreateOrder would have.
async fn stage_pending(env: &Env, id: &str, lines: &[(&str, i64, &str)]) {
    let db = stockmesh::db::connect(&env.mesh.database_url(Target::Orders))
        .await
        .unwrap_or_else(|e| panic!("orders db: {e}"));
    let at = store::now();
    let items: Vec<order_item::Model> = lines
        .iter()
        .enumerate()
        .map(|(line, (product, quantity, warehouse))| order_item::Model {
            order_id: id.to_string(),
            line: line as i32,
            product_id: product.to_string(),
            product_name: "staged".into(),
            quantity: *quantity,
            unit_price_cents: 100,
            warehouse_id: warehouse.to_string(),
            reservation_id: format!("{id}-{line}"),
        })
        .collect();
    let record = OrderRecord {
        order: order::Model {
            id: id.to_string(),
            customer_id: env.customer.id.clone(),
            request_id: format!("staged-{id}"),
            status: Status::Pending,
            total_cents: items.iter().map(|i| i.quantity * 100).sum(),
            currency: "USD".into(),
            cancel_reason: String::new(),
            version: 1,
            created_at: at,
            updated_at: at,
            claimed_until: None,
        },
        items,
    };
    store::insert(&db, &record, u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("stage order: {e}"));
    let _ = db.close().await;
}
