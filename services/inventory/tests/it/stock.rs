//! GetStock, Restock and AdjustStock: idempotent by request_id, product checked in
//! ProductService, nothing written when that check cannot be made.

use std::sync::Arc;

use futures::future::join_all;
use stockmesh::Target;
use stockmesh::proto::inventory::v1 as pb;
use stockmesh::testing::{Backend, with_token};
use tonic::Code;

use crate::common::{Env, expect_code};

stockmesh::db_tests!(
    get_stock_is_public_and_zero_when_never_stocked,
    restock_replays_move_stock_once_even_concurrently,
    adjust_replays_move_stock_once_and_never_go_below_reserved,
    restock_checks_the_product_and_the_warehouse,
    restock_with_products_down_is_unavailable_and_writes_nothing,
);

fn adjust(
    env: &Env,
    product: &str,
    wh: &str,
    delta: i64,
    reason: &str,
    id: &str,
) -> impl std::future::Future<Output = Result<pb::Stock, tonic::Status>> + use<> {
    let mut client = env.inv();
    let req = with_token(
        pb::AdjustStockRequest {
            product_id: product.to_string(),
            warehouse_id: wh.to_string(),
            delta,
            reason: reason.to_string(),
            request_id: id.to_string(),
        },
        &env.operator,
    );
    async move {
        Ok(client
            .adjust_stock(req)
            .await?
            .into_inner()
            .stock
            .unwrap_or_default())
    }
}

async fn get_stock_is_public_and_zero_when_never_stocked(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("widget").await;
    let s = env.stock(&product).await;
    assert_eq!(s.product_id, product);
    assert_eq!(
        (s.total_on_hand, s.total_reserved, s.total_available),
        (0, 0, 0)
    );
    assert!(s.warehouses.is_empty());

    let a = env.warehouse("a", 0.0, 0.0).await;
    let b = env.warehouse("b", 0.0, 1.0).await;
    env.restock(&product, &a, 7).await;
    env.restock(&product, &b, 3).await;
    let s = env.stock(&product).await;
    assert_eq!(
        (s.total_on_hand, s.total_reserved, s.total_available),
        (10, 0, 10)
    );
    assert_eq!(s.warehouses.len(), 2);
    let row_a = s.warehouses.iter().find(|w| w.warehouse_id == a);
    assert_eq!(
        row_a.map(|w| (w.on_hand, w.reserved, w.available)),
        Some((7, 0, 7))
    );

    // A bad token on a public RPC is still refused.
    let bad = env
        .inv()
        .get_stock(with_token(
            pb::GetStockRequest {
                product_id: product.clone(),
            },
            "garbage",
        ))
        .await;
    expect_code(bad, Code::Unauthenticated);
    let msg = expect_code(
        env.inv()
            .get_stock(pb::GetStockRequest {
                product_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("product_id"), "{msg}");
}

async fn restock_replays_move_stock_once_even_concurrently(backend: Backend) {
    let env = Arc::new(Env::start(backend).await);
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;

    let first = env
        .try_restock(&product, &wh, 5, "restock-1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(first.total_on_hand, 5);
    // Stock moves in between; the replay still answers the first result.
    env.restock(&product, &wh, 1).await;
    let replay = env
        .try_restock(&product, &wh, 5, "restock-1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(replay, first);
    assert_eq!(env.stock(&product).await.total_on_hand, 6);

    // The key is bound to its parameters.
    let msg = expect_code(
        env.try_restock(&product, &wh, 6, "restock-1").await,
        Code::AlreadyExists,
    );
    assert!(msg.contains("restock-1"), "{msg}");

    // Concurrent first calls with one key: exactly one moves stock, all answer the same.
    let calls = (0..20).map(|_| {
        let (env, product, wh) = (env.clone(), product.clone(), wh.clone());
        async move { env.try_restock(&product, &wh, 2, "restock-2").await }
    });
    let results: Vec<pb::Stock> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|s| panic!("concurrent replay failed: {s:?}")))
        .collect();
    for r in &results {
        assert_eq!(r, &results[0]);
    }
    assert_eq!(results[0].total_on_hand, 8);
    assert_eq!(env.stock(&product).await.total_on_hand, 8);

    let msg = expect_code(
        env.try_restock(&product, &wh, 0, "restock-3").await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("quantity"), "{msg}");
    let msg = expect_code(
        env.try_restock(&product, &wh, 1, "").await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("request_id"), "{msg}");
}

async fn adjust_replays_move_stock_once_and_never_go_below_reserved(backend: Backend) {
    let env = Arc::new(Env::start(backend).await);
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    env.restock(&product, &wh, 10).await;

    let first = adjust(&env, &product, &wh, -3, "shrinkage", "adj-1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(first.total_on_hand, 7);
    let replay = adjust(&env, &product, &wh, -3, "shrinkage", "adj-1")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(replay, first);
    expect_code(
        adjust(&env, &product, &wh, -4, "shrinkage", "adj-1").await,
        Code::AlreadyExists,
    );
    assert_eq!(env.stock(&product).await.total_on_hand, 7);

    let calls = (0..20).map(|_| adjust(&env, &product, &wh, 5, "count correction", "adj-2"));
    let results: Vec<pb::Stock> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|s| panic!("concurrent replay failed: {s:?}")))
        .collect();
    assert!(results.iter().all(|r| r == &results[0]));
    assert_eq!(env.stock(&product).await.total_on_hand, 12);

    // Reserve 10 of 12: on_hand may drop to 10, not below.
    env.reserve(crate::common::reserve_req("hold", &product, 10))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let msg = expect_code(
        adjust(&env, &product, &wh, -3, "shrinkage", "adj-3").await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains("below reserved"), "{msg}");
    let ok = adjust(&env, &product, &wh, -2, "shrinkage", "adj-4")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(
        (ok.total_on_hand, ok.total_reserved, ok.total_available),
        (10, 10, 0)
    );
    // The refused request was not recorded: the key is still free for a valid change.
    let later = adjust(&env, &product, &wh, 1, "found one", "adj-3").await;
    assert_eq!(later.map(|s| s.total_on_hand).ok(), Some(11));
    // Nothing in stock at a warehouse: cannot go negative either.
    let other = env.warehouse("empty", 0.0, 0.0).await;
    expect_code(
        adjust(&env, &product, &other, -1, "shrinkage", "adj-5").await,
        Code::FailedPrecondition,
    );

    let msg = expect_code(
        adjust(&env, &product, &wh, 0, "x", "adj-6").await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("delta"), "{msg}");
    let msg = expect_code(
        adjust(&env, &product, &wh, 1, " ", "adj-7").await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("reason"), "{msg}");
    expect_code(
        adjust(&env, &product, "no-such-warehouse", 1, "x", "adj-8").await,
        Code::NotFound,
    );
}

async fn restock_checks_the_product_and_the_warehouse(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let msg = expect_code(
        env.try_restock(&unknown, &wh, 1, "r1").await,
        Code::NotFound,
    );
    assert!(msg.contains(&unknown), "{msg}");
    let msg = expect_code(
        env.try_restock(&product, &unknown, 1, "r2").await,
        Code::NotFound,
    );
    assert!(msg.contains("warehouse"), "{msg}");
    assert_eq!(env.stock(&unknown).await.total_on_hand, 0);
    assert_eq!(env.stock(&product).await.total_on_hand, 0);
}

async fn restock_with_products_down_is_unavailable_and_writes_nothing(backend: Backend) {
    let mut env = Env::start(backend).await;
    let product = env.product("widget").await;
    let wh = env.warehouse("main", 0.0, 0.0).await;
    let products = env
        .products
        .take()
        .unwrap_or_else(|| panic!("products running"));
    let addr = products.addr;
    products.stop().await;

    let msg = expect_code(
        env.try_restock(&product, &wh, 5, "while-down").await,
        Code::Unavailable,
    );
    assert!(msg.contains("product"), "{msg}");
    assert_eq!(
        env.stock(&product).await.total_on_hand,
        0,
        "nothing written"
    );

    // Back up: the same request id was never recorded, so it applies now.
    let restarted = env
        .mesh
        .restart_on(Target::Products, addr, stockmesh_products::serve)
        .await;
    env.products = Some(restarted);
    let s = env
        .try_restock(&product, &wh, 5, "while-down")
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    assert_eq!(s.total_on_hand, 5);
}
