//! `GET /openapi.json`: an OpenAPI 3.0 document generated at start-up from the same
//! descriptors and routes the transcoder uses, so the document cannot drift from what the
//! gateway accepts.
//!
//! Every route becomes an operation (path and query parameters, request body, response and
//! error schemas); every message reachable from them becomes a component schema named by
//! its full protobuf name, with proto3-JSON types (int64 as strings, Timestamp as
//! `date-time`, enums by name). Descriptions come from the proto comments. Operations
//! whose comment says `Access: public` accept a bearer token optionally; all others
//! require one. Server-streaming routes document their two stream formats
//! (`text/event-stream`, `application/x-ndjson`) and the `Last-Event-ID` header.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use serde_json::{Map, Value, json};

use crate::routes::{BodyRule, Route, Routes};
use crate::streaming::{KEEPALIVE, RESUME_FIELD, STATUS_EVENT};

/// Builds the document.
pub fn document(pool: &DescriptorPool, routes: &Routes) -> Value {
    let comments = Comments::new(pool);
    let mut generator = Generator {
        comments: &comments,
        schemas: BTreeMap::new(),
        queue: Vec::new(),
    };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut op_ids: HashMap<String, usize> = HashMap::new();
    let mut tags: BTreeMap<String, String> = BTreeMap::new();
    let mut ordered: Vec<&Route> = routes.iter().collect();
    ordered.sort_by(|a, b| {
        (a.template.openapi_path(), a.http_method.as_str())
            .cmp(&(b.template.openapi_path(), b.http_method.as_str()))
    });
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
        let op = generator.operation(route, op_id);
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.http_method.as_str().to_ascii_lowercase(), op);
    }
    generator.drain();
    let mut schemas: Map<String, Value> = generator.schemas.into_iter().collect();
    schemas.insert(
        "google.rpc.Status".into(),
        json!({
            "type": "object",
            "description": "An error: the gRPC status code, a message, and details.",
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
                google.rpc.Status JSON shape.",
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

struct Generator<'a> {
    comments: &'a Comments,
    schemas: BTreeMap<String, Value>,
    /// Messages and enums referenced but not yet written.
    queue: Vec<Named>,
}

enum Named {
    Message(MessageDescriptor),
    Enum(EnumDescriptor),
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Adds a description to a schema; a `$ref` gets wrapped so the description is not a
/// sibling the spec says to ignore.
fn describe(schema: Value, description: Option<String>) -> Value {
    let Some(description) = description else {
        return schema;
    };
    match schema {
        Value::Object(mut map) if !map.contains_key("$ref") => {
            map.insert("description".into(), Value::String(description));
            Value::Object(map)
        }
        other => json!({ "allOf": [other], "description": description }),
    }
}

impl Generator<'_> {
    fn operation(&mut self, route: &Route, op_id: String) -> Value {
        let method = &route.method;
        let comment = self.comments.method(method);
        let mut op = Map::new();
        op.insert("operationId".into(), Value::String(op_id));
        op.insert(
            "tags".into(),
            json!([method.parent_service().name().to_string()]),
        );
        if let Some(c) = &comment {
            let summary = c.lines().next().unwrap_or_default().to_string();
            op.insert("summary".into(), Value::String(summary));
            op.insert("description".into(), Value::String(c.clone()));
        }

        let mut params = Vec::new();
        let mut path_names = HashSet::new();
        for (var, chain) in route.template.variables().iter().zip(&route.path_fields) {
            let Some(leaf) = chain.last() else { continue };
            path_names.insert(var.dotted());
            params.push(json!({
                "name": var.dotted(),
                "in": "path",
                "required": true,
                "description": self.comments.field(leaf).unwrap_or_default(),
                "schema": self.kind_schema(leaf.kind()),
            }));
        }
        if !matches!(route.body, BodyRule::All) {
            let body_field = match &route.body {
                BodyRule::Field(f) => Some(f.name().to_string()),
                _ => None,
            };
            let mut query = Vec::new();
            self.query_params(
                &method.input(),
                "",
                &path_names,
                body_field.as_deref(),
                0,
                &mut query,
            );
            params.extend(query);
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }

        let body_schema = match &route.body {
            BodyRule::None => None,
            BodyRule::All => {
                let input = method.input();
                let top_level_path: HashSet<&str> = route
                    .template
                    .variables()
                    .iter()
                    .filter(|v| v.field_path.len() == 1)
                    .map(|v| v.field_path[0].as_str())
                    .collect();
                if top_level_path.is_empty() {
                    Some(self.message_ref(&input))
                } else {
                    // The path carries some fields: the body schema is the rest.
                    let mut props = Map::new();
                    for f in input.fields() {
                        if !top_level_path.contains(f.name()) {
                            let schema = self.field_schema(&f);
                            props.insert(f.json_name().to_string(), schema);
                        }
                    }
                    Some(json!({"type": "object", "properties": props}))
                }
            }
            BodyRule::Field(f) => Some(self.field_schema(f)),
        };
        if let Some(schema) = body_schema {
            op.insert(
                "requestBody".into(),
                json!({
                    "required": matches!(route.body, BodyRule::Field(_)),
                    "content": {"application/json": {"schema": schema}},
                }),
            );
        }

        let output = method.output();
        let ok_schema = match &route.response_body {
            Some(f) => self.field_schema(f),
            None => self.message_ref(&output),
        };
        let ok = if method.is_server_streaming() {
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut)
                && method.input().get_field_by_name(RESUME_FIELD).is_some()
            {
                params.push(json!({
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": false,
                    "description": format!("Resume after this event: sets `{RESUME_FIELD}` \
                        (sent by an EventSource when it reconnects)."),
                    "schema": {"type": "string"},
                }));
            }
            stream_response(&output, ok_schema)
        } else {
            json!({
                "description": self.comments.message(&output).unwrap_or_else(|| "OK".into()),
                "content": {"application/json": {"schema": ok_schema}},
            })
        };
        op.insert(
            "responses".into(),
            json!({
                "200": ok,
                "default": {
                    "description": "An error, as google.rpc.Status.",
                    "content": {"application/json": {"schema": reference("google.rpc.Status")}},
                },
            }),
        );
        let public = comment
            .as_deref()
            .is_some_and(|c| c.contains("Access: public"));
        let security = if public {
            json!([{}, {"bearerAuth": []}])
        } else {
            json!([{"bearerAuth": []}])
        };
        op.insert("security".into(), security);
        Value::Object(op)
    }

    /// Query parameters: every leaf not bound by the path or the body, nested with dots.
    fn query_params(
        &mut self,
        msg: &MessageDescriptor,
        prefix: &str,
        path_names: &HashSet<String>,
        body_field: Option<&str>,
        depth: usize,
        out: &mut Vec<Value>,
    ) {
        for f in msg.fields() {
            let name = format!("{prefix}{}", f.name());
            if path_names.contains(&name)
                || (depth == 0 && body_field == Some(f.name()))
                || f.is_map()
            {
                continue;
            }
            if let Kind::Message(m) = f.kind()
                && !f.is_list()
                && wkt_schema(&m).is_none()
            {
                if depth < 3 {
                    self.query_params(
                        &m,
                        &format!("{name}."),
                        path_names,
                        body_field,
                        depth + 1,
                        out,
                    );
                }
                continue;
            }
            let mut param = json!({
                "name": name,
                "in": "query",
                "required": false,
                "schema": self.field_schema(&f),
            });
            if let Some(c) = self.comments.field(&f) {
                param["description"] = Value::String(c);
            }
            if f.is_list() {
                param["style"] = json!("form");
                param["explode"] = json!(true);
            }
            out.push(param);
        }
    }

    fn field_schema(&mut self, f: &FieldDescriptor) -> Value {
        let schema = if f.is_map() {
            let value = match f.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other,
            };
            json!({"type": "object", "additionalProperties": self.kind_schema(value)})
        } else if f.is_list() {
            json!({"type": "array", "items": self.kind_schema(f.kind())})
        } else {
            self.kind_schema(f.kind())
        };
        describe(schema, self.comments.field(f))
    }

    fn kind_schema(&mut self, kind: Kind) -> Value {
        match kind {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0})
            }
            // proto3 JSON writes 64-bit integers as strings.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64"})
            }
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Enum(e) => {
                let name = e.full_name().to_string();
                if !self.schemas.contains_key(&name) {
                    self.schemas.insert(name.clone(), Value::Null);
                    self.queue.push(Named::Enum(e));
                }
                reference(&name)
            }
            Kind::Message(m) => self.message_ref(&m),
        }
    }

    fn message_ref(&mut self, m: &MessageDescriptor) -> Value {
        if let Some(wkt) = wkt_schema(m) {
            return wkt;
        }
        let name = m.full_name().to_string();
        if !self.schemas.contains_key(&name) {
            // Reserve the name first: recursive messages must not loop.
            self.schemas.insert(name.clone(), Value::Null);
            self.queue.push(Named::Message(m.clone()));
        }
        reference(&name)
    }

    /// Writes every queued schema (which may queue more).
    fn drain(&mut self) {
        while let Some(next) = self.queue.pop() {
            let (name, schema) = match next {
                Named::Message(m) => {
                    let mut props = Map::new();
                    for f in m.fields() {
                        let s = self.field_schema(&f);
                        props.insert(f.json_name().to_string(), s);
                    }
                    let schema = describe(
                        json!({"type": "object", "properties": props}),
                        self.comments.message(&m),
                    );
                    (m.full_name().to_string(), schema)
                }
                Named::Enum(e) => {
                    let values: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                    let schema = describe(
                        json!({"type": "string", "enum": values}),
                        self.comments.enumeration(&e),
                    );
                    (e.full_name().to_string(), schema)
                }
            };
            self.schemas.insert(name, schema);
        }
    }
}

/// The 200 response of a server-streaming route: SSE or NDJSON by `Accept`
/// ([`crate::streaming`]).
fn stream_response(output: &MessageDescriptor, message: Value) -> Value {
    let name = output.full_name();
    json!({
        "description": format!(
            "A stream of {name}, open until the server ends it. With `Accept: \
             text/event-stream`, Server-Sent Events: per message `id: <eventId>` (left out \
             when empty), `event: {name}` and `data: <the message as JSON>`; at the end \
             `event: {STATUS_EVENT}` with `data: <google.rpc.Status JSON>` (code 0 when the \
             stream ended cleanly); a `: ping` comment every {}s while idle. Otherwise \
             newline-delimited JSON: one `{{\"result\": <message>}}` object per line, and a \
             last `{{\"error\": <google.rpc.Status>}}` line when the stream ends with an \
             error. Errors before the first message are ordinary JSON error responses.",
            KEEPALIVE.as_secs()
        ),
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "string",
                    "description": format!("SSE events; the data of `{name}` events is:"),
                    "x-sse-data": message.clone(),
                },
                "example": format!("id: 0190a1b2-...\nevent: {name}\ndata: {{...}}\n\n"),
            },
            "application/x-ndjson": {
                "schema": {
                    "type": "object",
                    "description": "One line of the stream.",
                    "properties": {
                        "result": message,
                        "error": reference("google.rpc.Status"),
                    },
                },
            },
        },
    })
}

/// The JSON form of well-known types, which is not their message shape.
fn wkt_schema(m: &MessageDescriptor) -> Option<Value> {
    Some(match m.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "description": "Seconds with an `s` suffix, e.g. `1.5s`."})
        }
        "google.protobuf.FieldMask" => json!({
            "type": "string",
            "description": "Comma-separated field paths, e.g. `name,priceCents`.",
        }),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": {"@type": {"type": "string"}},
            "additionalProperties": true,
        }),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            json!({"type": "number", "nullable": true})
        }
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "nullable": true})
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64", "nullable": true})
        }
        "google.protobuf.BoolValue" => json!({"type": "boolean", "nullable": true}),
        "google.protobuf.StringValue" => json!({"type": "string", "nullable": true}),
        "google.protobuf.BytesValue" => {
            json!({"type": "string", "format": "byte", "nullable": true})
        }
        _ => return None,
    })
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
            let path = route.template.openapi_path();
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
        let op = &doc["paths"]["/v1/products/{product.id}"]["patch"];
        let params = op["parameters"].as_array().unwrap();
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "product.id" && p["in"] == "path")
        );
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "update_mask" && p["in"] == "query")
        );
        let body = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(
            body.to_string()
                .contains("#/components/schemas/stockmesh.products.v1.Product")
        );
        assert_eq!(op["operationId"], "ProductService_UpdateProduct");
        assert_eq!(op["security"], serde_json::json!([{"bearerAuth": []}]));
        let product = &doc["components"]["schemas"]["stockmesh.products.v1.Product"];
        assert_eq!(product["properties"]["priceCents"]["type"], "string");
        assert_eq!(product["properties"]["createdAt"]["format"], "date-time");
        assert!(
            product["description"]
                .as_str()
                .unwrap()
                .contains("catalog item")
        );
    }

    #[test]
    fn public_reads_have_optional_auth_and_comments() {
        let doc = doc();
        let op = &doc["paths"]["/v1/products/{id}"]["get"];
        assert_eq!(op["security"], serde_json::json!([{}, {"bearerAuth": []}]));
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
        assert!(
            status["schema"]
                .to_string()
                .contains("stockmesh.orders.v1.OrderStatus")
        );
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
                if public { 2 } else { 1 }
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
    }
}
