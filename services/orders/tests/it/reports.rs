//! GetSalesReport: per day and per product over known orders (completed ones either side
//! of a UTC midnight and of the period's bounds, pending and cancelled ones inside it),
//! totals, currencies, validation and roles.
//!
//! Orders go through the real saga and CompleteOrder/CancelOrder; the test then moves
//! each one's `updated_at` (its completion time, for a COMPLETED order) to a chosen
//! instant, so the day boundaries are exact.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use stockmesh::Target;
use stockmesh::proto::orders::v1 as pb;
use stockmesh::proto::timestamp;
use stockmesh::testing::Backend;
use stockmesh_orders::entity::order;
use tonic::Code;

use crate::support::{Env, Who, as_who, expect_code};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn req(start: &str, end: &str, group_by: pb::SalesReportGrouping) -> pb::GetSalesReportRequest {
    pb::GetSalesReportRequest {
        start_time: Some(timestamp(at(start))),
        end_time: Some(timestamp(at(end))),
        group_by: group_by as i32,
    }
}

async fn report(env: &Env, r: pb::GetSalesReportRequest) -> pb::GetSalesReportResponse {
    env.orders()
        .get_sales_report(as_who(env, Who::Operator, r))
        .await
        .unwrap_or_else(|s| panic!("sales report: {s:?}"))
        .into_inner()
}

fn day(d: &str, orders: i64, units: i64, revenue_cents: i64) -> pb::SalesReportRow {
    pb::SalesReportRow {
        day: d.into(),
        orders,
        units,
        revenue_cents,
        ..Default::default()
    }
}

fn product(id: &str, name: &str, orders: i64, units: i64, revenue: i64) -> pb::SalesReportRow {
    pb::SalesReportRow {
        product_id: id.into(),
        product_name: name.into(),
        orders,
        units,
        revenue_cents: revenue,
        ..Default::default()
    }
}

struct Shop<'a> {
    env: &'a Env,
    db: sea_orm::DatabaseConnection,
}

#[derive(Clone, Copy)]
enum End {
    Completed,
    Cancelled,
    Pending,
}

impl Shop<'_> {
    /// An order of `items` by the customer, taken to `end`, stamped `updated_at = when`.
    async fn order(&self, items: &[(&str, i64)], end: End, when: &str) -> String {
        let env = self.env;
        let request_id = uuid::Uuid::new_v4().to_string();
        let id = env
            .create(&env.customer.token, &request_id, items)
            .await
            .unwrap_or_else(|s| panic!("create: {s:?}"))
            .id;
        match end {
            End::Completed => {
                env.complete(&env.operator.token, &id).await.unwrap();
            }
            End::Cancelled => {
                env.cancel(&env.operator.token, &id, "").await.unwrap();
            }
            End::Pending => {}
        }
        let moved = order::Entity::update_many()
            .col_expr(order::Column::UpdatedAt, Expr::value(at(when)))
            .filter(order::Column::Id.eq(id.as_str()))
            .exec(&self.db)
            .await
            .unwrap_or_else(|e| panic!("stamp {id}: {e}"));
        assert_eq!(moved.rows_affected, 1);
        id
    }
}

pub async fn sales_per_day_and_per_product(backend: Backend) {
    use pb::SalesReportGrouping::{Day, Product, Unspecified};
    let env = Env::start(backend).await;
    let widget = env.product("widget", 100, "USD").await;
    let gadget = env.product("gadget", 250, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 100).await;
    env.restock(&gadget, &w, 100).await;
    let db = stockmesh::db::connect(&env.mesh.database_url(Target::Orders))
        .await
        .unwrap_or_else(|e| panic!("orders db: {e}"));
    let shop = Shop { env: &env, db };
    let (wd, gd) = (widget.as_str(), gadget.as_str());
    use End::{Cancelled, Completed, Pending};
    // The last microsecond of 9 March, and the first of 10 March (UTC).
    shop.order(
        &[(wd, 2), (gd, 1)],
        Completed,
        "2025-03-09T23:59:59.999999Z",
    )
    .await;
    shop.order(&[(wd, 1)], Completed, "2025-03-10T00:00:00Z")
        .await;
    shop.order(&[(gd, 3)], Completed, "2025-03-10T10:00:00Z")
        .await;
    // Inside the period but not sales.
    shop.order(&[(wd, 5)], Pending, "2025-03-10T01:00:00Z")
        .await;
    shop.order(&[(gd, 4)], Cancelled, "2025-03-10T02:00:00Z")
        .await;
    // Completed on the period's exclusive end, and just before its start.
    shop.order(&[(wd, 7)], Completed, "2025-03-11T00:00:00Z")
        .await;
    shop.order(&[(wd, 1)], Completed, "2025-03-08T23:59:59.999999Z")
        .await;

    let (start, end) = ("2025-03-09T00:00:00Z", "2025-03-11T00:00:00Z");
    for grouping in [Unspecified, Day] {
        let r = report(&env, req(start, end, grouping)).await;
        assert_eq!(
            r.rows,
            vec![day("2025-03-09", 1, 3, 450), day("2025-03-10", 2, 4, 850)],
            "{grouping:?}"
        );
        assert_eq!(
            (r.total_orders, r.total_units, r.total_revenue_cents),
            (3, 7, 1300)
        );
        assert_eq!(r.currency, "USD");
    }
    let r = report(&env, req(start, end, Product)).await;
    assert_eq!(
        r.rows,
        vec![
            product(gd, "gadget", 2, 4, 1000),
            product(wd, "widget", 2, 3, 300)
        ]
    );
    // An order with both products counts once in the totals.
    assert_eq!(
        (r.total_orders, r.total_units, r.total_revenue_cents),
        (3, 7, 1300)
    );

    // The bounds, to the microsecond: start inclusive, end exclusive.
    let r = report(
        &env,
        req("2025-03-09T23:59:59.999999Z", "2025-03-10T00:00:00Z", Day),
    )
    .await;
    assert_eq!(r.rows, vec![day("2025-03-09", 1, 3, 450)]);
    let r = report(
        &env,
        req("2025-03-10T00:00:00Z", "2025-03-11T00:00:00.000001Z", Day),
    )
    .await;
    assert_eq!(
        r.rows,
        vec![day("2025-03-10", 2, 4, 850), day("2025-03-11", 1, 7, 700)]
    );

    // A period without sales.
    let r = report(
        &env,
        req("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", Day),
    )
    .await;
    assert_eq!(
        (r.rows.len(), r.total_orders, r.total_revenue_cents),
        (0, 0, 0)
    );
    assert_eq!(r.currency, "USD");

    // Amounts in two currencies are not added up.
    let euro = env.product("euro-thing", 900, "EUR").await;
    env.restock(&euro, &w, 10).await;
    shop.order(&[(euro.as_str(), 1)], Completed, "2025-05-01T12:00:00Z")
        .await;
    let r = report(
        &env,
        req("2025-05-01T00:00:00Z", "2025-05-02T00:00:00Z", Product),
    )
    .await;
    assert_eq!(r.rows, vec![product(&euro, "euro-thing", 1, 1, 900)]);
    assert_eq!(r.currency, "EUR");
    let mixed = env
        .orders()
        .get_sales_report(as_who(
            &env,
            Who::Admin,
            req("2025-03-01T00:00:00Z", "2025-06-01T00:00:00Z", Day),
        ))
        .await;
    let msg = expect_code(mixed, Code::FailedPrecondition);
    assert!(msg.contains("EUR, USD"), "{msg}");

    env.assert_books_balance().await;
}

pub async fn sales_report_validation_and_roles(backend: Backend) {
    let env = Env::start(backend).await;
    let call = |who: Who, r: pb::GetSalesReportRequest| {
        let env = &env;
        async move { env.orders().get_sales_report(as_who(env, who, r)).await }
    };
    let ok = req(
        "2025-01-01T00:00:00Z",
        "2025-02-01T00:00:00Z",
        pb::SalesReportGrouping::Day,
    );
    for (who, want) in [
        (Who::Anonymous, Some(Code::Unauthenticated)),
        (Who::Customer, Some(Code::PermissionDenied)),
        (Who::Service, Some(Code::PermissionDenied)),
        (Who::Operator, None),
        (Who::Admin, None),
    ] {
        let got = call(who, ok).await;
        match want {
            None => assert!(got.is_ok(), "{who:?}: {got:?}"),
            Some(code) => {
                expect_code(got, code);
            }
        }
    }
    // Defaults: the last 30 days.
    let r = call(Who::Operator, pb::GetSalesReportRequest::default()).await;
    assert!(r.is_ok(), "{r:?}");

    let bad = |r: pb::GetSalesReportRequest| call(Who::Operator, r);
    let msg = expect_code(
        bad(req(
            "2025-02-01T00:00:00Z",
            "2025-02-01T00:00:00Z",
            pb::SalesReportGrouping::Day,
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(msg, "end_time: must be after start_time");
    let msg = expect_code(
        bad(req(
            "2024-01-01T00:00:00Z",
            "2025-01-02T00:00:00Z",
            pb::SalesReportGrouping::Day,
        ))
        .await,
        Code::InvalidArgument,
    );
    assert!(
        msg.starts_with("end_time: ") && msg.contains("366"),
        "{msg}"
    );
    // 366 days exactly is allowed (a leap year).
    assert!(
        bad(req(
            "2024-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
            pb::SalesReportGrouping::Day
        ))
        .await
        .is_ok()
    );
    let mut r = ok;
    r.group_by = 99;
    let msg = expect_code(bad(r).await, Code::InvalidArgument);
    assert!(msg.starts_with("group_by: "), "{msg}");
    let mut r = ok;
    r.start_time = Some(prost_types::Timestamp {
        seconds: 0,
        nanos: -1,
    });
    let msg = expect_code(bad(r).await, Code::InvalidArgument);
    assert!(msg.starts_with("start_time: "), "{msg}");
}
