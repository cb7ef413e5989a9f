//! The expiry sweeper with several replicas: two sweepers over one database, racing each
//! other and Commit/Release calls, expire every due reservation exactly once (counted per
//! id from what each sweeper reports) and conserve stock; and one reservation whose stock
//! row disagrees with it does not hold up the others.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter,
};
use stockmesh::Target;
use stockmesh::proto::inventory::v1::{self as pb, ReservationStatus};
use stockmesh::testing::Backend;
use stockmesh_inventory::entity::reservation::{self, Status};
use stockmesh_inventory::entity::stock;
use stockmesh_inventory::{reservations, sweeper};
use tonic::Code;

use crate::common::{Env, reserve_req, status};

stockmesh::db_tests!(
    two_sweepers_expire_each_due_reservation_exactly_once,
    a_reservation_its_stock_row_disagrees_with_holds_up_no_other,
);

/// Reservations in the wave.
const WAVE: usize = 600;
/// Bound on waiting for the wave to fall due and be swept.
const CONVERGE: Duration = Duration::from_secs(120);

async fn connect(env: &Env) -> DatabaseConnection {
    stockmesh::db::connect(&env.mesh.database_url(Target::Inventory))
        .await
        .unwrap_or_else(|e| panic!("inventory db: {e}"))
}

/// RESERVED reservations past their expiry.
async fn due(db: &DatabaseConnection) -> u64 {
    reservation::Entity::find()
        .filter(reservation::Column::Status.eq(Status::Reserved))
        .filter(reservation::Column::ExpiresAt.lte(stockmesh_inventory::txn::now()))
        .count(db)
        .await
        .unwrap_or_else(|e| panic!("count due: {e}"))
}

/// A sweeper of its own (its own pool, as another replica has), batch by batch until
/// nothing is due; returns the ids it expired.
async fn sweep_apart(db: DatabaseConnection) -> Vec<String> {
    let mut expired = Vec::new();
    loop {
        let batch = reservations::expire_batch(&db, 25)
            .await
            .unwrap_or_else(|e| panic!("expire batch: {e}"));
        assert!(batch.len() <= 25, "a batch took {} rows", batch.len());
        if batch.is_empty() {
            let _ = db.close().await;
            return expired;
        }
        for r in batch {
            assert_eq!(r.status, Status::Expired);
            expired.push(r.reservation_id);
        }
    }
}

async fn two_sweepers_expire_each_due_reservation_exactly_once(backend: Backend) {
    let env = Arc::new(
        Env::start_with(backend, |c| {
            c.inventory.reservation_ttl_secs = 1;
            // The server's own sweeper stays out of the way (its first tick is at start,
            // before anything exists); the two under test are driven below.
            c.inventory.reservation_sweep_ms = 3_600_000;
        })
        .await,
    );
    let products = [env.product("widget").await, env.product("gadget").await];
    let mut warehouses = Vec::new();
    for (i, name) in ["north", "south", "east"].iter().enumerate() {
        warehouses.push(env.warehouse(name, i as f64, 0.0).await);
    }
    for p in &products {
        for w in &warehouses {
            env.restock(p, w, 1_000).await;
        }
    }

    // The wave: quantities 1..=3, spread over every product and warehouse.
    let wave: Vec<(String, usize, usize, i64)> = (0..WAVE)
        .map(|i| (format!("wave-{i}"), i % 2, (i / 2) % 3, 1 + (i % 3) as i64))
        .collect();
    for chunk in wave.chunks(50) {
        let reserves = chunk.iter().map(|(id, p, w, q)| {
            let env = env.clone();
            let req = pb::ReserveRequest {
                warehouse_id: Some(warehouses[*w].clone()),
                ..reserve_req(id, &products[*p], *q)
            };
            async move { env.reserve(req).await }
        });
        for r in join_all(reserves).await {
            let r = r.unwrap_or_else(|s| panic!("reserve: {s:?}"));
            assert_eq!(status(&r), ReservationStatus::Reserved);
        }
    }
    let db = connect(&env).await;
    let give_up = Instant::now() + CONVERGE;
    while due(&db).await < WAVE as u64 {
        assert!(Instant::now() < give_up, "the wave never fell due");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two sweepers and a client committing every 10th and releasing every 7th, at once.
    let a = tokio::spawn(sweep_apart(connect(&env).await));
    let b = tokio::spawn(sweep_apart(connect(&env).await));
    let client = {
        let env = env.clone();
        let wave = wave.clone();
        tokio::spawn(async move {
            let mut committed = HashSet::new();
            let mut released = HashSet::new();
            for (i, (id, ..)) in wave.iter().enumerate() {
                if i % 10 == 0 {
                    match env.commit(id).await {
                        Ok(r) => {
                            assert_eq!(status(&r), ReservationStatus::Committed);
                            committed.insert(id.clone());
                        }
                        Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
                    }
                } else if i % 7 == 0 {
                    let r = env
                        .release(id)
                        .await
                        .unwrap_or_else(|s| panic!("release: {s:?}"));
                    // RELEASED when the release won, EXPIRED when a sweeper did.
                    if status(&r) == ReservationStatus::Released {
                        released.insert(id.clone());
                    }
                }
            }
            (committed, released)
        })
    };
    let expired_a = a.await.unwrap_or_else(|e| panic!("sweeper a: {e}"));
    let expired_b = b.await.unwrap_or_else(|e| panic!("sweeper b: {e}"));
    let (committed, released) = client.await.unwrap_or_else(|e| panic!("client: {e}"));
    eprintln!(
        "sweeper a expired {}, sweeper b {}; the client committed {} and released {}",
        expired_a.len(),
        expired_b.len(),
        committed.len(),
        released.len()
    );

    // Exactly once: no id twice, by one sweeper or by both, and none a client call moved.
    let mut times: HashMap<&str, usize> = HashMap::new();
    for id in expired_a.iter().chain(&expired_b) {
        *times.entry(id.as_str()).or_default() += 1;
    }
    assert!(
        times.values().all(|n| *n == 1),
        "a reservation was expired twice"
    );
    for id in times.keys() {
        assert!(!committed.contains(*id) && !released.contains(*id), "{id}");
    }
    assert_eq!(
        times.len() + committed.len() + released.len(),
        WAVE,
        "every reservation ended one way"
    );
    if backend == Backend::Postgres {
        // SKIP LOCKED: neither waits for the other's rows, so both get work. (SQLite has
        // one writer at a time, and its busy wait may let one sweeper take every batch.)
        assert!(
            !expired_a.is_empty() && !expired_b.is_empty(),
            "both sweepers took part"
        );
    }
    for (id, ..) in &wave {
        let stored = env
            .get_reservation(id)
            .await
            .unwrap_or_else(|s| panic!("{s:?}"));
        let expected = if committed.contains(id) {
            ReservationStatus::Committed
        } else if released.contains(id) {
            ReservationStatus::Released
        } else {
            ReservationStatus::Expired
        };
        assert_eq!(status(&stored), expected, "{id}");
    }

    // Stock: nothing reserved, and only committed units left on hand.
    for (pi, p) in products.iter().enumerate() {
        for (wi, w) in warehouses.iter().enumerate() {
            let shipped: i64 = wave
                .iter()
                .filter(|(id, rp, rw, _)| *rp == pi && *rw == wi && committed.contains(id))
                .map(|(.., q)| q)
                .sum();
            assert_eq!(env.stock_in(p, w).await, (1_000 - shipped, 0), "{p} in {w}");
        }
    }
    assert_eq!(due(&db).await, 0);
    let _ = db.close().await;
}

async fn a_reservation_its_stock_row_disagrees_with_holds_up_no_other(backend: Backend) {
    let env = Env::start_with(backend, |c| {
        c.inventory.reservation_ttl_secs = 1;
        c.inventory.reservation_sweep_ms = 3_600_000;
    })
    .await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.restock(&product, &wh, 100).await;
    for i in 0..5 {
        env.reserve(reserve_req(&format!("good-{i}"), &product, 2))
            .await
            .unwrap_or_else(|s| panic!("{s:?}"));
    }
    // A reservation whose units its stock row does not have reserved (only a bug or a hand
    // edit produces this): expiring it must fail, alone.
    let db = connect(&env).await;
    let at = stockmesh_inventory::txn::now();
    reservation::Model {
        reservation_id: "bad".into(),
        product_id: Some(product.clone()),
        warehouse_id: Some(wh.clone()),
        quantity: 50,
        status: Status::Reserved,
        expires_at: at - chrono::Duration::hours(1),
        created_at: at,
        updated_at: at,
    }
    .into_active_model()
    .reset_all()
    .insert(&db)
    .await
    .unwrap_or_else(|e| panic!("stage bad reservation: {e}"));
    let give_up = Instant::now() + CONVERGE;
    while due(&db).await < 6 {
        assert!(Instant::now() < give_up, "the reservations never fell due");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The batch fails as a whole, then the sweep expires the others one by one.
    assert!(reservations::expire_batch(&db, 100).await.is_err());
    assert_eq!(due(&db).await, 6, "a failed batch changes nothing");
    let swept = sweeper::sweep(&db)
        .await
        .unwrap_or_else(|e| panic!("sweep: {e}"));
    assert_eq!(swept, 5);
    for i in 0..5 {
        let r = env
            .get_reservation(&format!("good-{i}"))
            .await
            .unwrap_or_else(|s| panic!("{s:?}"));
        assert_eq!(status(&r), ReservationStatus::Expired);
    }
    assert_eq!(env.stock_in(&product, &wh).await, (100, 0));
    let bad = env
        .get_reservation("bad")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(
        status(&bad),
        ReservationStatus::Reserved,
        "left for a human"
    );

    // Once the stock row agrees again, the next sweep expires it.
    stock::Entity::update_many()
        .col_expr(
            stock::Column::Reserved,
            Expr::col(stock::Column::Reserved).add(50),
        )
        .filter(stock::Column::ProductId.eq(product.as_str()))
        .filter(stock::Column::WarehouseId.eq(wh.as_str()))
        .exec(&db)
        .await
        .unwrap_or_else(|e| panic!("repair stock: {e}"));
    assert_eq!(
        sweeper::sweep(&db)
            .await
            .unwrap_or_else(|e| panic!("sweep: {e}")),
        1
    );
    assert_eq!(env.stock_in(&product, &wh).await, (100, 0));
    let _ = db.close().await;
}
