//! Operations: parameters, request body, responses (the 200 and every error status the
//! gateway may answer, with the `google.rpc.Status` body it really sends), security and
//! links.
//!
//! * Path parameters get names tools accept: `{product.id}` is documented as
//!   `{product_id}` (as grpc-gateway's openapiv2 does). Only the name changes: the URL is
//!   the same, and the transcoder binds path values by position.
//! * Security comes from the RPC's access ([`crate::contract::Access`]): public
//!   operations say `security: []`, the others bearer only — the same table the edge uses
//!   to refuse a call without a token (401) before reading its body.
//! * Links go from each `Create<Resource>` to the operations that take that resource's id:
//!   in their path (`Get`, `Update`, `Delete`, custom verbs, and other services' routes
//!   with a `{<resource>_id}` parameter) or as a `<resource>_id` body field (a warehouse to
//!   `Restock`, a variable to `RecordMeasurement`), for clients and schemathesis' stateful
//!   phase.

use std::collections::{BTreeMap, HashSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::schema::{Schemas, reference, wkt_schema};
use crate::contract::{self, Access};
use crate::routes::{BodyRule, Route};
use crate::streaming::{KEEPALIVE, RESUME_FIELD, STATUS_EVENT};

/// The documented name of a path variable: its field path joined with `_`.
pub(super) fn param_name(field_path: &[String]) -> String {
    field_path.join("_")
}

/// The documented path of a route: the template with [`param_name`]s.
pub fn doc_path(route: &Route) -> String {
    let mut path = route.template.openapi_path();
    for v in route.template.variables() {
        path = path.replace(
            &format!("{{{}}}", v.dotted()),
            &format!("{{{}}}", param_name(&v.field_path)),
        );
    }
    path
}

/// The update-mask field of a route whose mask the gateway derives from the body's keys
/// (a PATCH whose body is one field, like grpc-gateway). The document leaves that query
/// parameter out: a mask naming a field the body does not carry clears the field, and
/// whether that is allowed depends on the field — a pairing a schema cannot express,
/// while "the keys you send are the mask" always holds. The transcoder still accepts
/// `?update_mask=` (see the proto).
fn implied_mask(route: &Route) -> Option<FieldDescriptor> {
    if route.http_method != http::Method::PATCH || !matches!(route.body, BodyRule::Field(_)) {
        return None;
    }
    route.method.input().fields().find(
        |f| matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask"),
    )
}

pub(super) fn operation(s: &mut Schemas<'_>, route: &Route, op_id: String) -> Value {
    let method = &route.method;
    let comment = s.comments.method(method);
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
        let mut description = s.comments.field(leaf).unwrap_or_default();
        if var.field_path.len() > 1 {
            description = format!("{description} (`{}` of the request)", var.dotted());
        }
        params.push(json!({
            "name": param_name(&var.field_path),
            "in": "path",
            "required": true,
            "description": description.trim(),
            "schema": s.field_bare(leaf),
        }));
    }
    if !matches!(route.body, BodyRule::All) {
        let body_field = match &route.body {
            BodyRule::Field(f) => Some(f.name().to_string()),
            _ => None,
        };
        let mut query = Vec::new();
        query_params(
            s,
            route,
            &method.input(),
            "",
            &path_names,
            body_field.as_deref(),
            0,
            &mut query,
        );
        params.extend(query);
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
                Some(s.message_ref(&input))
            } else {
                // The path carries some fields: the body schema is the rest.
                Some(s.object(&input, |f| !top_level_path.contains(f.name())))
            }
        }
        // An empty body would be an empty mask, which the services refuse.
        BodyRule::Field(f) if implied_mask(route).is_some() => {
            Some(json!({"allOf": [s.field(f)], "minProperties": 1}))
        }
        BodyRule::Field(f) => Some(s.field(f)),
    };
    let has_body = body_schema.is_some();
    if let Some(schema) = body_schema {
        let required = match &route.body {
            BodyRule::Field(f) => contract::is_required(f),
            // Fields the path carries are not the body's.
            _ => method.input().fields().any(|f| {
                contract::is_required(&f)
                    && !route
                        .template
                        .variables()
                        .iter()
                        .any(|v| v.field_path.first().map(String::as_str) == Some(f.name()))
            }),
        };
        let mut body = json!({
            "required": required,
            "content": {"application/json": {"schema": schema}},
        });
        if implied_mask(route).is_some() {
            body["description"] = json!(
                "The fields present are the ones changed (the gateway makes them the update \
                 mask); a field sent with its empty value is cleared, if the service allows."
            );
        }
        op.insert("requestBody".into(), body);
    }

    let output = method.output();
    let ok_schema = match &route.response_body {
        Some(f) => s.field(f),
        None => s.message_ref(&output),
    };
    let ok = if method.is_server_streaming() {
        if method.input().get_field_by_name(RESUME_FIELD).is_some() {
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
        let mut ok = json!({
            "description": s.comments.message(&output).unwrap_or_else(|| "OK".into()),
            "content": {"application/json": {"schema": ok_schema}},
        });
        if crate::csv::answers_csv(route) {
            ok["content"][crate::csv::MEDIA_TYPE] = crate::csv::openapi_content(&output);
        }
        ok
    };
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    let access = Access::of(method);
    let mut responses = Map::new();
    responses.insert("200".into(), ok);
    for (status, response) in errors(route, access, has_body) {
        responses.insert(status.into(), response);
    }
    op.insert("responses".into(), Value::Object(responses));
    let security = if access.needs_caller() {
        json!([{"bearerAuth": []}])
    } else {
        json!([])
    };
    op.insert("security".into(), security);
    Value::Object(op)
}

/// Query parameters: every leaf not bound by the path or the body, nested with dots.
#[allow(clippy::too_many_arguments)]
fn query_params(
    s: &mut Schemas<'_>,
    route: &Route,
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
            || contract::is_output_only(&f)
            || (depth == 0 && implied_mask(route).is_some_and(|m| m == f))
        {
            continue;
        }
        if let Kind::Message(m) = f.kind()
            && !f.is_list()
            && wkt_schema(&m).is_none()
        {
            if depth < 3 {
                query_params(
                    s,
                    route,
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
        let required = depth == 0 && contract::is_required(&f);
        let mut param = json!({
            "name": name,
            "in": "query",
            "required": required,
            "schema": s.query(&f),
        });
        if let Some(description) = s.comments.field(&f) {
            param["description"] = Value::String(description);
        }
        if f.is_list() {
            param["style"] = json!("form");
            param["explode"] = json!(true);
        }
        out.push(param);
    }
}

/// The error responses of a route, by HTTP status (the gRPC → HTTP mapping of
/// [`crate::error::http_status`]); `default` covers the rest (500, 504, 499).
fn errors(route: &Route, access: Access, has_body: bool) -> Vec<(&'static str, Value)> {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": reference("google.rpc.Status")}},
        })
    };
    let mut out = vec![(
        "400",
        error(
            "INVALID_ARGUMENT (the message names the field, e.g. `name: is required`), \
             FAILED_PRECONDITION (the request is well formed but the state refuses it) or \
             OUT_OF_RANGE.",
        ),
    )];
    let mut unauthenticated = error(if access.needs_caller() {
        "UNAUTHENTICATED: no bearer token (answered before the body is read), or one that \
         is malformed, expired or not signed by auth."
    } else {
        "UNAUTHENTICATED: a bearer token was sent and is malformed, expired or not signed by \
         auth (public operations need none)."
    });
    unauthenticated["headers"] = json!({
        "WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`."},
    });
    out.push(("401", unauthenticated));
    if access.needs_caller() {
        out.push((
            "403",
            error("PERMISSION_DENIED: the caller's role may not do this."),
        ));
    }
    out.push((
        "404",
        error("NOT_FOUND: a resource the request names does not exist."),
    ));
    if route.http_method != http::Method::GET {
        out.push((
            "409",
            error("ALREADY_EXISTS (a unique value is taken) or ABORTED (a conflict; retry)."),
        ));
    }
    if has_body {
        out.push((
            "413",
            error("The body is larger than the gateway's STOCKMESH_GATEWAY_MAX_BODY_BYTES."),
        ));
        out.push(("415", error("The body is not `application/json`.")));
    }
    let mut limited = error(
        "RESOURCE_EXHAUSTED: the rate limit (with `Retry-After`), or a limit of the service.",
    );
    limited["headers"] = json!({
        "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."},
    });
    out.push(("429", limited));
    out.push((
        "503",
        error("UNAVAILABLE: the service is down, starting, draining or shedding load; retry."),
    ));
    out.push((
        "default",
        error("Any other error (500 INTERNAL, 504 DEADLINE_EXCEEDED, 499 CANCELLED)."),
    ));
    out
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

/// A resource a create operation returns: the message type, and where its id is in the
/// response (`/product/id`).
struct Created {
    resource: MessageDescriptor,
    id_pointer: String,
    op_id: String,
}

/// What a `Create<X>` route creates, if it answers with one message field holding an `X`
/// with an `id`.
fn created(route: &Route, op_id: &str) -> Option<Created> {
    let name = route.method.name();
    let resource_name = name.strip_prefix("Create")?;
    let output = route.method.output();
    let field = output
        .fields()
        .find(|f| matches!(f.kind(), Kind::Message(m) if m.name() == resource_name))?;
    let Kind::Message(resource) = field.kind() else {
        return None;
    };
    resource.get_field_by_name("id")?;
    Some(Created {
        resource,
        id_pointer: format!("/{}/id", field.json_name()),
        op_id: op_id.to_string(),
    })
}

/// snake_case of a message name: `Product` → `product`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Adds OpenAPI links to the 200 response of every create operation: to each operation
/// whose path names the created resource's id.
pub(super) fn add_links(
    routes: &[(&Route, String)],
    paths: &mut BTreeMap<String, Map<String, Value>>,
) {
    let creates: Vec<(&Route, Created)> = routes
        .iter()
        .filter(|(r, _)| r.http_method == http::Method::POST)
        .filter_map(|(r, id)| created(r, id).map(|c| (*r, c)))
        .collect();
    for (create_route, created) in creates {
        let resource = created.resource.name();
        let own_service = create_route.method.parent_service();
        let mut links = Map::new();
        let expression = format!("$response.body#{}", created.id_pointer);
        let reference = format!("{}_id", snake(resource));
        for (route, op_id) in routes {
            if route.method.full_name() == create_route.method.full_name() {
                continue;
            }
            let description = format!(
                "The {resource} created by {} ({}).",
                created.op_id,
                route.method.name()
            );
            // By path: `{id}` of the resource's own operations, `{<resource>_id}` anywhere.
            if let [var] = route.template.variables() {
                let param = param_name(&var.field_path);
                let same_service = route.method.parent_service() == own_service;
                let names_it = route.method.name().ends_with(resource)
                    && (param == "id" || param == reference);
                if (same_service && names_it) || param == reference {
                    links.insert(
                        op_id.clone(),
                        json!({
                            "operationId": op_id,
                            "parameters": {param: expression},
                            "description": description,
                        }),
                    );
                    continue;
                }
            }
            // By body: a top-level `<resource>_id` field of a `body: "*"` request.
            let in_path = route
                .template
                .variables()
                .iter()
                .any(|v| v.field_path.first() == Some(&reference));
            if matches!(route.body, BodyRule::All)
                && !in_path
                && let Some(field) = route.method.input().get_field_by_name(&reference)
                && !field.is_list()
            {
                links.insert(
                    op_id.clone(),
                    json!({
                        "operationId": op_id,
                        "requestBody": {field.json_name(): expression},
                        "description": description,
                    }),
                );
            }
        }
        if links.is_empty() {
            continue;
        }
        let path = doc_path(create_route);
        let method = create_route.http_method.as_str().to_ascii_lowercase();
        if let Some(ok) = paths
            .get_mut(&path)
            .and_then(|item| item.get_mut(&method))
            .and_then(|op| op.pointer_mut("/responses/200"))
            .and_then(Value::as_object_mut)
        {
            ok.insert("links".into(), Value::Object(links));
        }
    }
}
