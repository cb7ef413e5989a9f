//! GetSalesReport: orders, units and revenue of COMPLETED orders over a period, per UTC
//! day or per product, with totals.
//!
//! The orders table keeps no completion timestamp of its own. COMPLETED is final (no
//! change moves an order out of it, and the reconciler's claims leave `updated_at` alone),
//! so a COMPLETED order's `updated_at` is the moment it became COMPLETED, and that is the
//! time the period filters on and the day it counts for.
//!
//! Each report is one SQL statement: the grouped rows and, `UNION ALL`, one totals row
//! per currency, both from the lines of the period's COMPLETED orders
//! (`ix_orders_status_updated` serves the filter). The totals cannot be summed from the
//! rows in general: an order with two products counts once in total_orders but in two
//! product rows. Only the day bucket differs between the backends: PostgreSQL formats the
//! `timestamptz` at UTC; SQLite stores every `DateTimeUtc` as RFC 3339 text at offset
//! +00:00 (sqlx's encoding), so the first ten characters are the UTC day. Bounds are
//! compared as values of the same encoding on both.
//!
//! Amounts of different currencies are never added up: a period whose orders are priced
//! in more than one currency is refused with FAILED_PRECONDITION naming them.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, Value};

use crate::entity::order::Status;
use crate::error::{Error, Result};
use crate::saga::DEFAULT_CURRENCY;

/// The longest period a report covers.
pub const MAX_PERIOD_DAYS: i64 = 366;
/// The period of a request without start_time: this long before its end.
pub const DEFAULT_PERIOD_DAYS: i64 = 30;

/// How the rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// One row per UTC day with sales, ascending.
    Day,
    /// One row per product sold, by revenue descending (then product id).
    Product,
}

/// A validated period: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    /// Applies the defaults (end = `now`, start = end − 30 days) and the rules: end after
    /// start, at most [`MAX_PERIOD_DAYS`] long. Bounds are taken at microseconds, the
    /// precision both databases store, so both answer alike.
    pub fn new(
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Period> {
        let end = micros(end.unwrap_or(now));
        let start = micros(start.unwrap_or(end - Duration::days(DEFAULT_PERIOD_DAYS)));
        if end <= start {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        if end - start > Duration::days(MAX_PERIOD_DAYS) {
            return Err(Error::invalid(
                "end_time",
                format!("must be at most {MAX_PERIOD_DAYS} days after start_time"),
            ));
        }
        Ok(Period { start, end })
    }
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// One row of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesRow {
    /// `YYYY-MM-DD` when grouped by day, else empty.
    pub day: String,
    /// When grouped by product, else empty.
    pub product_id: String,
    /// The product's name on its lines (the greatest, should it differ between orders).
    pub product_name: String,
    pub orders: i64,
    pub units: i64,
    pub revenue_cents: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesReport {
    pub rows: Vec<SalesRow>,
    pub total_orders: i64,
    pub total_units: i64,
    pub total_revenue_cents: i64,
    pub currency: String,
}

/// The report of `period`, grouped by `grouping`.
pub async fn sales(
    db: &DatabaseConnection,
    grouping: Grouping,
    period: Period,
) -> Result<SalesReport> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(statement(backend, grouping, period))
        .await?;
    let mut report = SalesReport::default();
    let mut currencies: Vec<String> = Vec::new();
    for row in rows {
        let currency: String = row.try_get("", "currency")?;
        if !currencies.contains(&currency) {
            currencies.push(currency);
        }
        let (orders, units, revenue_cents) = counts(&row)?;
        if row.try_get::<i64>("", "is_total")? == 1 {
            report.total_orders = orders;
            report.total_units = units;
            report.total_revenue_cents = revenue_cents;
            continue;
        }
        let key: String = row.try_get("", "k")?;
        let product_name: String = row.try_get("", "name")?;
        let mut out = SalesRow {
            product_name,
            orders,
            units,
            revenue_cents,
            ..SalesRow::default()
        };
        match grouping {
            Grouping::Day => out.day = key,
            Grouping::Product => out.product_id = key,
        }
        report.rows.push(out);
    }
    if currencies.len() > 1 {
        currencies.sort();
        return Err(Error::FailedPrecondition(format!(
            "the orders of the period are priced in several currencies ({}); choose a period \
             with one",
            currencies.join(", ")
        )));
    }
    report.currency = currencies
        .pop()
        .unwrap_or_else(|| DEFAULT_CURRENCY.to_string());
    match grouping {
        Grouping::Day => report.rows.sort_by(|a, b| a.day.cmp(&b.day)),
        Grouping::Product => report.rows.sort_by(|a, b| {
            b.revenue_cents
                .cmp(&a.revenue_cents)
                .then_with(|| a.product_id.cmp(&b.product_id))
        }),
    }
    Ok(report)
}

fn counts(row: &QueryResult) -> Result<(i64, i64, i64)> {
    Ok((
        row.try_get("", "orders")?,
        row.try_get("", "units")?,
        row.try_get("", "revenue")?,
    ))
}

/// The report's one statement (see the module docs). Every value is cast, so that both
/// backends decode the same types.
fn statement(backend: DbBackend, grouping: Grouping, period: Period) -> Statement {
    let day = match backend {
        DbBackend::Postgres => "to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        _ => "substr(o.updated_at, 1, 10)",
    };
    let (key, name) = match grouping {
        Grouping::Day => (day, "''"),
        Grouping::Product => ("i.product_id", "MAX(i.product_name)"),
    };
    let (p1, p2, p3, p4, p5, p6) = match backend {
        DbBackend::Postgres => ("$1", "$2", "$3", "$4", "$5", "$6"),
        _ => ("?", "?", "?", "?", "?", "?"),
    };
    let sums = "CAST(COUNT(DISTINCT o.id) AS BIGINT) AS orders, \
                CAST(SUM(i.quantity) AS BIGINT) AS units, \
                CAST(SUM(i.quantity * i.unit_price_cents) AS BIGINT) AS revenue";
    let from = "FROM orders o JOIN order_items i ON i.order_id = o.id";
    let sql = format!(
        "SELECT CAST(0 AS BIGINT) AS is_total, CAST({key} AS TEXT) AS k, CAST({name} AS TEXT) AS name, \
                o.currency AS currency, {sums} \
         {from} WHERE o.status = {p1} AND o.updated_at >= {p2} AND o.updated_at < {p3} \
         GROUP BY o.currency, {key} \
         UNION ALL \
         SELECT CAST(1 AS BIGINT), CAST('' AS TEXT), CAST('' AS TEXT), o.currency, {sums} \
         {from} WHERE o.status = {p4} AND o.updated_at >= {p5} AND o.updated_at < {p6} \
         GROUP BY o.currency"
    );
    let completed = || Value::from(status_value(Status::Completed));
    let values = vec![
        completed(),
        Value::from(period.start),
        Value::from(period.end),
        completed(),
        Value::from(period.start),
        Value::from(period.end),
    ];
    Statement::from_sql_and_values(backend, sql, values)
}

/// The stored text of `status`.
fn status_value(status: Status) -> String {
    use sea_orm::ActiveEnum;
    status.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn periods_default_and_are_bounded() {
        let now = at("2025-03-10T12:00:00Z");
        let p = Period::new(None, None, now).unwrap();
        assert_eq!((p.start, p.end), (at("2025-02-08T12:00:00Z"), now));
        let p = Period::new(Some(at("2024-03-10T12:00:00Z")), None, now).unwrap();
        assert_eq!(p.end - p.start, Duration::days(365));
        let msg = |e: Error| tonic::Status::from(e).message().to_string();
        let too_long = Period::new(Some(at("2024-03-08T12:00:00Z")), None, now).unwrap_err();
        assert!(msg(too_long).starts_with("end_time: "));
        let empty = Period::new(Some(now), Some(now), now).unwrap_err();
        assert_eq!(msg(empty), "end_time: must be after start_time");
        let nanos = Period::new(None, Some(at("2025-03-10T12:00:00.123456789Z")), now).unwrap();
        assert_eq!(nanos.end, at("2025-03-10T12:00:00.123456Z"));
    }
}
