//! REST/JSON ⇄ gRPC transcoding for one matched [`Route`].
//!
//! Request: the JSON body (all of it for `body: "*"`, or one field), then path variables,
//! then query parameters fill a `DynamicMessage` of the RPC's input type; it is encoded
//! as one length-prefixed gRPC message. Response: the single message of a unary gRPC
//! response is decoded and written as proto3 JSON (lowerCamelCase names, every field
//! present so scripts need not know the defaults).
//!
//! JSON parsing goes through `serde_path_to_error`, so a wrong type deep in the body is
//! reported as `product.priceCents: invalid type …`, naming the field.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};

use crate::error::Error;
use crate::routes::{BodyRule, Route};
use crate::template::percent_decode;

/// Builds the request message of `route` from the matched path `values`, the raw query
/// string and the body.
pub fn request(
    route: &Route,
    values: Vec<String>,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, Error> {
    let input = route.method.input();
    let body_is_empty = body.iter().all(u8::is_ascii_whitespace);
    let (mut msg, body_keys) = match &route.body {
        BodyRule::None => (DynamicMessage::new(input.clone()), Vec::new()),
        BodyRule::All if body_is_empty => (DynamicMessage::new(input.clone()), Vec::new()),
        BodyRule::All => (parse_json(input.clone(), body, "")?, Vec::new()),
        BodyRule::Field(field) => {
            let mut msg = DynamicMessage::new(input.clone());
            let mut keys = Vec::new();
            if !body_is_empty {
                let value = parse_json_field(field, body)?;
                keys = top_level_keys(body);
                msg.set_field(field, value);
            }
            (msg, keys)
        }
    };

    for ((chain, value), var) in route
        .path_fields
        .iter()
        .zip(values)
        .zip(route.template.variables())
    {
        let leaf = chain
            .last()
            .ok_or_else(|| Error::field(var.dotted(), "empty field path"))?;
        let parsed = parse_text(leaf, &value).map_err(|why| Error::field(var.dotted(), why))?;
        set_chain(&mut msg, chain, parsed, false).map_err(|why| Error::field(var.dotted(), why))?;
    }

    let mut mask_from_query = false;
    if !matches!(route.body, BodyRule::All)
        && let Some(query) = query
    {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key =
                decode_query(key).ok_or_else(|| Error::field("query", "bad percent-encoding"))?;
            let value =
                decode_query(value).ok_or_else(|| Error::field(&key, "bad percent-encoding"))?;
            let chain = resolve_query_key(&input, &key)?;
            if let (BodyRule::Field(body), Some(first)) = (&route.body, chain.first())
                && first == body
            {
                return Err(Error::field(&key, "is carried by the request body"));
            }
            let Some(leaf) = chain.last() else {
                continue;
            };
            if is_update_mask(leaf) && chain.len() == 1 {
                mask_from_query = true;
            }
            let parsed = parse_text(leaf, &value).map_err(|why| Error::field(&key, why))?;
            set_chain(&mut msg, &chain, parsed, true).map_err(|why| Error::field(&key, why))?;
        }
    }

    // Like grpc-gateway: a PATCH whose body is one field and that names no update_mask
    // updates exactly the fields present in the body.
    if let BodyRule::Field(body_field) = &route.body
        && !mask_from_query
        && !body_keys.is_empty()
        && let Some(mask_field) = input.fields().find(is_update_mask)
        && !msg.has_field(&mask_field)
        && let Kind::Message(body_desc) = body_field.kind()
    {
        let paths: Vec<Value> = body_keys
            .iter()
            .filter_map(|k| {
                body_desc
                    .get_field_by_name(k)
                    .or_else(|| body_desc.get_field_by_json_name(k))
            })
            .map(|f| Value::String(f.name().to_string()))
            .collect();
        if let Kind::Message(mask_desc) = mask_field.kind() {
            let mut mask = DynamicMessage::new(mask_desc);
            mask.set_field_by_name("paths", Value::List(paths));
            msg.set_field(&mask_field, Value::Message(mask));
        }
    }
    Ok(msg)
}

fn is_update_mask(field: &FieldDescriptor) -> bool {
    !field.is_list()
        && matches!(field.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask")
}

/// Decodes a query-string component: `+` is a space, then percent-decoding.
fn decode_query(text: &str) -> Option<String> {
    if text.contains('+') {
        percent_decode(&text.replace('+', " "), false)
    } else {
        percent_decode(text, false)
    }
}

/// Resolves a dotted query key (proto or JSON names) to a field chain whose leaf is a
/// scalar, an enum, a repeated scalar, or a well-known message given as a string.
fn resolve_query_key(msg: &MessageDescriptor, key: &str) -> Result<Vec<FieldDescriptor>, Error> {
    let mut chain = Vec::new();
    let mut current = msg.clone();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))
            .ok_or_else(|| Error::field(key, "unknown query parameter"))?;
        if field.is_map() {
            return Err(Error::field(
                key,
                "map fields cannot be set from the query string",
            ));
        }
        let last = parts.peek().is_none();
        if !last {
            match field.kind() {
                Kind::Message(m) if !field.is_list() => current = m,
                _ => return Err(Error::field(key, "unknown query parameter")),
            }
        }
        chain.push(field);
    }
    Ok(chain)
}

/// Sets (or, for repeated leaves with `append`, appends) `value` at the end of `chain`,
/// creating intermediate messages.
fn set_chain(
    msg: &mut DynamicMessage,
    chain: &[FieldDescriptor],
    value: Value,
    append: bool,
) -> Result<(), String> {
    let Some((leaf, parents)) = chain.split_last() else {
        return Err("empty field path".into());
    };
    let mut current = msg;
    for field in parents {
        current = current
            .get_field_mut(field)
            .as_message_mut()
            .ok_or_else(|| format!("{} is not a message", field.name()))?;
    }
    if leaf.is_list() {
        let list = current
            .get_field_mut(leaf)
            .as_list_mut()
            .ok_or_else(|| format!("{} is not a list", leaf.name()))?;
        if !append {
            list.clear();
        }
        list.push(value);
    } else {
        current.set_field(leaf, value);
    }
    Ok(())
}

/// Parses a path or query value for `field` (its element type when repeated).
pub fn parse_text(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    fn num<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
        text.trim()
            .parse::<T>()
            .map_err(|_| format!("{text:?} is not a valid {what}"))
    }
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_string()),
        Kind::Bytes => {
            use base64::Engine;
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            let bytes = engines
                .iter()
                .find_map(|e| e.decode(text).ok())
                .ok_or_else(|| format!("{text:?} is not base64"))?;
            Value::Bytes(bytes.into())
        }
        Kind::Bool => match text {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(format!("{text:?} is not a boolean (true or false)")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(num(text, "32-bit integer")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(num(text, "64-bit integer")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(num(text, "unsigned 32-bit integer")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(num(text, "unsigned 64-bit integer")?),
        Kind::Float => Value::F32(num(text, "number")?),
        Kind::Double => Value::F64(num(text, "number")?),
        Kind::Enum(e) => {
            if let Some(v) = e.get_value_by_name(text) {
                Value::EnumNumber(v.number())
            } else if let Some(v) = text.parse::<i32>().ok().and_then(|n| e.get_value(n)) {
                Value::EnumNumber(v.number())
            } else {
                let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                return Err(format!("{text:?} is not one of {}", names.join(", ")));
            }
        }
        Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask" => {
            // Accept both `name,priceCents` (JSON form) and `name,price_cents`.
            let paths = text
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(camel_to_snake(p)))
                .collect();
            let mut mask = DynamicMessage::new(m);
            mask.set_field_by_name("paths", Value::List(paths));
            Value::Message(mask)
        }
        Kind::Message(m) => {
            // Well-known types in their JSON string form (Timestamp, Duration, wrappers…).
            let as_string = serde_json::Value::String(text.to_string());
            let parsed = DynamicMessage::deserialize(m.clone(), as_string).or_else(|first| {
                let json: serde_json::Value =
                    serde_json::from_str(text).map_err(|_| first.to_string())?;
                DynamicMessage::deserialize(m, json).map_err(|e| e.to_string())
            })?;
            Value::Message(parsed)
        }
    })
}

fn camel_to_snake(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `body` as proto3 JSON of `desc`; errors name the offending field, prefixed by
/// `prefix` (the body field's name when the body is one field).
pub(crate) fn parse_json(
    desc: MessageDescriptor,
    body: &[u8],
    prefix: &str,
) -> Result<DynamicMessage, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let result = {
        let tracked = serde_path_to_error::Deserializer::new(&mut de, &mut track);
        DynamicMessage::deserialize_with_options(desc, tracked, &DeserializeOptions::new())
    };
    let msg = result.map_err(|e| json_error(prefix, &track.path().to_string(), &e))?;
    de.end().map_err(|e| Error::BadBody(e.to_string()))?;
    Ok(msg)
}

fn json_error(prefix: &str, path: &str, err: &serde_json::Error) -> Error {
    if err.is_syntax() || err.is_eof() {
        return Error::BadBody(format!("malformed JSON: {err}"));
    }
    let path = path.trim_start_matches('.');
    let field = match (prefix.is_empty(), path.is_empty() || path == "?") {
        (true, true) => return Error::BadBody(err.to_string()),
        (true, false) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    };
    Error::field(field, err)
}

/// Parses the body for `body: "<field>"`.
fn parse_json_field(field: &FieldDescriptor, body: &[u8]) -> Result<Value, Error> {
    match field.kind() {
        Kind::Message(m) if !field.is_list() && !field.is_map() => {
            Ok(Value::Message(parse_json(m, body, field.json_name())?))
        }
        _ => {
            // Scalars and lists: parse `{"<field>": <body>}` into the parent message.
            let json: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| Error::BadBody(format!("malformed JSON: {e}")))?;
            let wrapped = serde_json::json!({ field.json_name(): json }).to_string();
            let parent = parse_json(field.parent_message().clone(), wrapped.as_bytes(), "")?;
            Ok(parent.get_field(field).into_owned())
        }
    }
}

/// Names of the top-level keys of a JSON object body (for the implied update mask).
fn top_level_keys(body: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(map) => map.into_iter().map(|(k, _)| k).collect(),
        Err(_) => Vec::new(),
    }
}

/// One gRPC message frame (uncompressed).
pub fn encode_frame(msg: &DynamicMessage) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer with enough capacity cannot fail.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

/// The single message of a unary response body; `None` when it is not exactly one
/// uncompressed frame.
pub fn decode_frame(mut data: Bytes) -> Option<Bytes> {
    if data.len() < 5 {
        return None;
    }
    let compressed = data.get_u8();
    let len = usize::try_from(data.get_u32()).ok()?;
    if compressed != 0 || data.len() != len {
        return None;
    }
    Some(data)
}

/// Serialises a response as proto3 JSON (or only `response_body` of it).
pub fn response_json(route: &Route, msg: &DynamicMessage) -> Result<Vec<u8>, Error> {
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::new(&mut out);
    let result = match &route.response_body {
        None => msg.serialize_with_options(&mut ser, &options),
        Some(field) => {
            let value = msg.get_field(field);
            match value.as_ref() {
                Value::Message(m) => m.serialize_with_options(&mut ser, &options),
                _ => {
                    // A scalar or list: serialise the parent with only this field and unwrap.
                    let mut only = DynamicMessage::new(msg.descriptor());
                    only.set_field(field, value.into_owned());
                    let v = serde_json::to_value(&only)
                        .map_err(|e| Error::Status(stockmesh::error::internal(e)))?;
                    let inner = v.get(field.json_name()).cloned().unwrap_or_default();
                    return serde_json::to_vec(&inner)
                        .map_err(|e| Error::Status(stockmesh::error::internal(e)));
                }
            }
        }
    };
    result.map_err(|e| Error::Status(stockmesh::error::internal(e)))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use http::Method;
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::routes::{Lookup, Routes};

    fn routes() -> (DescriptorPool, Routes) {
        let pool = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = Routes::from_pool(&pool).unwrap();
        (pool, routes)
    }

    fn build(method: Method, path_and_query: &str, body: &str) -> Result<DynamicMessage, Error> {
        let (_, routes) = routes();
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        match routes.find(&method, path) {
            Lookup::Found(route, values) => request(route, values, query, body.as_bytes()),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    fn field(msg: &DynamicMessage, path: &str) -> Value {
        let mut cur = msg.clone();
        let parts: Vec<&str> = path.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            let v = cur
                .get_field_by_name(p)
                .unwrap_or_else(|| panic!("no field {p}"))
                .into_owned();
            if i + 1 == parts.len() {
                return v;
            }
            cur = v.as_message().unwrap().clone();
        }
        unreachable!()
    }

    fn to_json(msg: &DynamicMessage) -> serde_json::Value {
        serde_json::to_value(msg).unwrap()
    }

    #[test]
    fn every_rpc_has_a_route_and_lookups_pick_the_right_one() {
        let (pool, routes) = routes();
        let rpcs: usize = stockmesh::Target::SERVICES
            .iter()
            .map(|t| {
                pool.get_service_by_name(t.grpc_service())
                    .unwrap()
                    .methods()
                    // Internal and gRPC-only by design: services' credential exchange.
                    .filter(|m| m.name() != "IssueServiceToken")
                    .count()
            })
            .sum();
        assert_eq!(routes.len(), rpcs);
        let cases = [
            (Method::GET, "/v1/products/abc", "GetProduct", vec!["abc"]),
            (
                Method::GET,
                "/v1/products/by-name/A%20B",
                "GetProductByName",
                vec!["A B"],
            ),
            (
                Method::POST,
                "/v1/products:batchGet",
                "BatchGetProducts",
                vec![],
            ),
            (
                Method::PATCH,
                "/v1/products/p1",
                "UpdateProduct",
                vec!["p1"],
            ),
            (
                Method::DELETE,
                "/v1/products/p1",
                "DeleteProduct",
                vec!["p1"],
            ),
            (Method::POST, "/v1/stock/p1:restock", "Restock", vec!["p1"]),
            (
                Method::POST,
                "/v1/stock/p1:adjust",
                "AdjustStock",
                vec!["p1"],
            ),
            (
                Method::POST,
                "/v1/orders/o1:complete",
                "CompleteOrder",
                vec!["o1"],
            ),
            (Method::GET, "/v1/auth/profile", "GetProfile", vec![]),
            // Custom verbs on a literal segment, next to the routes they must not shadow.
            (Method::GET, "/v1/stock:watch", "WatchStock", vec![]),
            (Method::GET, "/v1/stock/p1", "GetStock", vec!["p1"]),
            (Method::GET, "/v1/orders:watch", "WatchOrders", vec![]),
            (Method::GET, "/v1/orders", "ListOrders", vec![]),
            (Method::GET, "/v1/orders/o1", "GetOrder", vec!["o1"]),
            (
                Method::POST,
                "/v1/stock/p1:setLowStockThreshold",
                "SetLowStockThreshold",
                vec!["p1"],
            ),
            (
                Method::PATCH,
                "/v1/users/u1/role",
                "UpdateUserRole",
                vec!["u1"],
            ),
        ];
        for (method, path, rpc, values) in cases {
            match routes.find(&method, path) {
                Lookup::Found(route, got) => {
                    assert_eq!(route.method.name(), rpc, "{method} {path}");
                    assert_eq!(got, values, "{method} {path}");
                }
                other => panic!("{method} {path}: {other:?}"),
            }
        }
        match routes.find(&Method::PUT, "/v1/products/p1") {
            Lookup::MethodNotAllowed(allow) => {
                for m in [Method::GET, Method::PATCH, Method::DELETE] {
                    assert!(allow.contains(&m), "{allow:?}");
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            routes.find(&Method::GET, "/v1/nothing"),
            Lookup::NotFound
        ));
        assert!(matches!(
            routes.find(&Method::GET, "/v1/products/a/b"),
            Lookup::NotFound
        ));
    }

    #[test]
    fn query_parameters_fill_the_request_with_both_name_styles() {
        let msg = build(
            Method::GET,
            "/v1/products?page_size=10&pageToken=t%3D&name_contains=red+shoe&supplierId=s1",
            "",
        )
        .unwrap();
        assert_eq!(field(&msg, "page_size"), Value::I32(10));
        assert_eq!(field(&msg, "page_token"), Value::String("t=".into()));
        assert_eq!(
            field(&msg, "name_contains"),
            Value::String("red shoe".into())
        );
        assert_eq!(field(&msg, "supplier_id"), Value::String("s1".into()));
    }

    #[test]
    fn watch_requests_from_the_query() {
        let msg = build(
            Method::GET,
            "/v1/stock:watch?productIds=a&product_ids=b&afterEventId=e1",
            "",
        )
        .unwrap();
        assert_eq!(to_json(&msg)["productIds"], serde_json::json!(["a", "b"]));
        assert_eq!(field(&msg, "after_event_id"), Value::String("e1".into()));
        assert!(matches!(
            routes().1.find(&Method::POST, "/v1/stock:watch"),
            Lookup::MethodNotAllowed(_)
        ));
    }

    #[test]
    fn query_enums_by_name_or_number_and_bad_values_name_the_field() {
        let msg = build(Method::GET, "/v1/orders?status=ORDER_STATUS_CANCELLED", "").unwrap();
        assert_eq!(field(&msg, "status"), Value::EnumNumber(3));
        let msg = build(Method::GET, "/v1/orders?status=1", "").unwrap();
        assert_eq!(field(&msg, "status"), Value::EnumNumber(1));
        let err = build(Method::GET, "/v1/orders?status=SHIPPED", "").unwrap_err();
        assert!(err.to_string().starts_with("status: "), "{err}");
        assert!(err.to_string().contains("ORDER_STATUS_PENDING"), "{err}");
        let err = build(Method::GET, "/v1/products?page_size=ten", "").unwrap_err();
        assert!(
            matches!(&err, Error::BadField { field, .. } if field == "page_size"),
            "{err}"
        );
        let err = build(Method::GET, "/v1/products?colour=red", "").unwrap_err();
        assert!(
            matches!(&err, Error::BadField { field, .. } if field == "colour"),
            "{err}"
        );
    }

    #[test]
    fn body_star_with_path_variable_and_custom_verb() {
        let msg = build(
            Method::POST,
            "/v1/stock/p1:restock",
            r#"{"warehouseId":"w1","quantity":5,"request_id":"r1"}"#,
        )
        .unwrap();
        assert_eq!(field(&msg, "product_id"), Value::String("p1".into()));
        assert_eq!(field(&msg, "warehouse_id"), Value::String("w1".into()));
        assert_eq!(field(&msg, "quantity"), Value::I64(5));
        assert_eq!(field(&msg, "request_id"), Value::String("r1".into()));
        // A custom verb with body "*" may come with no body at all.
        let msg = build(Method::POST, "/v1/orders/o1:complete", "").unwrap();
        assert_eq!(field(&msg, "id"), Value::String("o1".into()));
    }

    #[test]
    fn patch_with_body_field_nested_path_and_update_mask() {
        let msg = build(
            Method::PATCH,
            "/v1/products/p1?update_mask=name,priceCents",
            r#"{"name":"New","priceCents":"250","description":"ignored by the mask"}"#,
        )
        .unwrap();
        assert_eq!(field(&msg, "product.id"), Value::String("p1".into()));
        assert_eq!(field(&msg, "product.name"), Value::String("New".into()));
        assert_eq!(field(&msg, "product.price_cents"), Value::I64(250));
        assert_eq!(
            to_json(&msg)["updateMask"],
            serde_json::json!("name,priceCents")
        );
        // Without update_mask the body's keys are the mask (grpc-gateway's behaviour).
        let msg = build(
            Method::PATCH,
            "/v1/products/p1",
            r#"{"price_cents":1,"currency":"EUR"}"#,
        )
        .unwrap();
        assert_eq!(
            to_json(&msg)["updateMask"],
            serde_json::json!("currency,priceCents")
        );
        // The body field cannot also come from the query.
        let err = build(Method::PATCH, "/v1/products/p1?product.name=x", "{}").unwrap_err();
        assert!(
            matches!(&err, Error::BadField { field, .. } if field == "product.name"),
            "{err}"
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = build(
            Method::POST,
            "/v1/products",
            r#"{"sku":"a","priceCents":"abc"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::BadField { field, .. } if field == "priceCents"),
            "{err}"
        );
        let err = build(
            Method::POST,
            "/v1/orders",
            r#"{"requestId":"r","items":[{"productId":"p","quantity":1},{"productId":"q","quantity":true}]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::BadField { field, .. } if field == "items[1].quantity"),
            "{err}"
        );
        let err = build(Method::PATCH, "/v1/products/p1", r#"{"priceCents":[1]}"#).unwrap_err();
        assert!(
            matches!(&err, Error::BadField { field, .. } if field == "product.priceCents"),
            "{err}"
        );
        let err = build(
            Method::POST,
            "/v1/products",
            r#"{"sku":"a","colour":"red"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = build(Method::POST, "/v1/products", r#"{"sku":"#).unwrap_err();
        assert!(matches!(err, Error::BadBody(_)), "{err}");
        let err = build(Method::POST, "/v1/products", r#"{} trailing"#).unwrap_err();
        assert!(matches!(err, Error::BadBody(_)), "{err}");
    }

    #[test]
    fn well_known_types_from_text() {
        let (pool, _) = routes();
        let req = pool
            .get_message_by_name("stockmesh.inventory.v1.RecordMeasurementRequest")
            .unwrap();
        let at = req.get_field_by_name("measured_at").unwrap();
        let v = parse_text(&at, "2024-01-02T03:04:05Z").unwrap();
        let ts = v.as_message().unwrap();
        assert_eq!(
            ts.get_field_by_name("seconds").unwrap().as_i64(),
            Some(1_704_164_645)
        );
        assert!(parse_text(&at, "yesterday").is_err());
        let update = pool
            .get_message_by_name("stockmesh.products.v1.UpdateProductRequest")
            .unwrap();
        let mask = update.get_field_by_name("update_mask").unwrap();
        let v = parse_text(&mask, "name, priceCents,supplier_id").unwrap();
        let paths = v
            .as_message()
            .unwrap()
            .get_field_by_name("paths")
            .unwrap()
            .into_owned();
        assert_eq!(
            paths,
            Value::List(vec![
                Value::String("name".into()),
                Value::String("price_cents".into()),
                Value::String("supplier_id".into()),
            ])
        );
    }

    #[test]
    fn repeated_query_parameters_append() {
        let (pool, _) = routes();
        let desc = pool
            .get_message_by_name("stockmesh.products.v1.BatchGetProductsRequest")
            .unwrap();
        let mut msg = DynamicMessage::new(desc.clone());
        for id in ["a", "b"] {
            let chain = resolve_query_key(&desc, "ids").unwrap();
            let v = parse_text(chain.last().unwrap(), id).unwrap();
            set_chain(&mut msg, &chain, v, true).unwrap();
        }
        assert_eq!(to_json(&msg)["ids"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn responses_are_lower_camel_case_proto3_json() {
        let (_, routes) = routes();
        let Lookup::Found(route, _) = routes.find(&Method::GET, "/v1/products/x") else {
            panic!("no route");
        };
        let product = stockmesh::proto::products::v1::Product {
            id: "p1".into(),
            price_cents: 1234,
            created_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        };
        let resp = stockmesh::proto::products::v1::GetProductResponse {
            product: Some(product),
        };
        let frame = {
            let mut b = BytesMut::new();
            b.put_u8(0);
            b.put_u32(resp.encoded_len() as u32);
            resp.encode(&mut b).unwrap();
            b.freeze()
        };
        let bytes = decode_frame(frame).unwrap();
        let msg = DynamicMessage::decode(route.method.output(), bytes).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&response_json(route, &msg).unwrap()).unwrap();
        assert_eq!(json["product"]["id"], "p1");
        assert_eq!(json["product"]["priceCents"], "1234");
        assert_eq!(json["product"]["createdAt"], "1970-01-01T00:00:00Z");
        // Defaults are present, so scripts can rely on every field.
        assert_eq!(json["product"]["supplierId"], "");
        assert!(json["product"].get("price_cents").is_none());
        assert_eq!(
            msg.descriptor().full_name(),
            "stockmesh.products.v1.GetProductResponse"
        );
    }

    #[test]
    fn response_body_selects_one_field() {
        let (_, routes) = routes();
        let Lookup::Found(route, _) = routes.find(&Method::GET, "/v1/products") else {
            panic!("no route");
        };
        let mut route = route.clone();
        let output = route.method.output();
        let resp = stockmesh::proto::products::v1::ListProductsResponse {
            products: vec![Default::default()],
            next_page_token: "t".into(),
        };
        let msg = DynamicMessage::decode(output.clone(), resp.encode_to_vec().as_slice()).unwrap();
        route.response_body = output.get_field_by_name("products");
        let json: serde_json::Value =
            serde_json::from_slice(&response_json(&route, &msg).unwrap()).unwrap();
        assert!(json.is_array(), "{json}");
        assert_eq!(json.as_array().unwrap().len(), 1);
        route.response_body = output.get_field_by_name("next_page_token");
        let json: serde_json::Value =
            serde_json::from_slice(&response_json(&route, &msg).unwrap()).unwrap();
        assert_eq!(json, "t");
    }

    #[test]
    fn frames_roundtrip_and_reject_garbage() {
        let (pool, _) = routes();
        let desc = pool
            .get_message_by_name("stockmesh.products.v1.GetProductRequest")
            .unwrap();
        let mut msg = DynamicMessage::new(desc.clone());
        msg.set_field_by_name("id", Value::String("x".into()));
        let frame = encode_frame(&msg);
        assert_eq!(frame[0], 0);
        let back = DynamicMessage::decode(desc, decode_frame(frame.clone()).unwrap()).unwrap();
        assert_eq!(back, msg);
        assert!(decode_frame(frame.slice(..frame.len() - 1)).is_none());
        assert!(decode_frame(Bytes::from_static(&[1, 0, 0, 0, 0])).is_none());
        assert!(decode_frame(Bytes::from_static(&[0, 0])).is_none());
    }
}
