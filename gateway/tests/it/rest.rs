//! REST/JSON through the gateway, one test per kind of `google.api.http` binding, against
//! the real services.

use http::Method;
use serde_json::json;
use stockmesh::testing::Backend;

use crate::support::{Env, unique};

/// POST body "*", GET with a path parameter, GET by a name that needs escaping, PATCH
/// with body "product" and an explicit or implied update_mask, DELETE.
pub async fn rest_product_lifecycle(backend: Backend) {
    let env = Env::start(backend).await;
    let name = unique("Blue Mug");
    let created = env
        .rest(
            Method::POST,
            "/v1/products",
            Some(&env.admin),
            Some(json!({
                "sku": unique("SKU"),
                "name": name,
                "description": "a mug",
                // proto field names are accepted as well as lowerCamelCase.
                "price_cents": 1250,
                "currency": "EUR",
            })),
        )
        .await
        .ok()["product"]
        .clone();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["priceCents"], "1250");
    assert_eq!(created["currency"], "EUR");
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(created.get("price_cents").is_none(), "emits lowerCamelCase");

    let got = env.get(&format!("/v1/products/{id}"), None).await.ok();
    assert_eq!(got["product"], created);

    let escaped = name.replace(' ', "%20");
    let by_name = env
        .get(&format!("/v1/products/by-name/{escaped}"), None)
        .await
        .ok();
    assert_eq!(by_name["product"]["id"], id);

    // PATCH with an explicit mask: only price changes although name is sent too.
    let patched = env
        .rest(
            Method::PATCH,
            &format!("/v1/products/{id}?update_mask=priceCents"),
            Some(&env.admin),
            Some(json!({"priceCents": "999", "name": "ignored"})),
        )
        .await
        .ok();
    assert_eq!(patched["product"]["priceCents"], "999");
    assert_eq!(patched["product"]["name"], name);

    // Without a mask, the fields present in the body are updated.
    let patched = env
        .rest(
            Method::PATCH,
            &format!("/v1/products/{id}"),
            Some(&env.admin),
            Some(json!({"description": "a bigger mug"})),
        )
        .await
        .ok();
    assert_eq!(patched["product"]["description"], "a bigger mug");
    assert_eq!(patched["product"]["priceCents"], "999");

    env.rest(
        Method::DELETE,
        &format!("/v1/products/{id}"),
        Some(&env.admin),
        None,
    )
    .await
    .ok();
    env.get(&format!("/v1/products/{id}"), None)
        .await
        .assert_error(404, 5);
}

/// GET with query parameters: page size, page tokens and filters.
pub async fn rest_list_with_query_and_page_tokens(backend: Backend) {
    let env = Env::start(backend).await;
    let tag = unique("pager");
    let mut ids = Vec::new();
    for i in 0..3 {
        let p = env.product(&format!("{tag} item{i}"), 100).await;
        ids.push(p["id"].as_str().unwrap().to_string());
    }
    env.product("unrelated", 100).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..5 {
        let path = format!(
            "/v1/products?pageSize=2&name_contains={}&page_token={token}",
            tag.replace(' ', "+")
        );
        let page = env.get(&path, None).await.ok();
        for p in page["products"].as_array().unwrap() {
            seen.push(p["id"].as_str().unwrap().to_string());
        }
        token = page["nextPageToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
        assert!(page["products"].as_array().unwrap().len() == 2);
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "pages cover exactly the filtered products");
}

/// Custom verbs (`:restock`, `:complete`, `:cancel`), enums in query parameters, and
/// orders end to end.
pub async fn rest_custom_verbs_and_orders(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("Lamp", 2500).await;
    let pid = product["id"].as_str().unwrap();
    let warehouse = env
        .rest(
            Method::POST,
            "/v1/warehouses",
            Some(&env.admin),
            Some(json!({"name": unique("Depot"), "address": "1 Road", "latitude": 48.1, "longitude": 11.5})),
        )
        .await
        .ok()["warehouse"]
        .clone();
    let wid = warehouse["id"].as_str().unwrap();

    let restocked = env
        .rest(
            Method::POST,
            &format!("/v1/stock/{pid}:restock"),
            Some(&env.admin),
            Some(json!({"warehouseId": wid, "quantity": "5", "requestId": unique("restock")})),
        )
        .await
        .ok();
    assert_eq!(restocked["stock"]["totalOnHand"], "5", "{restocked}");
    let stock = env.get(&format!("/v1/stock/{pid}"), None).await.ok();
    assert_eq!(stock["stock"]["totalAvailable"], "5");

    let customer = env.user("ROLE_CUSTOMER").await;
    let order = env
        .rest(
            Method::POST,
            "/v1/orders",
            Some(&customer),
            Some(json!({
                "requestId": unique("order"),
                "items": [{"productId": pid, "quantity": 2}],
            })),
        )
        .await
        .ok()["order"]
        .clone();
    assert_eq!(order["status"], "ORDER_STATUS_PENDING");
    assert_eq!(order["totalCents"], "5000");
    let oid = order["id"].as_str().unwrap();

    let completed = env
        .rest(
            Method::POST,
            &format!("/v1/orders/{oid}:complete"),
            Some(&env.admin),
            None,
        )
        .await
        .ok();
    assert_eq!(completed["order"]["status"], "ORDER_STATUS_COMPLETED");

    let listed = env
        .get(
            "/v1/orders?status=ORDER_STATUS_COMPLETED&pageSize=50",
            Some(&customer),
        )
        .await
        .ok();
    let orders = listed["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{listed}");
    assert_eq!(orders[0]["id"], oid);
    let pending = env
        .get("/v1/orders?status=ORDER_STATUS_PENDING", Some(&customer))
        .await
        .ok();
    assert_eq!(pending["orders"], json!([]));

    // Cancelling a completed order is a FAILED_PRECONDITION → 400.
    env.rest(
        Method::POST,
        &format!("/v1/orders/{oid}:cancel"),
        Some(&env.admin),
        Some(json!({"reason": "changed my mind"})),
    )
    .await
    .assert_error(400, 9);
}

/// gRPC codes from the services arrive as the HTTP statuses of API.md, with a
/// google.rpc.Status body.
pub async fn rest_error_mapping(backend: Backend) {
    let env = Env::start(backend).await;
    let customer = env.user("ROLE_CUSTOMER").await;
    let product = env.product("Chair", 100).await;
    let sku = product["sku"].as_str().unwrap();

    // INVALID_ARGUMENT → 400
    let msg = env
        .rest(
            Method::POST,
            "/v1/products",
            Some(&env.admin),
            Some(json!({"sku": unique("SKU"), "name": unique("neg"), "priceCents": "-1"})),
        )
        .await
        .assert_error(400, 3);
    assert!(
        msg.contains("price_cents") || msg.contains("priceCents"),
        "{msg}"
    );
    // ALREADY_EXISTS → 409
    env.rest(
        Method::POST,
        "/v1/products",
        Some(&env.admin),
        Some(json!({"sku": sku, "name": unique("dup"), "priceCents": "1"})),
    )
    .await
    .assert_error(409, 6);
    // UNAUTHENTICATED → 401 (no token, checked by the service)
    let resp = env.get("/v1/auth/profile", None).await;
    resp.assert_error(401, 16);
    // PERMISSION_DENIED → 403
    env.rest(
        Method::POST,
        "/v1/products",
        Some(&customer),
        Some(json!({"sku": unique("SKU"), "name": unique("nope"), "priceCents": "1"})),
    )
    .await
    .assert_error(403, 7);
    // NOT_FOUND → 404
    env.get("/v1/products/does-not-exist", None)
        .await
        .assert_error(404, 5);
    // FAILED_PRECONDITION → 400: more than is in stock.
    env.rest(
        Method::POST,
        "/v1/orders",
        Some(&customer),
        Some(json!({
            "requestId": unique("short"),
            "items": [{"productId": product["id"], "quantity": 1}],
        })),
    )
    .await
    .assert_error(400, 9);
    // Signed in: the profile works and the JSON enum is by name.
    let me = env.get("/v1/auth/profile", Some(&customer)).await.ok();
    assert_eq!(me["user"]["role"], "ROLE_CUSTOMER");
}

/// Bad input refused at the gateway: malformed JSON, wrong types, unknown fields and
/// parameters, unknown routes and methods, other content types, oversized bodies.
pub async fn rest_malformed_input(backend: Backend) {
    let env = Env::start_with(backend, |c| c.gateway.max_body_bytes = 2048).await;
    let json_ct = [("content-type", "application/json")];
    let auth = format!("Bearer {}", env.admin);
    let with_auth = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];

    let msg = env
        .send(Method::POST, "/v1/products", &with_auth, "{\"sku\": ")
        .await
        .assert_error(400, 3);
    assert!(msg.contains("malformed JSON"), "{msg}");

    let msg = env
        .send(
            Method::POST,
            "/v1/products",
            &with_auth,
            r#"{"sku":"x","priceCents":"twelve"}"#,
        )
        .await
        .assert_error(400, 3);
    assert!(msg.starts_with("priceCents:"), "{msg}");

    let msg = env
        .send(
            Method::POST,
            "/v1/orders",
            &with_auth,
            r#"{"requestId":"r","items":[{"productId":"p","quantity":{}}]}"#,
        )
        .await
        .assert_error(400, 3);
    assert!(msg.starts_with("items[0].quantity:"), "{msg}");

    let msg = env
        .send(
            Method::POST,
            "/v1/products",
            &with_auth,
            r#"{"colour":"red"}"#,
        )
        .await
        .assert_error(400, 3);
    assert!(msg.contains("colour"), "{msg}");

    let msg = env
        .get("/v1/orders?status=SHIPPED", Some(&env.admin))
        .await
        .assert_error(400, 3);
    assert!(msg.starts_with("status:"), "{msg}");
    let msg = env
        .get("/v1/products?pageSize=many", None)
        .await
        .assert_error(400, 3);
    assert!(msg.starts_with("pageSize:"), "{msg}");
    let msg = env
        .get("/v1/products?colour=red", None)
        .await
        .assert_error(400, 3);
    assert!(msg.starts_with("colour:"), "{msg}");

    // Unknown route → 404 JSON; known path with another method → 405 with Allow.
    env.get("/v1/nothing/here", None).await.assert_error(404, 5);
    let resp = env
        .send(Method::PUT, "/v1/products/x", &json_ct, "{}")
        .await;
    resp.assert_error(405, 12);
    let allow = resp.header("allow").unwrap_or_default().to_string();
    assert!(allow.contains("GET") && allow.contains("PATCH"), "{allow}");

    // Another content type → 415.
    env.send(
        Method::POST,
        "/v1/products",
        &[
            ("content-type", "text/plain"),
            ("authorization", auth.as_str()),
        ],
        "sku=x",
    )
    .await
    .assert_error(415, 3);

    // Over the configured limit → 413.
    let big = json!({"sku": "x", "description": "d".repeat(4096)}).to_string();
    env.send(Method::POST, "/v1/products", &with_auth, big)
        .await
        .assert_error(413, 8);
}

/// Timestamps and doubles in JSON both ways, unicode in strings, and filters by query.
pub async fn rest_timestamps_and_measurements(backend: Backend) {
    let env = Env::start(backend).await;
    let variable = env
        .rest(
            Method::POST,
            "/v1/variables",
            Some(&env.admin),
            Some(json!({"name": unique("temperature"), "unit": "°C"})),
        )
        .await
        .ok()["variable"]
        .clone();
    assert_eq!(variable["unit"], "°C");
    let warehouse = env
        .rest(
            Method::POST,
            "/v1/warehouses",
            Some(&env.admin),
            Some(json!({"name": unique("Cold store"), "latitude": -33.5, "longitude": 151.25})),
        )
        .await
        .ok()["warehouse"]
        .clone();
    assert_eq!(warehouse["latitude"], -33.5);
    let (vid, wid) = (
        variable["id"].as_str().unwrap(),
        warehouse["id"].as_str().unwrap(),
    );
    let recorded = env
        .rest(
            Method::POST,
            "/v1/measurements",
            Some(&env.admin),
            Some(json!({
                "variableId": vid,
                "warehouseId": wid,
                "value": 4.5,
                "measuredAt": "2024-05-01T10:00:00.250Z",
            })),
        )
        .await
        .ok()["measurement"]
        .clone();
    assert_eq!(recorded["value"], 4.5);
    assert_eq!(recorded["measuredAt"], "2024-05-01T10:00:00.250Z");

    let listed = env
        .get(
            &format!("/v1/measurements?variable_id={vid}&warehouseId={wid}"),
            Some(&env.admin),
        )
        .await
        .ok();
    assert_eq!(
        listed["measurements"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    assert_eq!(listed["measurements"][0]["id"], recorded["id"]);

    let msg = env
        .rest(
            Method::POST,
            "/v1/measurements",
            Some(&env.admin),
            Some(json!({"variableId": vid, "warehouseId": wid, "value": 1, "measuredAt": "yesterday"})),
        )
        .await
        .assert_error(400, 3);
    assert!(msg.starts_with("measuredAt:"), "{msg}");
}
