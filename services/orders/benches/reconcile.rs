//! How fast the orders reconciler brings a wave of due orders to an end, on SQLite and
//! (when reachable at `STOCKMESH_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432`)
//! on PostgreSQL. `cargo bench -p stockmesh-orders --bench reconcile`.
//!
//! `STOCKMESH_BENCH_BACKENDS=sqlite` (or `postgres`) runs one backend only; with
//! `RUST_LOG` set, the services' logs are printed (e.g. `stockmesh_orders=debug` for the
//! reconciler's rounds).
//!
//! The whole mesh runs in-process (auth, products, inventory, orders, as in the tests);
//! `STOCKMESH_BENCH_ORDERS` PENDING orders (default 5,000, one line each) created an hour
//! ago are staged in one transaction, then the clock runs until none is left PENDING. Two
//! scenarios per backend:
//!
//! * `drain`: their reservations are already EXPIRED in inventory and the reconciler runs
//!   every 100 ms, so the time is the reconciler's own: claiming, GetReservation, the
//!   PENDING → CANCELLING → CANCELLED transitions and a Release per order.
//! * `wave`: their reservations are RESERVED but past expiry (the sweeper has yet to run),
//!   with the default periods (sweep 5 s, reconcile 5 s): the time until the books agree
//!   (nothing reserved, nothing PENDING), waits for the next tick included. This is the
//!   issue's "5,000 due orders reconciled within 10 s".

use std::time::{Duration, Instant};

use stockmesh::Target;
use stockmesh::testing::Backend;
use stockmesh_orders::entity::order::Status;

#[path = "../tests/it/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../tests/it/staging.rs"]
#[allow(dead_code)]
mod staging;

use staging::{Held, count, orders_db, plan, stage_orders, stage_reservations};
use support::Env;

/// Give up on a scenario after this long.
const LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Drain,
    Wave,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let n: usize = std::env::var("STOCKMESH_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let only = std::env::var("STOCKMESH_BENCH_BACKENDS").unwrap_or_default();
    runtime.block_on(async {
        if std::env::var_os("RUST_LOG").is_some() {
            stockmesh::telemetry::init(stockmesh::telemetry::LogFormat::Human, "reconcile-bench");
        }
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let name = format!("{backend:?}").to_lowercase();
            if !only.is_empty() && !only.split(',').any(|b| b.trim() == name) {
                continue;
            }
            if !backend.available().await {
                continue;
            }
            for scenario in [Scenario::Drain, Scenario::Wave] {
                run(backend, scenario, n).await;
            }
        }
    });
}

async fn run(backend: Backend, scenario: Scenario, n: usize) {
    let env = Env::start_with(backend, |c| {
        if scenario == Scenario::Drain {
            c.orders.reconcile_interval_ms = 100;
        }
        if backend == Backend::Postgres && std::env::var_os("STOCKMESH_BENCH_PG_NO_TLS").is_some() {
            for target in Target::SERVICES {
                let url = c.database_url(target);
                c.set_database_url(target, format!("{url}?sslmode=disable"));
            }
        }
    })
    .await;
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, n as i64).await;
    // One order placed and cancelled first, so that orders' channels to inventory and its
    // service token are up before the clock runs.
    let warm = env
        .create(&env.customer.token, "warm-up", &[(&widget, 1)])
        .await
        .unwrap_or_else(|s| panic!("warm-up order: {s:?}"));
    env.cancel(&env.customer.token, &warm.id, "warm-up")
        .await
        .unwrap_or_else(|s| panic!("cancel warm-up order: {s:?}"));
    let wave = plan(n, 1);
    let held = match scenario {
        Scenario::Drain => Held::Expired,
        Scenario::Wave => Held::DueToExpire,
    };
    stage_reservations(&env, &wave, &widget, &w, 1, held).await;
    stage_orders(&env, &wave, Status::Pending, &widget, &w, 1).await;

    let db = orders_db(&env).await;
    let started = Instant::now();
    let mut first = None;
    loop {
        let left = count(&db, &[Status::Pending, Status::Cancelling]).await;
        if first.is_none() && left < n as u64 {
            first = Some(started.elapsed());
        }
        if left == 0 {
            let reserved = env.stock(&widget).await.total_reserved;
            if reserved == 0 {
                break;
            }
        }
        assert!(
            started.elapsed() < LIMIT,
            "{backend:?} {scenario:?}: {left} orders still due after {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let first = first.unwrap_or(took);
    let what = match scenario {
        Scenario::Drain => "drain (reservations expired, reconcile every 100 ms)",
        Scenario::Wave => "wave  (reservations due, default 5 s sweep / 5 s reconcile)",
    };
    println!(
        "{:<8} {what}: {n} orders in {:.2} s ({:.0} orders/s); first cancelled after {:.2} s, {:.2} s from first to last",
        format!("{backend:?}"),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        first.as_secs_f64(),
        (took - first).as_secs_f64(),
    );
    assert_eq!(count(&db, &[Status::Cancelled]).await, n as u64 + 1);
    env.assert_books_balance().await;
    let _ = db.close().await;
}
