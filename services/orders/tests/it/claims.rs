//! The reconciler's claims at the store level, with the reconciler itself idle: a claim
//! takes at most a batch, never a row someone holds, walks forward, and lapses; many
//! claimers at once (each with its own pool, as replicas have) split the rows between them
//! with none taken twice; the batch cancellation only moves rows still as they were read.

use std::collections::HashSet;

use stockmesh::testing::Backend;
use stockmesh_orders::entity::order::Status;
use stockmesh_orders::orders::RESERVATION_EXPIRED;
use stockmesh_orders::store::{self, Due};

use crate::staging::{count, orders_db, plan, stage_orders};
use crate::support::Env;

/// An env whose reconciler stays out of the way (its first round is an hour away).
async fn idle_reconciler(backend: Backend) -> Env {
    Env::start_with(backend, |c| c.orders.reconcile_interval_ms = 3_600_000).await
}

fn expiry() -> Due {
    // Staged orders were created an hour ago.
    Due::Expiry {
        created_before: store::now() - chrono::Duration::minutes(1),
    }
}

pub async fn claims_take_a_batch_of_unclaimed_rows_and_lapse(backend: Backend) {
    let env = idle_reconciler(backend).await;
    let staged = plan(250, 1);
    stage_orders(&env, &staged, Status::Pending, "p", "w", 1).await;
    let db = orders_db(&env).await;
    let now = store::now();
    let until = now + chrono::Duration::seconds(60);
    let claim = |after: Option<store::After>, now, until| {
        let db = db.clone();
        async move {
            store::claim_due(&db, expiry(), now, until, after.as_ref(), 100)
                .await
                .unwrap_or_else(|e| panic!("claim: {e}"))
        }
    };

    // At most a batch each time, oldest first, and never a row already held.
    let a = claim(None, now, until).await;
    let b = claim(None, now, until).await;
    let c = claim(None, now, until).await;
    assert_eq!((a.len(), b.len(), c.len()), (100, 100, 50));
    assert!(claim(None, now, until).await.is_empty(), "all are held");
    let mut ids = HashSet::new();
    for o in a.iter().chain(&b).chain(&c) {
        assert!(ids.insert(o.id.clone()), "{} claimed twice", o.id);
        assert_eq!(o.claimed_until, Some(until));
        assert_eq!(o.version, 2, "claiming is no version bump");
    }
    assert_eq!(ids.len(), 250);
    let order = |v: &[stockmesh_orders::entity::order::Model]| {
        v.windows(2)
            .all(|w| expiry().position(&w[0]) < expiry().position(&w[1]))
    };
    assert!(
        order(&a) && order(&b) && order(&c),
        "each batch in walk order"
    );
    assert!(
        expiry().position(&a[99]) < expiry().position(&b[0]),
        "oldest first"
    );

    // Handing one back: only with the claim's own value.
    let gone = store::now() - chrono::Duration::seconds(1);
    assert!(
        !store::unclaim(&db, &a[0].id, now, gone)
            .await
            .unwrap_or_else(|e| panic!("unclaim: {e}")),
        "another claim's value does not match"
    );
    assert!(
        store::unclaim(&db, &a[0].id, until, gone)
            .await
            .unwrap_or_else(|e| panic!("unclaim: {e}"))
    );
    let back = claim(None, store::now(), until).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].id, a[0].id);

    // Claims lapse: at `until` every row is free again, and a walk only moves forward.
    let later = until + chrono::Duration::seconds(1);
    let again = claim(None, later, later + chrono::Duration::seconds(60)).await;
    assert_eq!(again.len(), 100);
    let after = expiry().position(&again[99]);
    let rest = claim(Some(after.clone()), later, later).await;
    assert_eq!(rest.len(), 100);
    assert!(rest.iter().all(|o| expiry().position(o) > after));
    let _ = db.close().await;
}

pub async fn concurrent_claimers_split_the_rows_and_take_none_twice(backend: Backend) {
    const ORDERS: usize = 1_000;
    const CLAIMERS: usize = 6;
    let env = idle_reconciler(backend).await;
    let staged = plan(ORDERS, 1);
    stage_orders(&env, &staged, Status::Pending, "p", "w", 1).await;

    // Each claimer with its own pool, as a replica has; batches of 25 until none is left.
    let url = env.mesh.database_url(stockmesh::Target::Orders);
    let claimers = (0..CLAIMERS).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let db = stockmesh::db::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let mut mine = Vec::new();
            loop {
                let now = store::now();
                let batch = store::claim_due(
                    &db,
                    expiry(),
                    now,
                    now + chrono::Duration::seconds(60),
                    None,
                    25,
                )
                .await
                .unwrap_or_else(|e| panic!("claim: {e}"));
                assert!(batch.len() <= 25, "a claim took {} rows", batch.len());
                if batch.is_empty() {
                    let _ = db.close().await;
                    return mine;
                }
                mine.extend(batch.into_iter().map(|o| o.id));
            }
        })
    });
    let mut seen = HashSet::new();
    let mut split = Vec::new();
    for claimer in futures::future::join_all(claimers).await {
        let mine = claimer.unwrap_or_else(|e| panic!("claimer: {e}"));
        split.push(mine.len());
        for id in mine {
            assert!(seen.insert(id.clone()), "{id} claimed twice");
        }
    }
    eprintln!("rows per claimer: {split:?}");
    assert_eq!(seen.len(), ORDERS, "every row claimed once");
}

pub async fn batch_cancellation_moves_only_rows_as_they_were_read(backend: Backend) {
    let env = idle_reconciler(backend).await;
    let staged = plan(4, 1);
    stage_orders(&env, &staged, Status::Pending, "p", "w", 1).await;
    let db = orders_db(&env).await;
    // Order 1 changed since it was read (a version bump); order 2 was claimed by a
    // CompleteOrder (PENDING → COMPLETING).
    assert!(
        store::transition(
            &db,
            &staged[1].id,
            &[Status::Pending],
            None,
            Status::Pending,
            None
        )
        .await
        .unwrap_or_else(|e| panic!("bump: {e}"))
    );
    assert!(
        store::transition(
            &db,
            &staged[2].id,
            &[Status::Pending],
            None,
            Status::Completing,
            None
        )
        .await
        .unwrap_or_else(|e| panic!("claim: {e}"))
    );
    // Every order as read at version 2 (before the two changes above).
    let mut seen = Vec::new();
    for p in &staged {
        let mut record = store::record(&db, &p.id)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"))
            .unwrap_or_else(|| panic!("order {} gone", p.id));
        record.order.version = 2;
        seen.push(record);
    }
    let moved = store::cancel_pending(&db, &seen, RESERVATION_EXPIRED)
        .await
        .unwrap_or_else(|e| panic!("cancel: {e}"));
    let expected: HashSet<String> = [staged[0].id.clone(), staged[3].id.clone()].into();
    assert_eq!(moved, expected);
    for (i, status) in [
        Status::Cancelled,
        Status::Pending,
        Status::Completing,
        Status::Cancelled,
    ]
    .into_iter()
    .enumerate()
    {
        let o = store::order(&db, &staged[i].id)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"))
            .unwrap_or_else(|| panic!("order {i} gone"));
        assert_eq!(o.status, status, "order {i}");
        if status == Status::Cancelled {
            assert_eq!(
                (o.cancel_reason.as_str(), o.version),
                (RESERVATION_EXPIRED, 3)
            );
        }
    }
    assert_eq!(count(&db, &[Status::Cancelled]).await, 2);
    let _ = db.close().await;
}
