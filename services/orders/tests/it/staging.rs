//! Staging a wave of due orders straight into the databases, as a wave of expiries leaves
//! them, in a few statements: thousands of orders through CreateOrder would take longer
//! than the reconciling under test. Used by the reconciler tests and by
//! `benches/reconcile.rs`.
//!
//! Each staged order has `lines` lines of `quantity` units of one product in one
//! warehouse, reservation ids `<order id>-<line>` (as the saga makes them), and was
//! created an hour ago, so that it is past any reservation TTL a test sets. Its
//! reservations are staged in inventory first ([`stage_reservations`]): still RESERVED but
//! past their expiry (the sweeper has yet to run; the units count as reserved) or already
//! EXPIRED (the units are back). Then the orders ([`stage_orders`]), all in one
//! transaction, so that they become due together.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, TransactionTrait,
};
use stockmesh::Target;
use stockmesh_orders::entity::order::{self, Status};
use stockmesh_orders::entity::order_item;

use crate::support::Env;

/// Rows per INSERT (far below either backend's limit on bound parameters).
const CHUNK: usize = 400;

/// An order to stage: its id and its lines' reservation ids.
#[derive(Debug, Clone)]
pub struct Planned {
    pub id: String,
    pub reservation_ids: Vec<String>,
}

/// `n` new order ids with `lines` reservation ids each.
pub fn plan(n: usize, lines: usize) -> Vec<Planned> {
    (0..n)
        .map(|_| {
            let id = uuid::Uuid::now_v7().to_string();
            let reservation_ids = (0..lines).map(|line| format!("{id}-{line}")).collect();
            Planned {
                id,
                reservation_ids,
            }
        })
        .collect()
}

/// The state a staged reservation is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// RESERVED, expired an hour ago, not swept yet: its units are reserved.
    DueToExpire,
    /// Already EXPIRED by inventory: its units are available again.
    #[allow(dead_code)] // staged by benches/reconcile.rs
    Expired,
}

pub async fn orders_db(env: &Env) -> DatabaseConnection {
    stockmesh::db::connect(&env.mesh.database_url(Target::Orders))
        .await
        .unwrap_or_else(|e| panic!("orders db: {e}"))
}

pub async fn inventory_db(env: &Env) -> DatabaseConnection {
    stockmesh::db::connect(&env.mesh.database_url(Target::Inventory))
        .await
        .unwrap_or_else(|e| panic!("inventory db: {e}"))
}

/// Writes the reservations of `planned` (`quantity` units of `product` in `warehouse`
/// each) to inventory in one transaction, adding the units of [`Held::DueToExpire`] ones
/// to the stock row's `reserved`. The product must have been restocked with enough units.
pub async fn stage_reservations(
    env: &Env,
    planned: &[Planned],
    product: &str,
    warehouse: &str,
    quantity: i64,
    held: Held,
) {
    use stockmesh_inventory::entity::{reservation, stock};
    let db = inventory_db(env).await;
    let at = stockmesh_inventory::txn::now() - chrono::Duration::hours(1);
    let rows: Vec<reservation::Model> = planned
        .iter()
        .flat_map(|p| p.reservation_ids.iter())
        .map(|id| reservation::Model {
            reservation_id: id.clone(),
            product_id: Some(product.to_string()),
            warehouse_id: Some(warehouse.to_string()),
            quantity,
            status: match held {
                Held::DueToExpire => reservation::Status::Reserved,
                Held::Expired => reservation::Status::Expired,
            },
            expires_at: at,
            created_at: at,
            updated_at: at,
        })
        .collect();
    let units = quantity * rows.len() as i64;
    let txn = db.begin().await.unwrap_or_else(|e| panic!("begin: {e}"));
    for chunk in rows.chunks(CHUNK) {
        reservation::Entity::insert_many(
            chunk
                .iter()
                .map(|r| r.clone().into_active_model().reset_all()),
        )
        .exec_without_returning(&txn)
        .await
        .unwrap_or_else(|e| panic!("stage reservations: {e}"));
    }
    if held == Held::DueToExpire {
        let changed = stock::Entity::update_many()
            .col_expr(
                stock::Column::Reserved,
                Expr::col(stock::Column::Reserved).add(units),
            )
            .filter(stock::Column::ProductId.eq(product))
            .filter(stock::Column::WarehouseId.eq(warehouse))
            .exec(&txn)
            .await
            .unwrap_or_else(|e| panic!("reserve staged units: {e}"));
        assert_eq!(changed.rows_affected, 1, "restock the product first");
    }
    txn.commit().await.unwrap_or_else(|e| panic!("commit: {e}"));
    analyze(&db, "reservations").await;
    let _ = db.close().await;
}

/// PostgreSQL: refreshes the planner's statistics of `table` after a bulk load, as
/// autovacuum soon would (a table grown by thousands of rows in one transaction is
/// otherwise planned as the small table it was).
async fn analyze(db: &DatabaseConnection, table: &str) {
    if db.get_database_backend() == DbBackend::Postgres {
        db.execute_unprepared(&format!("ANALYZE {table}"))
            .await
            .unwrap_or_else(|e| panic!("analyze {table}: {e}"));
    }
}

/// Writes `planned` as orders of the env's customer in `status`, created and last
/// touched an hour ago, in one transaction (so they become due at once).
pub async fn stage_orders(
    env: &Env,
    planned: &[Planned],
    status: Status,
    product: &str,
    warehouse: &str,
    quantity: i64,
) {
    let db = orders_db(env).await;
    let at = stockmesh_orders::store::now() - chrono::Duration::hours(1);
    let orders: Vec<order::Model> = planned
        .iter()
        .map(|p| order::Model {
            id: p.id.clone(),
            customer_id: env.customer.id.clone(),
            request_id: format!("wave-{}", p.id),
            status,
            total_cents: quantity * 100 * p.reservation_ids.len() as i64,
            currency: "USD".into(),
            cancel_reason: String::new(),
            version: 2,
            created_at: at,
            updated_at: at,
            claimed_until: None,
        })
        .collect();
    let items: Vec<order_item::Model> = planned
        .iter()
        .flat_map(|p| {
            p.reservation_ids
                .iter()
                .enumerate()
                .map(|(line, reservation_id)| order_item::Model {
                    order_id: p.id.clone(),
                    line: line as i32,
                    product_id: product.to_string(),
                    product_name: "staged".into(),
                    quantity,
                    unit_price_cents: 100,
                    warehouse_id: warehouse.to_string(),
                    reservation_id: reservation_id.clone(),
                })
        })
        .collect();
    let txn = db.begin().await.unwrap_or_else(|e| panic!("begin: {e}"));
    for chunk in orders.chunks(CHUNK) {
        order::Entity::insert_many(
            chunk
                .iter()
                .map(|o| o.clone().into_active_model().reset_all()),
        )
        .exec_without_returning(&txn)
        .await
        .unwrap_or_else(|e| panic!("stage orders: {e}"));
    }
    for chunk in items.chunks(CHUNK) {
        order_item::Entity::insert_many(
            chunk
                .iter()
                .map(|i| i.clone().into_active_model().reset_all()),
        )
        .exec_without_returning(&txn)
        .await
        .unwrap_or_else(|e| panic!("stage order lines: {e}"));
    }
    txn.commit().await.unwrap_or_else(|e| panic!("commit: {e}"));
    analyze(&db, "orders").await;
    analyze(&db, "order_items").await;
    let _ = db.close().await;
}

/// How many orders are in one of `statuses` (read straight from the orders database).
pub async fn count(db: &DatabaseConnection, statuses: &[Status]) -> u64 {
    order::Entity::find()
        .filter(order::Column::Status.is_in(statuses.iter().copied()))
        .count(db)
        .await
        .unwrap_or_else(|e| panic!("count orders: {e}"))
}
