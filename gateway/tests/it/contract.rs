//! The OpenAPI document against the services' real answers, and authentication before
//! validation.
//!
//! * For every operation with a JSON body, `{}` is sent (as the admin) and each field the
//!   service names in its INVALID_ARGUMENT answer must be in the schema's `required` list;
//!   the test then fills that field with a value valid by the schema and sends again,
//!   until the request passes validation. Every `required` field must have been named on
//!   the way (the list holds nothing the service does not enforce).
//! * Every RPC that needs a caller answers 401 / UNAUTHENTICATED to a call without a token
//!   and with a malformed body, over REST, gRPC, gRPC-web and Connect; public ones still
//!   judge the body (400).

use std::collections::BTreeSet;

use bytes::Bytes;
use http::Method;
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};
use stockmesh::testing::Backend;
use stockmesh_gateway::contract::{Access, access_table};

use crate::support::{Env, unique};

/// `#/components/schemas/...` → the schema; other schemas as they are.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// The object schema a body schema stands for: through `$ref`, `allOf` and the non-null
/// branch of `anyOf`.
fn object<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let schema = resolve(doc, schema);
    if let Some(first) = schema
        .get("allOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(|v| v.get(0))
    {
        return object(doc, first);
    }
    schema
}

/// The value schema of a property: through `$ref`, `allOf` and the first `anyOf` branch
/// (the string form of 64-bit integers, the name form of enums).
fn value_schema<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    object(doc, schema)
}

/// lowerCamelCase of a proto field name (the JSON name).
fn camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A value the schema admits, preferring ones the services accept too.
fn valid(doc: &Value, schema: &Value) -> Value {
    let schema = value_schema(doc, schema);
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .find(|v| !v.as_str().is_some_and(|s| s.ends_with("_UNSPECIFIED")))
            .cloned()
            .unwrap_or(Value::Null);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let items: Vec<Value> = (0..min).map(|_| valid(doc, &schema["items"])).collect();
            Value::Array(items)
        }
        Some("object") => json!({}),
        Some("boolean") => json!(true),
        Some("integer" | "number") => {
            let min = schema.get("minimum").and_then(Value::as_f64).unwrap_or(1.0);
            json!(min.max(1.0) as i64)
        }
        _ => {
            let pattern = schema
                .get("pattern")
                .and_then(Value::as_str)
                .map(|p| regex::Regex::new(p).unwrap());
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            let candidates = match schema.get("format").and_then(Value::as_str) {
                Some("uuid") => vec![uuid::Uuid::now_v7().to_string()],
                Some("email") => vec![format!("{}@example.com", unique("contract"))],
                _ => vec![unique("contract"), "1".into(), "USD".into()],
            };
            let pick = candidates
                .into_iter()
                .find(|c| {
                    c.chars().count() >= min && pattern.as_ref().is_none_or(|p| p.is_match(c))
                })
                .unwrap_or_else(|| panic!("no valid example for {schema}"));
            json!(pick)
        }
    }
}

/// Splits `items[0].product_id` into `["items", "0", "product_id"]`.
fn field_path(field: &str) -> Vec<String> {
    field
        .replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Walks `path` (proto names, array indexes) through the body `schema` and `body`,
/// creating what is missing; returns the required list of the innermost object, the
/// JSON name and the schema of the field, and a place to put its value.
fn locate<'a>(
    doc: &Value,
    schema: &Value,
    body: &'a mut Value,
    path: &[String],
) -> (Vec<String>, String, Value, &'a mut Value) {
    let obj = object(doc, schema).clone();
    let (head, rest) = path.split_first().unwrap();
    let name = camel(head);
    let required: Vec<String> = obj["required"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let prop = obj["properties"][&name].clone();
    assert!(
        !prop.is_null(),
        "the service named {head:?}, which the schema does not have: {obj}"
    );
    let map = body.as_object_mut().unwrap();
    if rest.is_empty() {
        let slot = map.entry(name.clone()).or_insert(Value::Null);
        return (required, name, prop, slot);
    }
    let child = map.entry(name).or_insert_with(|| json!([]));
    let prop_schema = value_schema(doc, &prop).clone();
    if let Ok(index) = rest[0].parse::<usize>() {
        let items = child.as_array_mut().unwrap();
        while items.len() <= index {
            items.push(json!({}));
        }
        locate(doc, &prop_schema["items"], &mut items[index], &rest[1..])
    } else {
        if child.is_array() {
            *child = json!({});
        }
        locate(doc, &prop_schema, child, rest)
    }
}

/// Every REQUIRED field the schema lists, as `parent.child` JSON paths (one item deep in
/// arrays), for the vice-versa check.
fn required_paths(doc: &Value, schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let obj = object(doc, schema);
    for name in obj["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap();
        let path = format!("{prefix}{name}");
        out.insert(path.clone());
        let prop = value_schema(doc, &obj["properties"][name]);
        if prop["type"] == "array" && object(doc, &prop["items"]).get("properties").is_some() {
            required_paths(doc, &prop["items"], &format!("{path}[]."), out);
        }
    }
}

/// The path of an operation with every parameter filled.
fn concrete_path(doc: &Value, path: &str, op: &Value) -> String {
    let mut out = path.to_string();
    for p in op["parameters"].as_array().into_iter().flatten() {
        if p["in"] == "path" {
            let name = p["name"].as_str().unwrap();
            let value = valid(doc, &p["schema"]);
            out = out.replace(&format!("{{{name}}}"), value.as_str().unwrap());
        }
    }
    out
}

pub async fn required_lists_match_invalid_argument_answers(backend: Backend) {
    let env = Env::start(backend).await;
    let doc = env.get("/openapi.json", None).await.ok();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") else {
                continue;
            };
            let label = format!("{} {path}", method.to_uppercase());
            let url = concrete_path(&doc, path, op);
            let method: Method = method.to_uppercase().parse().unwrap();
            let mut body = json!({});
            let mut named = BTreeSet::new();
            if schema.get("minProperties").and_then(Value::as_u64) == Some(1) {
                // An update's body keys are its mask: `{}` is an empty mask, which the
                // schema's minProperties forbids and the service refuses.
                let resp = env
                    .rest(method.clone(), &url, Some(&env.admin), Some(body))
                    .await;
                let msg = resp.assert_error(400, 3);
                assert!(msg.starts_with("update_mask"), "{label}: {msg}");
                checked += 1;
                continue;
            }
            for round in 0.. {
                assert!(round < 20, "{label}: no end to INVALID_ARGUMENT answers");
                let resp = env
                    .rest(method.clone(), &url, Some(&env.admin), Some(body.clone()))
                    .await;
                let json = resp.json();
                if !(resp.status == 400 && json["code"] == 3) {
                    break;
                }
                let message = json["message"].as_str().unwrap().to_string();
                let (field, _) = message
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{label}: {message:?} names no field"));
                let path = field_path(field);
                let (required, name, prop, slot) = locate(&doc, schema, &mut body, &path);
                assert!(
                    required.contains(&name),
                    "{label}: the service refuses {body} with {message:?}, but {name:?} is not \
                     in the schema's required list {required:?}"
                );
                assert!(
                    slot.is_null(),
                    "{label}: the service refuses the schema-valid value {slot} of {field}: {message:?}"
                );
                *slot = valid(&doc, &prop);
                let mut json_path = String::new();
                for (i, part) in path.iter().enumerate() {
                    if part.parse::<usize>().is_ok() {
                        json_path.push_str("[].");
                    } else {
                        if i > 0 && !json_path.ends_with('.') {
                            json_path.push('.');
                        }
                        json_path.push_str(&camel(part));
                    }
                }
                named.insert(json_path);
            }
            let mut required = BTreeSet::new();
            required_paths(&doc, schema, "", &mut required);
            assert_eq!(
                named, required,
                "{label}: the fields the service named (left) are not the schema's required \
                 fields (right)"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} operations with a body");
}

/// A malformed body for every protocol, and no token: 401 / UNAUTHENTICATED wherever the
/// RPC needs a caller.
pub async fn signed_in_routes_answer_401_before_reading_the_body(backend: Backend) {
    let env = Env::start(backend).await;
    let doc = env.get("/openapi.json", None).await.ok();
    let mut signed_in = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let needs_caller = !op["security"].as_array().unwrap().is_empty();
            let label = format!("{} {path}", method.to_uppercase());
            let has_body = op.get("requestBody").is_some();
            let mut url = concrete_path(&doc, path, op);
            if !has_body {
                // Nothing to break in a body: break the query instead.
                url.push_str("?page_size=not-a-number&no_such_field=1");
            }
            let resp = env
                .send(
                    method.to_uppercase().parse().unwrap(),
                    &url,
                    &[("content-type", "application/json")],
                    Bytes::from_static(b"{\"not json"),
                )
                .await;
            if needs_caller {
                signed_in += 1;
                resp.assert_error(401, 16);
                assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{label}");
            } else if has_body {
                // Public: the body is judged (there is no caller to wait for).
                resp.assert_error(400, 3);
            }
        }
    }
    assert!(signed_in >= 25, "only {signed_in} signed-in routes");

    let pool = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).unwrap();
    let garbage = Bytes::from_static(&[0, 0, 0, 0, 3, 0xff, 0xff, 0xff]);
    let mut methods = 0;
    for (grpc_path, access) in access_table(&pool) {
        if access == Access::Public || !grpc_path.starts_with("/stockmesh.") {
            continue;
        }
        methods += 1;
        // gRPC (h2c): trailers-only UNAUTHENTICATED.
        let resp = env.h2c(&grpc_path, &[], garbage.clone()).await;
        assert_eq!(resp.header("grpc-status"), Some("16"), "gRPC {grpc_path}");
        // gRPC-web.
        let resp = env
            .send(
                Method::POST,
                &grpc_path,
                &[("content-type", "application/grpc-web+proto")],
                garbage.clone(),
            )
            .await;
        assert_eq!(
            resp.header("grpc-status"),
            Some("16"),
            "gRPC-web {grpc_path}"
        );
        // Connect: unary JSON and streaming envelopes alike answer 401 first.
        let method = pool
            .services()
            .flat_map(|s| s.methods().collect::<Vec<_>>())
            .find(|m| format!("/{}/{}", m.parent_service().full_name(), m.name()) == grpc_path)
            .unwrap();
        let content_type = if method.is_server_streaming() {
            "application/connect+json"
        } else {
            "application/json"
        };
        let resp = env
            .send(
                Method::POST,
                &grpc_path,
                &[("content-type", content_type)],
                Bytes::from_static(b"{\"not json"),
            )
            .await;
        if method.is_server_streaming() {
            // Connect streams answer 200 with the error in the end-of-stream envelope.
            let text = String::from_utf8_lossy(&resp.body).to_string();
            assert!(
                text.contains("unauthenticated"),
                "Connect {grpc_path}: {text}"
            );
        } else {
            assert_eq!(resp.status, 401, "Connect {grpc_path}: {:?}", resp.body);
            assert_eq!(
                resp.json()["code"],
                "unauthenticated",
                "Connect {grpc_path}"
            );
        }
    }
    assert!(methods >= 25, "only {methods} signed-in methods");
}
