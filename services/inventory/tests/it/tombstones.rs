//! Late Reserve after Release: a Release of an id never reserved records a RELEASED
//! tombstone, and a Reserve of that id arriving afterwards (or racing it) never leaves
//! stock reserved. Also the migration that lets the schema hold tombstones.

use std::sync::Arc;

use futures::future::join_all;
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, IntoActiveModel};
use sea_orm_migration::MigratorTrait;
use stockmesh::proto::inventory::v1::{self as pb, ReservationStatus};
use stockmesh::testing::{Backend, TestDb};
use stockmesh_inventory::Migrator;
use stockmesh_inventory::entity::reservation::{self, Status};
use stockmesh_inventory::entity::warehouse;
use stockmesh_inventory::error::is_check_violation;
use stockmesh_inventory::txn::now;
use tonic::Code;

use crate::common::{Env, expect_code, reserve_req, status};

stockmesh::db_tests!(
    release_before_reserve_leaves_a_tombstone_and_moves_no_stock,
    concurrent_release_and_reserve_of_one_id_end_consistent,
    tombstone_migration_keeps_reservations_and_enforces_the_row_shape,
);

fn assert_tombstone(r: &pb::Reservation, id: &str) {
    assert_eq!(r.reservation_id, id);
    assert_eq!(status(r), ReservationStatus::Released, "{r:?}");
    assert_eq!(
        (r.product_id.as_str(), r.warehouse_id.as_str(), r.quantity),
        ("", "", 0),
        "a tombstone names no product, warehouse or units: {r:?}"
    );
}

async fn release_before_reserve_leaves_a_tombstone_and_moves_no_stock(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.restock(&product, &wh, 5).await;

    // The compensating Release arrives first: OK, and it is recorded.
    let released = env
        .release("late")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_tombstone(&released, "late");
    let again = env
        .release("late")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(
        again, released,
        "releasing again returns the same tombstone"
    );
    let fetched = env
        .get_reservation("late")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(fetched, released);
    let msg = expect_code(env.commit("late").await, Code::FailedPrecondition);
    assert!(msg.contains("RELEASED"), "{msg}");

    // The late Reserve lands: it gets the tombstone and reserves nothing, whatever it
    // asks for (no ALREADY_EXISTS, no shortage).
    for quantity in [3, 4, 500] {
        let late = env
            .reserve(reserve_req("late", &product, quantity))
            .await
            .unwrap_or_else(|s| panic!("late reserve of {quantity}: {s:?}"));
        assert_eq!(late, released, "the late Reserve gets the tombstone");
        assert_eq!(
            env.stock_in(&product, &wh).await,
            (5, 0),
            "nothing reserved"
        );
    }

    // The stock is all still there for others.
    let fresh = env
        .reserve(reserve_req("fresh", &product, 5))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(status(&fresh), ReservationStatus::Reserved);
    assert_eq!(env.stock_in(&product, &wh).await, (5, 5));
    let s = env.stock(&product).await;
    assert_eq!(
        (s.total_on_hand, s.total_reserved, s.total_available),
        (5, 5, 0)
    );
}

async fn concurrent_release_and_reserve_of_one_id_end_consistent(backend: Backend) {
    let env = Arc::new(Env::start(backend).await);
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.restock(&product, &wh, 100).await;

    // Each id gets a Reserve and a Release at the same time; which one inventory sees
    // first varies (and alternates which the client sends first).
    const IDS: usize = 24;
    let pairs = (0..IDS).map(|i| {
        let (env, product) = (env.clone(), product.clone());
        async move {
            let id = format!("race-{i}");
            let reserve = env.reserve(reserve_req(&id, &product, 2));
            let release = env.release(&id);
            let (reserved, released) = if i % 2 == 0 {
                tokio::join!(reserve, release)
            } else {
                let (released, reserved) = tokio::join!(release, reserve);
                (reserved, released)
            };
            (id, reserved, released)
        }
    });
    let mut reserved_first = 0;
    for (id, reserved, released) in join_all(pairs).await {
        let reserved = reserved.unwrap_or_else(|s| panic!("reserve {id}: {s:?}"));
        let released = released.unwrap_or_else(|s| panic!("release {id}: {s:?}"));
        let stored = env
            .get_reservation(&id)
            .await
            .unwrap_or_else(|s| panic!("{s:?}"));
        assert_eq!(status(&stored), ReservationStatus::Released, "{stored:?}");
        assert_eq!(released, stored, "the Release answers with the final row");
        match status(&reserved) {
            // Reserved, then released by the Release.
            ReservationStatus::Reserved => {
                reserved_first += 1;
                assert_eq!(
                    (stored.product_id.as_str(), stored.warehouse_id.as_str()),
                    (product.as_str(), wh.as_str())
                );
                assert_eq!(stored.quantity, 2);
            }
            // The tombstone won: the Reserve got it and reserved nothing.
            ReservationStatus::Released => {
                assert_tombstone(&stored, &id);
                assert_eq!(reserved, stored);
            }
            other => panic!("reserve {id} answered {other:?}"),
        }
        // A replay afterwards changes nothing.
        let replay = env
            .reserve(reserve_req(&id, &product, 2))
            .await
            .unwrap_or_else(|s| panic!("{s:?}"));
        assert_eq!(replay, stored);
    }
    eprintln!("{reserved_first} of {IDS} reserves landed before their release");
    assert_eq!(
        env.stock_in(&product, &wh).await,
        (100, 0),
        "no stock stays reserved"
    );
}

fn row(id: &str, product: Option<&str>, quantity: i64, status: Status) -> reservation::Model {
    let at = now();
    reservation::Model {
        reservation_id: id.to_string(),
        product_id: product.map(str::to_string),
        warehouse_id: product.map(|_| "w".to_string()),
        quantity,
        status,
        expires_at: at,
        created_at: at,
        updated_at: at,
    }
}

async fn insert(db: &DatabaseConnection, r: &reservation::Model) -> Result<(), sea_orm::DbErr> {
    r.clone()
        .into_active_model()
        .reset_all()
        .insert(db)
        .await
        .map(drop)
}

async fn find(db: &DatabaseConnection, id: &str) -> Option<reservation::Model> {
    reservation::Entity::find_by_id(id.to_string())
        .one(db)
        .await
        .unwrap_or_else(|e| panic!("find {id}: {e}"))
}

async fn tombstone_migration_keeps_reservations_and_enforces_the_row_shape(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = stockmesh::db::connect(&test_db.url)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    // The schema as shipped before tombstones, with data in it.
    Migrator::up(&db, Some(1))
        .await
        .unwrap_or_else(|e| panic!("initial migration: {e}"));
    let at = now();
    warehouse::Model {
        id: "w".into(),
        name: "w".into(),
        address: String::new(),
        latitude: 0.0,
        longitude: 0.0,
        capacity: 0,
        created_at: at,
        updated_at: at,
    }
    .into_active_model()
    .reset_all()
    .insert(&db)
    .await
    .unwrap_or_else(|e| panic!("warehouse: {e}"));
    let held = row("held", Some("p"), 2, Status::Reserved);
    insert(&db, &held)
        .await
        .unwrap_or_else(|e| panic!("reservation: {e}"));
    let tombstone = row("gone", None, 0, Status::Released);
    assert!(
        insert(&db, &tombstone).await.is_err(),
        "the initial schema has no room for a tombstone"
    );

    Migrator::up(&db, None)
        .await
        .unwrap_or_else(|e| panic!("tombstone migration: {e}"));
    assert_eq!(find(&db, "held").await, Some(held.clone()), "rows survive");
    insert(&db, &tombstone)
        .await
        .unwrap_or_else(|e| panic!("tombstone refused: {e}"));
    assert_eq!(find(&db, "gone").await, Some(tombstone));
    // Only the two shapes are allowed.
    for bad in [
        row("zero-with-product", Some("p"), 0, Status::Released),
        row("tombstone-reserved", None, 0, Status::Reserved),
        row("tombstone-expired", None, 0, Status::Expired),
        row("units-without-product", None, 3, Status::Released),
        row("negative", Some("p"), -1, Status::Reserved),
    ] {
        match insert(&db, &bad).await {
            Err(e) if is_check_violation(&e) => {}
            other => panic!("{} must violate a CHECK: {other:?}", bad.reservation_id),
        }
    }
    // The warehouse foreign key still holds.
    let mut nowhere = row("nowhere", Some("p"), 1, Status::Reserved);
    nowhere.warehouse_id = Some("no-such-warehouse".into());
    assert!(insert(&db, &nowhere).await.is_err());
    assert!(find(&db, "nowhere").await.is_none());

    // Down drops the tombstones (the old shape cannot hold them) and keeps the rest; up
    // again works.
    // (The migrations after it go first.)
    let after_init = u32::try_from(Migrator::migrations().len() - 1).unwrap_or(1);
    Migrator::down(&db, Some(after_init))
        .await
        .unwrap_or_else(|e| panic!("down: {e}"));
    assert_eq!(find(&db, "held").await, Some(held.clone()));
    assert!(find(&db, "gone").await.is_none());
    Migrator::up(&db, None)
        .await
        .unwrap_or_else(|e| panic!("up again: {e}"));
    assert_eq!(find(&db, "held").await, Some(held));
    let _ = db.close().await;
}
