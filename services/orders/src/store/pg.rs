//! PostgreSQL forms of store writes that SQLite cannot express: several changes in one
//! statement through data-modifying `WITH` clauses. One statement is atomic on its own, so
//! such a write needs no `BEGIN` and `COMMIT` round trips either: on PostgreSQL every
//! statement is a network round trip and most of an order's database cost (issue 9).

use chrono::{DateTime, Utc};
use sea_orm::{ActiveEnum, ConnectionTrait, DbBackend, DbErr, Statement, Value};
use stockmesh::events::Event;

use crate::entity::order::Status;

/// CREATING → PENDING of order `id` (bumping its version, `updated_at` = `at`; only at
/// `version` when given), each line's warehouse (`warehouses[line]`) and the outbox row of
/// `event`, in one statement. True when this call moved the order; when it did not, the
/// statement changed nothing at all (the line and outbox changes hang off the moved row).
pub async fn mark_pending(
    db: &impl ConnectionTrait,
    id: &str,
    version: Option<i64>,
    warehouses: &[String],
    at: DateTime<Utc>,
    event: &Event,
) -> Result<bool, DbErr> {
    let mut values: Vec<Value> = vec![
        Status::Pending.to_value().into(),
        at.into(),
        id.into(),
        Status::Creating.to_value().into(),
    ];
    let mut sql = String::from(
        "WITH moved AS (UPDATE orders SET status = $1, version = version + 1, updated_at = $2 \
         WHERE id = $3 AND status = $4",
    );
    if let Some(version) = version {
        let p = param(&mut values, version.into());
        sql.push_str(&format!(" AND version = {p}"));
    }
    sql.push_str(" RETURNING id)");
    if !warehouses.is_empty() {
        sql.push_str(", lines AS (UPDATE order_items SET warehouse_id = CASE line");
        for (line, warehouse_id) in warehouses.iter().enumerate() {
            let line = i32::try_from(line).map_err(|e| DbErr::Custom(e.to_string()))?;
            let l = param(&mut values, line.into());
            let w = param(&mut values, warehouse_id.as_str().into());
            sql.push_str(&format!(" WHEN {l} THEN {w}"));
        }
        sql.push_str(" ELSE warehouse_id END WHERE order_id IN (SELECT id FROM moved))");
    }
    let (e, t, p, c) = (
        param(&mut values, event.id.as_str().into()),
        param(&mut values, event.topic.subject().into()),
        param(&mut values, event.payload.to_vec().into()),
        param(&mut values, Utc::now().into()),
    );
    sql.push_str(&format!(
        " INSERT INTO outbox (event_id, topic, payload, created_at) \
         SELECT {e}, {t}, {p}, {c} FROM moved RETURNING seq"
    ));
    let moved = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    Ok(moved.is_some())
}

/// Binds `v` as the next parameter and returns its placeholder.
fn param(values: &mut Vec<Value>, v: Value) -> String {
    values.push(v);
    format!("${}", values.len())
}
