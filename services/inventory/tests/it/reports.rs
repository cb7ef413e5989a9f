//! GetStockReport: rows with catalog names and prices, values, the StockLow threshold
//! rule (total available over every warehouse, own threshold else the default, 0 =
//! never), low_only, the warehouse filter, a product deleted from the catalog, more
//! products than one BatchGetProducts call takes, currencies, validation and roles.

use futures::StreamExt;
use sea_orm::{EntityTrait, Set};
use stockmesh::proto::inventory::v1 as pb;
use stockmesh::proto::products::v1::{CreateProductRequest, DeleteProductRequest};
use stockmesh::testing::{Backend, with_token};
use stockmesh_inventory::entity::stock;
use tonic::{Code, Request, Status};

use crate::common::{Env, expect_code};

stockmesh::db_tests!(
    stock_report_values_thresholds_and_filters,
    stock_report_of_more_products_than_one_catalog_call,
    stock_report_validation_and_roles,
);

const DEFAULT_THRESHOLD: u64 = 5;

async fn start(backend: Backend) -> Env {
    Env::start_with(backend, |c| {
        c.inventory.low_stock_threshold = DEFAULT_THRESHOLD;
    })
    .await
}

impl Env {
    /// A product priced `price_cents` in `currency`; returns its id.
    async fn priced(&self, name: &str, price_cents: i64, currency: &str) -> String {
        self.catalog
            .clone()
            .create_product(with_token(
                CreateProductRequest {
                    sku: format!("SKU-{name}"),
                    name: name.to_string(),
                    description: String::new(),
                    price_cents,
                    currency: currency.into(),
                    supplier_id: None,
                },
                &self.operator,
            ))
            .await
            .unwrap_or_else(|s| panic!("create product {name}: {s:?}"))
            .into_inner()
            .product
            .unwrap_or_else(|| panic!("no product"))
            .id
    }

    async fn delete_product(&self, id: &str) {
        self.catalog
            .clone()
            .delete_product(with_token(
                DeleteProductRequest { id: id.to_string() },
                &self.admin,
            ))
            .await
            .unwrap_or_else(|s| panic!("delete product {id}: {s:?}"));
    }

    async fn report_as(
        &self,
        token: Option<&str>,
        warehouse_id: &str,
        low_only: bool,
    ) -> Result<pb::GetStockReportResponse, Status> {
        let msg = pb::GetStockReportRequest {
            warehouse_id: warehouse_id.to_string(),
            low_only,
        };
        let req = match token {
            Some(t) => with_token(msg, t),
            None => Request::new(msg),
        };
        Ok(self.inv().get_stock_report(req).await?.into_inner())
    }

    async fn report(&self, warehouse_id: &str, low_only: bool) -> pb::GetStockReportResponse {
        self.report_as(Some(&self.operator), warehouse_id, low_only)
            .await
            .unwrap_or_else(|s| panic!("stock report: {s:?}"))
    }

    async fn threshold(&self, product: &str, threshold: i64) {
        self.inv()
            .set_low_stock_threshold(with_token(
                pb::SetLowStockThresholdRequest {
                    product_id: product.to_string(),
                    threshold,
                },
                &self.operator,
            ))
            .await
            .unwrap_or_else(|s| panic!("threshold: {s:?}"));
    }
}

/// (product name, warehouse name, on hand, reserved, value, below, threshold) of a row.
type Seen = (String, String, i64, i64, i64, bool, i64);

fn seen(r: &pb::GetStockReportResponse) -> Vec<Seen> {
    r.rows
        .iter()
        .map(|row| {
            assert_eq!(row.available, row.on_hand - row.reserved);
            assert_eq!(row.value_cents, row.on_hand * row.unit_price_cents);
            (
                row.product_name.clone(),
                row.warehouse_name.clone(),
                row.on_hand,
                row.reserved,
                row.value_cents,
                row.below_threshold,
                row.low_stock_threshold,
            )
        })
        .collect()
}

fn row(p: &str, w: &str, on_hand: i64, reserved: i64, value: i64, below: bool, t: i64) -> Seen {
    (p.into(), w.into(), on_hand, reserved, value, below, t)
}

fn total(r: &pb::GetStockReportResponse) -> i64 {
    let sum: i64 = r.rows.iter().map(|row| row.value_cents).sum();
    assert_eq!(r.total_value_cents, sum);
    sum
}

async fn stock_report_values_thresholds_and_filters(backend: Backend) {
    let env = start(backend).await;
    let north = env.warehouse("North", 10.0, 10.0).await;
    let south = env.warehouse("South", -10.0, -10.0).await;
    let apple = env.priced("apple", 30, "USD").await;
    let banana = env.priced("banana", 250, "USD").await;
    let cherry = env.priced("cherry", 1000, "USD").await;
    let doomed = env.priced("doomed", 50, "USD").await;
    // apple: 12 on hand, 9 of them reserved in North: 3 available in all, below the
    // default threshold although South alone has 2 of 2 available.
    env.restock(&apple, &north, 10).await;
    env.restock(&apple, &south, 2).await;
    env.reserve(pb::ReserveRequest {
        warehouse_id: Some(north.clone()),
        ..crate::common::reserve_req("r-apple", &apple, 9)
    })
    .await
    .unwrap_or_else(|s| panic!("reserve: {s:?}"));
    // banana: 3 available, but its own threshold 0 means never low.
    env.restock(&banana, &north, 3).await;
    env.threshold(&banana, 0).await;
    // cherry: 4 available, under its own threshold of 10.
    env.restock(&cherry, &south, 4).await;
    env.threshold(&cherry, 10).await;
    // doomed: stocked, then deleted from the catalog.
    env.restock(&doomed, &north, 6).await;
    env.delete_product(&doomed).await;

    let t = DEFAULT_THRESHOLD as i64;
    let r = env.report("", false).await;
    assert_eq!(
        seen(&r),
        vec![
            // The deleted product: no name (so first), no price, still its stock.
            row("", "North", 6, 0, 0, false, t),
            row("apple", "North", 10, 9, 300, true, t),
            row("apple", "South", 2, 0, 60, true, t),
            row("banana", "North", 3, 0, 750, false, 0),
            row("cherry", "South", 4, 0, 4000, true, 10),
        ]
    );
    assert_eq!(total(&r), 5110);
    assert_eq!(r.currency, "USD");
    let deleted = &r.rows[0];
    assert_eq!(
        (deleted.product_id.as_str(), deleted.sku.as_str()),
        (doomed.as_str(), "")
    );
    let a = &r.rows[1];
    assert_eq!(
        (
            a.product_id.as_str(),
            a.sku.as_str(),
            a.warehouse_id.as_str()
        ),
        (apple.as_str(), "SKU-apple", north.as_str())
    );
    assert_eq!((a.unit_price_cents, a.available), (30, 1));

    let low = env.report("", true).await;
    assert_eq!(
        seen(&low),
        vec![
            row("apple", "North", 10, 9, 300, true, t),
            row("apple", "South", 2, 0, 60, true, t),
            row("cherry", "South", 4, 0, 4000, true, 10),
        ]
    );
    assert_eq!(total(&low), 4360);

    // One warehouse: its rows only, "below" still over every warehouse.
    let r = env.report(&south, false).await;
    assert_eq!(
        seen(&r),
        vec![
            row("apple", "South", 2, 0, 60, true, t),
            row("cherry", "South", 4, 0, 4000, true, 10),
        ]
    );
    assert_eq!(total(&r), 4060);
    let r = env.report(&north, true).await;
    assert_eq!(seen(&r), vec![row("apple", "North", 10, 9, 300, true, t)]);

    // Restocking apple lifts it over the threshold.
    env.restock(&apple, &south, 5).await;
    let r = env.report("", true).await;
    assert_eq!(seen(&r), vec![row("cherry", "South", 4, 0, 4000, true, 10)]);

    // A warehouse without stock: an empty report.
    let empty = env.warehouse("Empty", 0.0, 0.0).await;
    let r = env.report(&empty, false).await;
    assert_eq!((r.rows.len(), r.total_value_cents), (0, 0));
    assert_eq!(r.currency, "USD");

    // Values in two currencies are not added up.
    let euro = env.priced("euro-thing", 900, "EUR").await;
    env.restock(&euro, &north, 1).await;
    let msg = expect_code(
        env.report_as(Some(&env.admin), "", false).await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains("EUR, USD"), "{msg}");
}

async fn stock_report_of_more_products_than_one_catalog_call(backend: Backend) {
    const PRODUCTS: usize = 520;
    let env = start(backend).await;
    let w = env.warehouse("Only", 0.0, 0.0).await;
    let names: Vec<String> = (0..PRODUCTS).map(|i| format!("p{i:04}")).collect();
    let env_ref = &env;
    let ids: Vec<String> = futures::stream::iter(names.iter())
        .map(|name| async move { env_ref.priced(name, 7, "USD").await })
        .buffered(8)
        .collect()
        .await;
    // Stock rows written straight into the database: the catalog calls are what is
    // under test, not 520 restocks.
    let db = env.inventory_db().await;
    let now = chrono::Utc::now();
    let rows = ids.iter().enumerate().map(|(i, id)| stock::ActiveModel {
        product_id: Set(id.clone()),
        warehouse_id: Set(w.clone()),
        on_hand: Set(i as i64 + 1),
        reserved: Set(0),
        version: Set(1),
        updated_at: Set(now),
    });
    stock::Entity::insert_many(rows)
        .exec_without_returning(&db)
        .await
        .unwrap_or_else(|e| panic!("insert stock: {e}"));
    // Two deleted products, one in each BatchGetProducts chunk.
    env.delete_product(&ids[3]).await;
    env.delete_product(&ids[510]).await;

    let r = env.report("", false).await;
    assert_eq!(r.rows.len(), PRODUCTS);
    let unnamed: Vec<&str> = r
        .rows
        .iter()
        .filter(|row| row.product_name.is_empty())
        .map(|row| row.product_id.as_str())
        .collect();
    let mut deleted = vec![ids[3].as_str(), ids[510].as_str()];
    deleted.sort();
    assert_eq!(unnamed, deleted);
    let named: Vec<&str> = r.rows[2..]
        .iter()
        .map(|row| row.product_name.as_str())
        .collect();
    let mut want: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 510)
        .map(|(_, n)| n.as_str())
        .collect();
    want.sort();
    assert_eq!(named, want);
    // Every named row priced: 7 × (1 + … + 520) less the two deleted (4 and 511 units).
    let n = PRODUCTS as i64;
    assert_eq!(total(&r), 7 * (n * (n + 1) / 2 - 4 - 511));
}

async fn stock_report_validation_and_roles(backend: Backend) {
    let env = start(backend).await;
    for (who, token, want) in [
        ("anonymous", None, Some(Code::Unauthenticated)),
        (
            "customer",
            Some(env.customer.as_str()),
            Some(Code::PermissionDenied),
        ),
        (
            "service",
            Some(env.service.as_str()),
            Some(Code::PermissionDenied),
        ),
        ("operator", Some(env.operator.as_str()), None),
        ("admin", Some(env.admin.as_str()), None),
    ] {
        let got = env.report_as(token, "", false).await;
        match want {
            None => assert!(got.is_ok(), "{who}: {got:?}"),
            Some(code) => {
                expect_code(got, code);
            }
        }
    }
    let msg = expect_code(
        env.report_as(Some(&env.operator), "no-such-warehouse", false)
            .await,
        Code::NotFound,
    );
    assert!(msg.contains("no-such-warehouse"), "{msg}");
    let msg = expect_code(
        env.report_as(Some(&env.operator), &"x".repeat(10_000), false)
            .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("warehouse_id: "), "{msg}");
}
