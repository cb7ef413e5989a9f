//! Order events and WatchOrders: an `OrderStatusChanged` in the transaction of every
//! change clients see (a failure injected between the change and its commit takes both,
//! through a trigger on `outbox`; see [`OutboxLog`]), carrying the order as the RPC
//! answered it; WatchOrders shows customers their own orders only and staff every order,
//! and ends UNAUTHENTICATED when the token expires. Embedded event bus (no NATS).

use std::time::Duration;

use stockmesh::Target;
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::orders::v1::{self as pb, OrderStatus};
use stockmesh::testing::{Backend, TestMesh, with_token};
use tonic::Code;
use tonic::codec::Streaming;

use crate::support::{Env, expect_code, status_of};
use stockmesh::testing::outbox_log::{OutboxLog, fail_outbox, heal_outbox, schema_session};

const TOPIC: &str = "orders.order_status_changed";
const SECOND: Duration = Duration::from_secs(1);
const PATIENCE: Duration = Duration::from_secs(10);

async fn orders_db(env: &Env) -> sea_orm::DatabaseConnection {
    stockmesh::db::connect(&env.mesh.database_url(Target::Orders))
        .await
        .unwrap_or_else(|e| panic!("orders db: {e}"))
}

fn statuses(events: &[pb::OrderStatusChanged]) -> Vec<(String, OrderStatus, OrderStatus)> {
    events
        .iter()
        .map(|e| {
            (
                e.order_id.clone(),
                OrderStatus::try_from(e.old_status).unwrap_or_default(),
                OrderStatus::try_from(e.new_status).unwrap_or_default(),
            )
        })
        .collect()
}

pub async fn an_order_change_and_its_event_commit_or_roll_back_together(backend: Backend) {
    let env = Env::start(backend).await;
    let db = schema_session(&env.mesh.database_url(Target::Orders)).await;
    let log = OutboxLog::install(orders_db(&env).await).await;
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    let (c, op) = (env.customer.token.clone(), env.operator.token.clone());

    // Creation: PENDING cannot be written, so the saga rolls back; nothing stays.
    fail_outbox(&db).await;
    assert!(env.create(&c, "r1", &[(&widget, 2)]).await.is_err());
    assert!(env.all_orders().await.is_empty());
    assert_eq!(env.stock(&widget).await.total_reserved, 0);
    heal_outbox(&db).await;
    let order = env
        .create(&c, "r1", &[(&widget, 2)])
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let events: Vec<pb::OrderStatusChanged> = log.since(0, TOPIC).await;
    assert_eq!(
        statuses(&events),
        [(
            order.id.clone(),
            OrderStatus::Unspecified,
            OrderStatus::Pending
        )]
    );

    // Completion: refused at its last write, the order stays PENDING for clients.
    fail_outbox(&db).await;
    assert!(env.complete(&op, &order.id).await.is_err());
    let now = env
        .get(&c, &order.id)
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status_of(&now), OrderStatus::Pending);
    heal_outbox(&db).await;
    let done = env
        .complete(&op, &order.id)
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status_of(&done), OrderStatus::Completed);

    // Cancellation likewise.
    let other = env
        .create(&c, "r2", &[(&widget, 1)])
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    fail_outbox(&db).await;
    assert!(env.cancel(&c, &other.id, "").await.is_err());
    let now = env
        .get(&c, &other.id)
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status_of(&now), OrderStatus::Pending);
    heal_outbox(&db).await;
    env.cancel(&c, &other.id, "")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));

    let events: Vec<pb::OrderStatusChanged> = log.since(0, TOPIC).await;
    assert_eq!(
        statuses(&events),
        [
            (
                order.id.clone(),
                OrderStatus::Unspecified,
                OrderStatus::Pending
            ),
            (
                order.id.clone(),
                OrderStatus::Pending,
                OrderStatus::Completed
            ),
            (
                other.id.clone(),
                OrderStatus::Unspecified,
                OrderStatus::Pending
            ),
            (
                other.id.clone(),
                OrderStatus::Pending,
                OrderStatus::Cancelled
            ),
        ],
        "exactly one event per change"
    );
    env.assert_books_balance().await;
    let _ = db.close().await;
}

pub async fn order_events_carry_the_order_as_answered(backend: Backend) {
    let env = Env::start(backend).await;
    let log = OutboxLog::install(orders_db(&env).await).await;
    let widget = env.product("widget", 250, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    let (c, op) = (env.customer.token.clone(), env.operator.token.clone());

    let created = env
        .create(&c, "a", &[(&widget, 2), (&widget, 1)])
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    // A replay is no change.
    env.create(&c, "a", &[(&widget, 2), (&widget, 1)])
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let completed = env
        .complete(&op, &created.id)
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    env.complete(&op, &created.id)
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let second = env
        .create(&c, "b", &[(&widget, 1)])
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let cancelled = env
        .cancel(&c, &second.id, "changed my mind")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));

    let events: Vec<pb::OrderStatusChanged> = log.since(0, TOPIC).await;
    assert_eq!(events.len(), 4, "{:?}", statuses(&events));
    assert_eq!(log.len().await, 4, "orders writes no other event");
    let logged = log.all().await;
    for (e, l) in events.iter().zip(&logged) {
        assert_eq!(e.event_id, l.event_id, "the message carries its event id");
    }
    for (e, answer) in events
        .iter()
        .zip([&created, &completed, &second, &cancelled])
    {
        assert_eq!(
            e.order.as_ref(),
            Some(answer),
            "the order as the RPC answered"
        );
        assert_eq!(
            (e.order_id.as_str(), e.customer_id.as_str(), e.total_cents),
            (
                answer.id.as_str(),
                env.customer.id.as_str(),
                answer.total_cents
            )
        );
        assert!(!e.event_id.is_empty() && e.occurred_at.is_some());
    }
    assert_eq!(created.total_cents, 750);
    assert_eq!(cancelled.cancel_reason, "changed my mind");
    assert!(created.items.iter().all(|i| i.warehouse_id == w));
}

async fn watch(env: &Env, token: &str) -> Streaming<pb::WatchOrdersResponse> {
    env.orders()
        .watch_orders(with_token(pb::WatchOrdersRequest::default(), token))
        .await
        .unwrap_or_else(|s| panic!("watch: {s:?}"))
        .into_inner()
}

async fn next(
    stream: &mut Streaming<pb::WatchOrdersResponse>,
    within: Duration,
) -> (String, OrderStatus, OrderStatus) {
    match tokio::time::timeout(within, stream.message()).await {
        Ok(Ok(Some(m))) => {
            let order = m.order.unwrap_or_default();
            (
                order.id.clone(),
                OrderStatus::try_from(m.previous_status).unwrap_or_default(),
                status_of(&order),
            )
        }
        Ok(other) => panic!("stream ended: {other:?}"),
        Err(_) => panic!("no message within {within:?}"),
    }
}

pub async fn watch_orders_shows_customers_their_own_and_staff_everything(backend: Backend) {
    let env = Env::start(backend).await;
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    let (c, o, op) = (
        env.customer.token.clone(),
        env.other.token.clone(),
        env.operator.token.clone(),
    );
    expect_code(
        env.orders()
            .watch_orders(pb::WatchOrdersRequest::default())
            .await,
        Code::Unauthenticated,
    );
    let mut mine = watch(&env, &c).await;
    let mut theirs = watch(&env, &o).await;
    let mut staff = watch(&env, &op).await;

    let own = env
        .create(&c, "own", &[(&widget, 1)])
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let created = (
        own.id.clone(),
        OrderStatus::Unspecified,
        OrderStatus::Pending,
    );
    assert_eq!(next(&mut mine, SECOND).await, created);
    assert_eq!(next(&mut staff, SECOND).await, created);

    let foreign = env
        .create(&o, "foreign", &[(&widget, 1)])
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let foreign_created = (
        foreign.id.clone(),
        OrderStatus::Unspecified,
        OrderStatus::Pending,
    );
    assert_eq!(next(&mut theirs, SECOND).await, foreign_created);
    assert_eq!(next(&mut staff, SECOND).await, foreign_created);

    env.complete(&op, &own.id)
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let completed = (own.id.clone(), OrderStatus::Pending, OrderStatus::Completed);
    // The customer's next message is their own order's completion: the other
    // customer's order, published before it, was never sent to them.
    assert_eq!(next(&mut mine, SECOND).await, completed);
    assert_eq!(next(&mut staff, SECOND).await, completed);
    env.cancel(&o, &foreign.id, "")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let cancelled = (
        foreign.id.clone(),
        OrderStatus::Pending,
        OrderStatus::Cancelled,
    );
    assert_eq!(next(&mut theirs, SECOND).await, cancelled);
    assert_eq!(next(&mut staff, SECOND).await, cancelled);
    // Nothing else for the first customer (the stream has nothing pending).
    let again = env
        .create(&c, "own-2", &[(&widget, 1)])
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(next(&mut mine, SECOND).await.0, again.id);
}

pub async fn watch_orders_ends_unauthenticated_when_the_token_expires(backend: Backend) {
    let env = Env::start_with(backend, |c| c.auth.access_token_ttl_secs = 2).await;
    // A fresh token, good for two seconds.
    let token = AuthServiceClient::new(TestMesh::channel(env.auth.addr).await)
        .login(LoginRequest {
            email: "customer@orders.test".into(),
            password: "correct-horse-battery".into(),
        })
        .await
        .unwrap_or_else(|s| panic!("login: {s:?}"))
        .into_inner()
        .access_token;
    let mut stream = watch(&env, &token).await;
    let ended = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap_or_else(|_| panic!("the stream outlived its token"));
    match ended {
        Err(s) => {
            assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
            assert!(s.message().contains("token expired"), "{s:?}");
        }
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}
