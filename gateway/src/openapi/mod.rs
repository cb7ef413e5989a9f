//! `GET /openapi.json`: an OpenAPI 3.0 document generated at start-up from the same
//! descriptors and routes the transcoder uses, so the document cannot drift from what the
//! gateway accepts.
//!
//! Every route becomes an operation ([`paths`]: path and query parameters, request body,
//! the 200 and each error status, security, links); every message reachable from them
//! becomes a component schema named by its full protobuf name ([`schema`]), in proto3-JSON
//! form. Descriptions come from the proto comments. What the document promises beyond
//! shapes comes from the protos' annotations ([`crate::contract`]):
//!
//! * `required` lists from `google.api.field_behavior = REQUIRED` (the fields the
//!   services refuse when empty), `readOnly` from `OUTPUT_ONLY`;
//! * formats and bounds (`uuid`, `email`, `minimum`/`maximum`, `maxLength`, `pattern`,
//!   item counts) from `stockmesh.options.v1.rules`, which mirror the services' checks;
//! * `security: []` for public RPCs and bearer only for the others, from
//!   `stockmesh.options.v1.access` — the table the edge uses to answer 401 before 400.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, MessageDescriptor, MethodDescriptor,
};
use serde_json::{Map, Value, json};

use crate::routes::{Route, Routes};

mod paths;
mod schema;

pub use paths::doc_path;

/// Builds the document.
pub fn document(pool: &DescriptorPool, routes: &Routes) -> Value {
    let comments = Comments::new(pool);
    let mut schemas = schema::Schemas::new(&comments);
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut op_ids: HashMap<String, usize> = HashMap::new();
    let mut tags: BTreeMap<String, String> = BTreeMap::new();
    let mut ordered: Vec<&Route> = routes.iter().collect();
    ordered.sort_by(|a, b| {
        (doc_path(a), a.http_method.as_str()).cmp(&(doc_path(b), b.http_method.as_str()))
    });
    let mut with_ids = Vec::new();
    for route in ordered {
        let service = route.method.parent_service();
        tags.entry(service.name().to_string()).or_insert_with(|| {
            comments
                .get(service.parent_file().name(), service.path())
                .unwrap_or_default()
        });
        let base_id = format!("{}_{}", service.name(), route.method.name());
        let n = op_ids.entry(base_id.clone()).or_insert(0);
        let op_id = if *n == 0 {
            base_id
        } else {
            format!("{base_id}_{n}")
        };
        *n += 1;
        let op = paths::operation(&mut schemas, route, op_id.clone());
        paths
            .entry(doc_path(route))
            .or_default()
            .insert(route.http_method.as_str().to_ascii_lowercase(), op);
        with_ids.push((route, op_id));
    }
    paths::add_links(&with_ids, &mut paths);
    schemas.drain();
    let mut schemas: Map<String, Value> = schemas.schemas.into_iter().collect();
    schemas.insert(
        "google.rpc.Status".into(),
        json!({
            "type": "object",
            "description": "An error: the gRPC status code, a message, and details. The \
                message of an INVALID_ARGUMENT starts with the field it is about \
                (`name: is required`, `items[0].quantity: must be greater than 0`).",
            "properties": {
                "code": {"type": "integer", "format": "int32", "description": "gRPC status code."},
                "message": {"type": "string", "description": "Human-readable message."},
                "details": {"type": "array", "items": {"type": "object", "additionalProperties": true}},
            },
            "required": ["code", "message", "details"],
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "stockmesh API",
            "version": "v1",
            "description": "REST/JSON surface of stockmesh, transcoded by the gateway from the \
                google.api.http annotations of its gRPC services. Errors use the \
                google.rpc.Status JSON shape. Operations with `security: []` are public; \
                the others need `authorization: Bearer <access token>` and answer 401 without \
                one before looking at the request body.",
        },
        "servers": [{"url": "/"}],
        "tags": tags.into_iter().map(|(name, description)| {
            json!({"name": name, "description": description})
        }).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    })
}

/// Leading comments from the source info, by file and descriptor path.
struct Comments {
    by_location: HashMap<(String, Vec<i32>), String>,
}

impl Comments {
    fn new(pool: &DescriptorPool) -> Self {
        let mut by_location = HashMap::new();
        for file in pool.files() {
            let proto = file.file_descriptor_proto();
            let Some(info) = &proto.source_code_info else {
                continue;
            };
            for loc in &info.location {
                if let Some(text) = &loc.leading_comments {
                    let text = text
                        .lines()
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("\n")
                        .trim()
                        .to_string();
                    if !text.is_empty() {
                        by_location.insert((file.name().to_string(), loc.path.clone()), text);
                    }
                }
            }
        }
        Self { by_location }
    }

    fn get(&self, file: &str, path: &[i32]) -> Option<String> {
        self.by_location
            .get(&(file.to_string(), path.to_vec()))
            .cloned()
    }

    fn method(&self, m: &MethodDescriptor) -> Option<String> {
        self.get(m.parent_file().name(), m.path())
    }

    fn field(&self, f: &FieldDescriptor) -> Option<String> {
        self.get(f.parent_file().name(), f.path())
    }

    fn message(&self, m: &MessageDescriptor) -> Option<String> {
        self.get(m.parent_file().name(), m.path())
    }

    fn enumeration(&self, e: &EnumDescriptor) -> Option<String> {
        self.get(e.parent_file().name(), e.path())
    }
}

/// Structural checks of a generated document (also used by the integration tests):
/// every `$ref` resolves, every templated path parameter is declared exactly once, and
/// operation ids are unique. Returns the problems found.
pub fn lint(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    for r in all {
        let ok = r
            .strip_prefix("#/components/schemas/")
            .is_some_and(|name| schemas.get(name).is_some_and(Value::is_object));
        if !ok {
            problems.push(format!("unresolved $ref {r}"));
        }
    }
    let mut ids = HashSet::new();
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (path, item) in &paths {
        let templated: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split('}').next())
            .collect();
        for (method, op) in item.as_object().into_iter().flatten() {
            let id = op.get("operationId").and_then(Value::as_str).unwrap_or("");
            if id.is_empty() || !ids.insert(id.to_string()) {
                problems.push(format!(
                    "{method} {path}: missing or duplicate operationId {id:?}"
                ));
            }
            let declared: Vec<&str> = op
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|p| p.get("in").and_then(Value::as_str) == Some("path"))
                .filter_map(|p| p.get("name").and_then(Value::as_str))
                .collect();
            let mut a = templated.clone();
            let mut b = declared.clone();
            a.sort_unstable();
            b.sort_unstable();
            if a != b {
                problems.push(format!(
                    "{method} {path}: path parameters {b:?} != template {a:?}"
                ));
            }
            let content = op.pointer("/responses/200/content");
            let unary = content.and_then(|c| c.pointer("/application~1json/schema"));
            let stream = content.and_then(|c| c.pointer("/text~1event-stream/schema"));
            if unary.is_none() && stream.is_none() {
                problems.push(format!("{method} {path}: no 200 response schema"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        let pool = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = Routes::from_pool(&pool).unwrap();
        document(&pool, &routes)
    }

    #[test]
    fn document_is_structurally_sound() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(lint(&doc), Vec::<String>::new());
    }

    #[test]
    fn every_route_is_documented() {
        let pool = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = Routes::from_pool(&pool).unwrap();
        let doc = document(&pool, &routes);
        for route in routes.iter() {
            let path = doc_path(route);
            let method = route.http_method.as_str().to_ascii_lowercase();
            assert!(
                doc["paths"][&path][&method].is_object(),
                "{method} {path} missing"
            );
        }
    }

    #[test]
    fn update_product_has_path_query_and_body() {
        let doc = doc();
        let op = &doc["paths"]["/v1/products/{product_id}"]["patch"];
        let params = op["parameters"].as_array().unwrap();
        let id = params
            .iter()
            .find(|p| p["name"] == "product_id" && p["in"] == "path")
            .unwrap();
        assert_eq!(id["schema"]["format"], "uuid");
        // The gateway derives the mask from the body's keys over REST.
        assert!(
            !params.iter().any(|p| p["name"] == "update_mask"),
            "{params:?}"
        );
        assert_eq!(op["requestBody"]["required"], true);
        let body = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(
            body.to_string()
                .contains("#/components/schemas/stockmesh.products.v1.Product")
        );
        assert_eq!(op["operationId"], "ProductService_UpdateProduct");
        assert_eq!(op["security"], serde_json::json!([{"bearerAuth": []}]));
        let product = &doc["components"]["schemas"]["stockmesh.products.v1.Product"];
        let price = &product["properties"]["priceCents"];
        assert_eq!(price["anyOf"][0]["type"], "string", "{price}");
        assert_eq!(price["anyOf"][1]["type"], "integer", "{price}");
        assert_eq!(price["anyOf"][1]["minimum"], 0, "{price}");
        assert_eq!(price["nullable"], true, "0 is a valid price");
        assert!(
            product["properties"]["sku"].get("nullable").is_none(),
            "\"\" is no sku"
        );
        assert_eq!(product["properties"]["createdAt"]["format"], "date-time");
        assert_eq!(product["properties"]["createdAt"]["readOnly"], true);
        assert_eq!(product["properties"]["id"]["readOnly"], true);
        assert_eq!(product["additionalProperties"], false);
        assert!(
            product.get("required").is_none(),
            "an update sends any subset"
        );
        assert!(
            product["description"]
                .as_str()
                .unwrap()
                .contains("catalog item")
        );
    }

    #[test]
    fn public_reads_need_no_auth_and_have_comments() {
        let doc = doc();
        let op = &doc["paths"]["/v1/products/{id}"]["get"];
        assert_eq!(op["security"], serde_json::json!([]));
        assert!(op["responses"].get("403").is_none());
        assert!(
            op["responses"]["401"].is_object(),
            "a bad token is still refused"
        );
        assert!(
            op["summary"]
                .as_str()
                .unwrap()
                .starts_with("GetProduct returns one product")
        );
        let list = &doc["paths"]["/v1/orders"]["get"]["parameters"];
        let status = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "status")
            .unwrap();
        // Inlined: the query string takes names and numbers.
        let values = status["schema"]["enum"].as_array().unwrap();
        assert!(
            values.iter().any(|v| v == "ORDER_STATUS_PENDING"),
            "{values:?}"
        );
        assert!(values.iter().any(|v| v == "1"), "{values:?}");
        let statuses = &doc["components"]["schemas"]["stockmesh.orders.v1.OrderStatus"]["enum"];
        assert!(
            statuses
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == "ORDER_STATUS_PENDING")
        );
    }

    #[test]
    fn streams_document_sse_and_ndjson() {
        let doc = doc();
        for (path, name, public) in [
            (
                "/v1/stock:watch",
                "stockmesh.inventory.v1.WatchStockResponse",
                true,
            ),
            (
                "/v1/orders:watch",
                "stockmesh.orders.v1.WatchOrdersResponse",
                false,
            ),
        ] {
            let op = &doc["paths"][path]["get"];
            let content = &op["responses"]["200"]["content"];
            assert!(content.get("application/json").is_none(), "{path}");
            let ndjson = &content["application/x-ndjson"]["schema"]["properties"];
            assert_eq!(
                ndjson["result"]["$ref"],
                format!("#/components/schemas/{name}")
            );
            assert!(
                ndjson["error"]["$ref"]
                    .as_str()
                    .unwrap()
                    .ends_with("google.rpc.Status")
            );
            let sse = &content["text/event-stream"];
            assert!(sse["example"].as_str().unwrap().contains(name), "{sse}");
            let description = op["responses"]["200"]["description"].as_str().unwrap();
            assert!(description.contains("event: status"), "{description}");
            let params = op["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "Last-Event-ID" && p["in"] == "header"),
                "{params:?}"
            );
            assert_eq!(
                op["security"].as_array().unwrap().len(),
                if public { 0 } else { 1 }
            );
        }
        let stock = &doc["paths"]["/v1/stock:watch"]["get"]["parameters"];
        assert!(
            stock
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "product_ids")
        );
    }

    #[test]
    fn body_star_excludes_path_fields() {
        let doc = doc();
        let op = &doc["paths"]["/v1/stock/{product_id}:restock"]["post"];
        let body = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(body["properties"].get("productId").is_none());
        assert!(body["properties"].get("warehouseId").is_some());
        assert!(op.get("parameters").unwrap().as_array().unwrap().len() == 1);
        let required: Vec<&str> = body["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(required, ["warehouseId", "quantity", "requestId"]);
        assert_eq!(
            body["properties"]["quantity"]["anyOf"][0]["pattern"],
            "^\\+?0*([1-9][0-9]{0,11}|1000000000000)$"
        );
    }

    #[test]
    fn required_lists_bounds_and_enums() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let create = &schemas["stockmesh.products.v1.CreateProductRequest"];
        assert_eq!(create["required"], serde_json::json!(["sku", "name"]));
        // Trimmed by the service: the bound is in the pattern, not a maxLength.
        assert!(create["properties"]["sku"].get("maxLength").is_none());
        assert!(
            create["properties"]["sku"]["pattern"]
                .as_str()
                .unwrap()
                .contains("{1,64}")
        );
        assert_eq!(create["properties"]["description"]["maxLength"], 10000);
        assert_eq!(create["properties"]["description"]["nullable"], true);
        let user = &schemas["stockmesh.auth.v1.CreateUserRequest"];
        assert_eq!(
            user["required"],
            serde_json::json!(["email", "password", "displayName", "role"])
        );
        assert_eq!(user["properties"]["email"]["format"], "email");
        assert_eq!(user["properties"]["password"]["minLength"], 8);
        let roles = user["properties"]["role"]["anyOf"][0]["enum"]
            .as_array()
            .unwrap();
        assert_eq!(
            user["properties"]["role"]["anyOf"][1]["enum"],
            serde_json::json!([1, 2, 3, 4])
        );
        assert!(!roles.iter().any(|r| r == "ROLE_UNSPECIFIED"), "{roles:?}");
        assert!(roles.iter().any(|r| r == "ROLE_ADMIN"));
        let warehouse = &schemas["stockmesh.inventory.v1.CreateWarehouseRequest"];
        assert_eq!(warehouse["properties"]["latitude"]["minimum"], -90);
        assert_eq!(warehouse["properties"]["latitude"]["maximum"], 90);
        let order = &schemas["stockmesh.orders.v1.CreateOrderRequest"];
        assert_eq!(order["properties"]["items"]["minItems"], 1);
        assert_eq!(order["properties"]["items"]["maxItems"], 100);
        // Every pattern compiles (ECMA and Rust agree on the syntax used).
        fn patterns<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(p)) = m.get("pattern") {
                        out.push(p);
                    }
                    m.values().for_each(|v| patterns(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| patterns(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        patterns(&doc, &mut all);
        assert!(all.len() > 20);
        for p in all {
            regex::Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }

    #[test]
    fn security_follows_the_access_annotation_and_the_comments_agree() {
        let pool = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = Routes::from_pool(&pool).unwrap();
        let doc = document(&pool, &routes);
        let comments = Comments::new(&pool);
        for route in routes.iter() {
            let op =
                &doc["paths"][doc_path(route)][route.http_method.as_str().to_ascii_lowercase()];
            let public =
                crate::contract::Access::of(&route.method) == crate::contract::Access::Public;
            let says_public = comments
                .method(&route.method)
                .is_some_and(|c| c.contains("Access: public"));
            assert_eq!(
                public, says_public,
                "{}: annotation vs comment",
                route.label
            );
            let expected = if public {
                serde_json::json!([])
            } else {
                serde_json::json!([{"bearerAuth": []}])
            };
            assert_eq!(op["security"], expected, "{}", route.label);
            for status in ["400", "401", "404", "429", "503", "default"] {
                let schema = &op["responses"][status]["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/google.rpc.Status",
                    "{} {status}",
                    route.label
                );
            }
            assert_eq!(
                op["responses"]["403"].is_object(),
                !public,
                "{}",
                route.label
            );
        }
    }

    #[test]
    fn creates_link_to_the_operations_on_what_they_created() {
        let doc = doc();
        let links = &doc["paths"]["/v1/products"]["post"]["responses"]["200"]["links"];
        for (op, param) in [
            ("ProductService_GetProduct", "id"),
            ("ProductService_UpdateProduct", "product_id"),
            ("ProductService_DeleteProduct", "id"),
            ("InventoryService_GetStock", "product_id"),
            ("InventoryService_Restock", "product_id"),
        ] {
            assert_eq!(links[op]["operationId"], op, "{links}");
            assert_eq!(
                links[op]["parameters"][param], "$response.body#/product/id",
                "{op}"
            );
        }
        let orders = &doc["paths"]["/v1/orders"]["post"]["responses"]["200"]["links"];
        for op in [
            "OrderService_GetOrder",
            "OrderService_CancelOrder",
            "OrderService_CompleteOrder",
        ] {
            assert_eq!(
                orders[op]["parameters"]["id"], "$response.body#/order/id",
                "{op}"
            );
        }
        let warehouses = &doc["paths"]["/v1/warehouses"]["post"]["responses"]["200"]["links"];
        assert!(
            warehouses["InventoryService_UpdateWarehouse"].is_object(),
            "{warehouses}"
        );
        assert_eq!(
            warehouses["InventoryService_Restock"]["requestBody"]["warehouseId"],
            "$response.body#/warehouse/id"
        );
        let suppliers = &doc["paths"]["/v1/suppliers"]["post"]["responses"]["200"]["links"];
        assert_eq!(
            suppliers["ProductService_CreateProduct"]["requestBody"]["supplierId"],
            "$response.body#/supplier/id"
        );
    }
}
