//! The reports over REST: the CSV of GetSalesReport and GetStockReport (`Accept:
//! text/csv`) holds exactly the rows of the JSON answer of the same request, and any other
//! route asked for CSV only answers 406 without calling its upstream.

use http::Method;
use serde_json::{Value, json};
use stockmesh::testing::Backend;

use crate::support::{Env, Resp, unique};

/// Parses RFC 4180 text (quoted fields, doubled quotes, CRLF records).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quote in {text:?}");
    assert!(
        field.is_empty() && record.is_empty(),
        "last record without CRLF in {text:?}"
    );
    records
}

/// A JSON value as the CSV cell of it.
fn as_cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

async fn csv(env: &Env, path: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    env.send(
        Method::GET,
        path,
        &[("authorization", &auth), ("accept", "text/csv")],
        "",
    )
    .await
}

/// Asserts that the CSV answer of `path` is the `rows` of its JSON answer; returns the
/// JSON answer.
async fn same_rows(env: &Env, path: &str, header: &[&str], file: &str) -> Value {
    let json = env.get(path, Some(&env.admin)).await.ok();
    let resp = csv(env, path, &env.admin).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/csv")),
        "{resp:?}"
    );
    assert_eq!(
        resp.header("content-disposition"),
        Some(format!("attachment; filename=\"{file}\"").as_str())
    );
    let text = String::from_utf8(resp.body.to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let records = parse_csv(&text);
    assert_eq!(records[0], header, "{text}");
    let rows = json["rows"].as_array().unwrap_or_else(|| panic!("{json}"));
    assert!(!rows.is_empty(), "{json}");
    assert_eq!(records.len(), rows.len() + 1, "{text}\n{json}");
    for (record, row) in records[1..].iter().zip(rows) {
        let fields = row.as_object().unwrap_or_else(|| panic!("{row}"));
        assert_eq!(fields.len(), header.len(), "every field in the JSON: {row}");
        for (name, cell) in header.iter().zip(record) {
            assert_eq!(*cell, as_cell(&row[*name]), "{name} of {row}");
        }
    }
    json
}

pub async fn report_csv_matches_json(backend: Backend) {
    let env = Env::start(backend).await;
    let lamp = env.product("Lamp, \"big\"", 2500).await;
    let bulb = env.product("Bulb", 300).await;
    let (lamp_id, bulb_id) = (lamp["id"].as_str().unwrap(), bulb["id"].as_str().unwrap());
    let warehouse = env.warehouse().await;
    env.restock(lamp_id, &warehouse, 5).await;
    env.restock(bulb_id, &warehouse, 40).await;
    let customer = env.user("ROLE_CUSTOMER").await;
    for items in [
        json!([{"productId": lamp_id, "quantity": 2}, {"productId": bulb_id, "quantity": 10}]),
        json!([{"productId": bulb_id, "quantity": 3}]),
    ] {
        let order = env
            .rest(
                Method::POST,
                "/v1/orders",
                Some(&customer),
                Some(json!({"requestId": unique("order"), "items": items})),
            )
            .await
            .ok()["order"]
            .clone();
        let id = order["id"].as_str().unwrap();
        env.rest(
            Method::POST,
            &format!("/v1/orders/{id}:complete"),
            Some(&env.admin),
            None,
        )
        .await
        .ok();
    }

    let sales_header = [
        "day",
        "productId",
        "productName",
        "orders",
        "units",
        "revenueCents",
    ];
    let by_day = same_rows(&env, "/v1/reports/sales", &sales_header, "sales.csv").await;
    assert_eq!(by_day["totalOrders"], "2", "{by_day}");
    assert_eq!(by_day["totalRevenueCents"], "8900", "{by_day}");
    let path = "/v1/reports/sales?groupBy=SALES_REPORT_GROUPING_PRODUCT";
    let by_product = same_rows(&env, path, &sales_header, "sales.csv").await;
    let rows = by_product["rows"].as_array().unwrap();
    assert_eq!(rows[0]["productName"], lamp["name"], "{by_product}");
    assert_eq!(rows[0]["revenueCents"], "5000");
    assert_eq!(rows[1]["units"], "13");
    // The quoting survived: the product name with a comma and quotes is one cell.
    let resp = csv(&env, path, &env.admin).await;
    let text = String::from_utf8_lossy(&resp.body);
    let quoted = format!(
        "\"{}\"",
        lamp["name"].as_str().unwrap().replace('"', "\"\"")
    );
    assert!(text.contains(&quoted), "{text}");
    assert!(text.contains(",5000\r\n"), "int64 as plain numbers: {text}");

    let stock_header = [
        "productId",
        "sku",
        "productName",
        "warehouseId",
        "warehouseName",
        "onHand",
        "reserved",
        "available",
        "unitPriceCents",
        "valueCents",
        "belowThreshold",
        "lowStockThreshold",
    ];
    let stock = same_rows(&env, "/v1/reports/stock", &stock_header, "stock.csv").await;
    assert_eq!(
        stock["totalValueCents"], "15600",
        "3 × 2500 + 27 × 300: {stock}"
    );
    let path = format!("/v1/reports/stock?warehouseId={warehouse}&lowOnly=true");
    let low = same_rows(&env, &path, &stock_header, "stock.csv").await;
    let low_rows = low["rows"].as_array().unwrap();
    assert_eq!(low_rows.len(), 1, "only the lamp (3 left) is low: {low}");
    assert_eq!(low_rows[0]["belowThreshold"], true);
    let text = String::from_utf8_lossy(&csv(&env, &path, &env.admin).await.body).into_owned();
    assert!(text.contains(",true,"), "booleans by name: {text}");

    // CSV preferred only when asked for at least as much as JSON.
    let auth = format!("Bearer {}", env.admin);
    let resp = env
        .send(
            Method::GET,
            "/v1/reports/stock",
            &[
                ("authorization", &auth),
                ("accept", "text/csv;q=0.5, application/json"),
            ],
            "",
        )
        .await;
    assert_eq!(resp.json()["rows"], stock["rows"]);

    // Authentication and roles come first.
    let anonymous = env
        .send(
            Method::GET,
            "/v1/reports/sales",
            &[("accept", "text/csv")],
            "",
        )
        .await;
    anonymous.assert_error(401, 16);
    csv(&env, "/v1/reports/sales", &customer)
        .await
        .assert_error(403, 7);
}

pub async fn csv_elsewhere_is_not_acceptable(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("Chair", 900).await;
    let pid = product["id"].as_str().unwrap();
    let warehouse = env.warehouse().await;
    env.restock(pid, &warehouse, 5).await;
    let auth = format!("Bearer {}", env.admin);
    let csv_only = [("authorization", auth.as_str()), ("accept", "text/csv")];

    let resp = env.send(Method::GET, "/v1/products", &csv_only, "").await;
    let msg = resp.assert_error(406, 3);
    assert!(
        msg.contains("GET /v1/products") && msg.contains("application/json"),
        "{msg}"
    );
    let resp = env
        .send(Method::GET, "/v1/stock:watch", &csv_only, "")
        .await;
    let msg = resp.assert_error(406, 3);
    assert!(msg.contains("text/event-stream"), "{msg}");

    // A write refused for its Accept does nothing.
    let mut with_body = csv_only.to_vec();
    with_body.push(("content-type", "application/json"));
    let body = json!({"warehouseId": warehouse, "quantity": "1", "requestId": unique("r")});
    let resp = env
        .send(
            Method::POST,
            &format!("/v1/stock/{pid}:restock"),
            &with_body,
            body.to_string(),
        )
        .await;
    resp.assert_error(406, 3);
    let stock = env.get(&format!("/v1/stock/{pid}"), None).await.ok();
    assert_eq!(stock["stock"]["totalOnHand"], "5", "{stock}");

    // An Accept that also admits JSON gets JSON, as before.
    let resp = env
        .send(
            Method::GET,
            "/v1/products",
            &[("accept", "text/csv, application/json;q=0.9")],
            "",
        )
        .await;
    assert!(resp.ok()["products"].is_array());
}
