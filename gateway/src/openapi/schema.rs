//! JSON Schemas of messages, fields and enums, in their proto3-JSON form (int64 as strings,
//! Timestamp as `date-time`, enums by name), carrying what the services enforce
//! ([`crate::contract`]): `required` from `REQUIRED`, `readOnly` from `OUTPUT_ONLY`, formats
//! and bounds from `stockmesh.options.v1.rules`.
//!
//! proto3-JSON facts shape the schemas, so that they admit exactly what the gateway reads:
//!
//! * A 64-bit integer is written as a JSON string, and read as a string or a number: the
//!   input schema is `anyOf` a string (bounds as a `pattern`, as JSON Schema's `minimum`
//!   does not apply to strings) and an integer (`minimum`/`maximum`). Enums likewise are
//!   written by name and read by name or number. Output-only fields document what is
//!   written only.
//! * `null` reads as the field's zero value, which is the same as not sending it: a field
//!   is `nullable` exactly when its zero value is valid; a REQUIRED string has
//!   `minLength: 1`, a REQUIRED enum leaves out its `*_UNSPECIFIED` value.
//! * Message schemas say `additionalProperties: false`: the gateway refuses unknown fields.

use std::collections::BTreeMap;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::Comments;
use crate::contract::{self, Rules};

pub(super) struct Schemas<'a> {
    pub comments: &'a Comments,
    pub schemas: BTreeMap<String, Value>,
    /// Messages and enums referenced but not yet written.
    queue: Vec<Named>,
}

enum Named {
    Message(MessageDescriptor),
    Enum(EnumDescriptor),
}

pub(super) fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Adds a description to a schema; a `$ref` gets wrapped so the description is not a
/// sibling the spec says to ignore.
pub(super) fn describe(schema: Value, description: Option<String>) -> Value {
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

/// `schema` or `null`. A `$ref` is wrapped, as a `nullable` beside it would be ignored.
fn nullable(schema: Value) -> Value {
    match schema {
        Value::Object(mut map) if !map.contains_key("$ref") => {
            map.insert("nullable".into(), Value::Bool(true));
            Value::Object(map)
        }
        other => json!({"allOf": [other], "nullable": true}),
    }
}

/// Whether the zero value of `f` (what `null` or absence reads as) passes the service's
/// rules.
fn zero_is_valid(f: &FieldDescriptor) -> bool {
    if contract::is_required(f) {
        return false;
    }
    if f.is_list() || f.is_map() {
        return true;
    }
    let rules = contract::rules(f);
    match f.kind() {
        Kind::String | Kind::Bytes => {
            rules.min_length.is_none_or(|n| n == 0)
                && rules.format.is_none()
                && rules
                    .pattern
                    .as_deref()
                    .is_none_or(|p| regex::Regex::new(p).is_ok_and(|re| re.is_match("")))
        }
        Kind::Message(_) | Kind::Enum(_) | Kind::Bool => true,
        _ => {
            rules.not_equal != Some(0.0)
                && rules.minimum.is_none_or(|m| m <= 0.0)
                && rules.maximum.is_none_or(|m| m >= 0.0)
        }
    }
}

/// The input form of a 64-bit integer or enum field: the string (or name) the gateway
/// writes, or the number it also reads.
fn also_numbers(f: &FieldDescriptor, schema: Value) -> Value {
    if f.is_map() {
        return schema;
    }
    let rules = contract::rules(f);
    let number = match f.kind() {
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            let unsigned = matches!(f.kind(), Kind::Uint64 | Kind::Fixed64);
            let mut n = json!({
                "type": "integer",
                "format": "int64",
                "minimum": i64::MIN,
                "maximum": i64::MAX,
            });
            if let Some(m) = rules.minimum.or(unsigned.then_some(0.0)) {
                n["minimum"] = number(m);
            }
            if let Some(m) = rules.maximum {
                n["maximum"] = number(m);
            }
            if rules.not_equal == Some(0.0) {
                n["not"] = json!({"enum": [0]});
            }
            n
        }
        Kind::Enum(e) => {
            let required = contract::is_required(f);
            let numbers: Vec<i32> = e
                .values()
                .map(|v| v.number())
                .filter(|n| !required || *n != 0)
                .collect();
            json!({"type": "integer", "enum": numbers})
        }
        _ => return schema,
    };
    if f.is_list() {
        let mut list = schema;
        if let Some(items) = list.get_mut("items") {
            *items = json!({"anyOf": [items.take(), number]});
        }
        list
    } else {
        json!({"anyOf": [schema, number]})
    }
}

/// Puts `key: value` on a schema, wrapping a `$ref` like [`describe`].
fn annotate(schema: Value, key: &str, value: Value) -> Value {
    match schema {
        Value::Object(mut map) if !map.contains_key("$ref") => {
            map.insert(key.into(), value);
            Value::Object(map)
        }
        other => {
            let mut map = Map::new();
            map.insert("allOf".into(), json!([other]));
            map.insert(key.into(), value);
            Value::Object(map)
        }
    }
}

impl<'a> Schemas<'a> {
    pub fn new(comments: &'a Comments) -> Self {
        Self {
            comments,
            schemas: BTreeMap::new(),
            queue: Vec::new(),
        }
    }

    /// The schema of one field of a message, with its description. A field whose zero
    /// value is valid is `nullable`: proto3 JSON reads `null` as the zero value.
    pub fn field(&mut self, f: &FieldDescriptor) -> Value {
        let bare = self.field_bare(f);
        let output_only = contract::is_output_only(f);
        let bare = if output_only {
            bare
        } else {
            let bare = also_numbers(f, bare);
            if zero_is_valid(f) {
                nullable(bare)
            } else {
                bare
            }
        };
        let described = describe(bare, self.comments.field(f));
        if contract::is_output_only(f) {
            annotate(described, "readOnly", Value::Bool(true))
        } else {
            described
        }
    }

    /// The schema of a query parameter: like [`Self::field_bare`], but an enum is inlined
    /// with its numbers beside its names (the query string accepts both).
    pub fn query(&mut self, f: &FieldDescriptor) -> Value {
        let Kind::Enum(e) = f.kind() else {
            return self.field_bare(f);
        };
        let required = contract::is_required(f);
        let mut values: Vec<String> = Vec::new();
        for v in e.values().filter(|v| !required || v.number() != 0) {
            values.push(v.name().to_string());
            values.push(v.number().to_string());
        }
        let item = json!({"type": "string", "enum": values});
        if f.is_list() {
            json!({"type": "array", "items": item})
        } else {
            item
        }
    }

    /// The schema of a field without its description (path parameters carry theirs
    /// beside the schema).
    pub fn field_bare(&mut self, f: &FieldDescriptor) -> Value {
        let rules = contract::rules(f);
        let required = contract::is_required(f);
        if f.is_map() {
            let value = match f.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other,
            };
            return json!({"type": "object", "additionalProperties": self.kind(value)});
        }
        let item = self.scalar(f.kind(), &rules, required && !f.is_list());
        if !f.is_list() {
            return item;
        }
        let mut list = json!({"type": "array", "items": item});
        let min_items = rules.min_items.or(required.then_some(1));
        if let Some(n) = min_items {
            list["minItems"] = json!(n);
        }
        if let Some(n) = rules.max_items {
            list["maxItems"] = json!(n);
        }
        list
    }

    /// The schema of one value of `kind` under `rules`; `required` drops the zero value.
    fn scalar(&mut self, kind: Kind, rules: &Rules, required: bool) -> Value {
        let mut schema = match &kind {
            Kind::Enum(e) if required => {
                // The zero value means "not set": the service refuses it.
                let values: Vec<String> = e
                    .values()
                    .filter(|v| v.number() != 0)
                    .map(|v| v.name().to_string())
                    .collect();
                let mut s = json!({"type": "string", "enum": values});
                if let Some(d) = self.comments.enumeration(e) {
                    s["description"] = Value::String(d);
                }
                return s;
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
                let unsigned = matches!(kind, Kind::Uint64 | Kind::Fixed64);
                let min = rules.minimum.or(unsigned.then_some(0.0));
                let non_zero = rules.not_equal == Some(0.0) || min.is_some_and(|m| m >= 1.0);
                json!({
                    "type": "string",
                    "format": if unsigned { "uint64" } else { "int64" },
                    "pattern": int_pattern(min, rules.maximum, non_zero),
                })
            }
            other => self.kind(other.clone()),
        };
        let Value::Object(map) = &mut schema else {
            return schema;
        };
        if map.contains_key("$ref") {
            return schema;
        }
        if let Some(format) = &rules.format {
            map.insert("format".into(), json!(format));
        }
        let is_string = map.get("type") == Some(&json!("string"));
        if is_string && !map.contains_key("pattern") {
            let min = rules
                .min_length
                .or((required && rules.pattern.is_none()).then_some(1));
            if let Some(n) = min {
                map.insert("minLength".into(), json!(n));
            }
            if let Some(n) = rules.max_length {
                map.insert("maxLength".into(), json!(n));
            }
            if let Some(p) = &rules.pattern {
                map.insert("pattern".into(), json!(p));
            }
            if let Some(p) = &rules.not_pattern {
                map.insert("not".into(), json!({"pattern": p}));
            }
        }
        let is_number = matches!(
            map.get("type").and_then(Value::as_str),
            Some("integer" | "number")
        );
        if is_number {
            if let Some(m) = rules.minimum {
                map.insert("minimum".into(), number(m));
            }
            if let Some(m) = rules.maximum {
                map.insert("maximum".into(), number(m));
            }
        }
        schema
    }

    pub fn kind(&mut self, kind: Kind) -> Value {
        match kind {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": int_pattern(None, None, false)})
            }
            Kind::Uint64 | Kind::Fixed64 => json!({
                "type": "string",
                "format": "uint64",
                "pattern": int_pattern(Some(0.0), None, false),
            }),
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

    pub fn message_ref(&mut self, m: &MessageDescriptor) -> Value {
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

    /// An object schema of the fields of `m` that `keep` admits (a body without the
    /// fields the path carries, or a whole message).
    pub fn object(
        &mut self,
        m: &MessageDescriptor,
        keep: impl Fn(&FieldDescriptor) -> bool,
    ) -> Value {
        let mut props = Map::new();
        let mut required = Vec::new();
        for f in m.fields().filter(|f| keep(f)) {
            if contract::is_required(&f) {
                required.push(Value::String(f.json_name().to_string()));
            }
            let s = self.field(&f);
            props.insert(f.json_name().to_string(), s);
        }
        let mut schema = json!({
            "type": "object",
            "properties": props,
            "additionalProperties": false,
        });
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        schema
    }

    /// Writes every queued schema (which may queue more).
    pub fn drain(&mut self) {
        while let Some(next) = self.queue.pop() {
            let (name, schema) = match next {
                Named::Message(m) => {
                    let object = self.object(&m, |_| true);
                    let schema = describe(object, self.comments.message(&m));
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

/// A bound as a JSON number: integral bounds without a fraction.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// The decimal strings of a 64-bit integer within the bounds, as the gateway parses them
/// (Rust's `i64::from_str`: an optional sign, then digits; leading zeros allowed).
/// Supported bounds: a minimum of none, 0 or 1, or symmetric with the maximum; the
/// magnitude is limited by the maximum, else by `i64::MAX`.
pub(super) fn int_pattern(min: Option<f64>, max: Option<f64>, non_zero: bool) -> String {
    let limit = max
        .filter(|m| *m >= 1.0 && *m < i64::MAX as f64)
        .map_or(i64::MAX as u64, |m| m as u64);
    let positive = at_most(limit);
    let negative_allowed = min.is_none_or(|m| m < 0.0);
    let sign = if negative_allowed { "[+-]?" } else { "\\+?" };
    if non_zero {
        format!("^{sign}0*({positive})$")
    } else {
        format!("^{sign}(0+|0*({positive}))$")
    }
}

/// A regular expression (alternatives, unanchored) for the decimal numbers 1..=`n`
/// without leading zeros.
fn at_most(n: u64) -> String {
    let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let len = digits.len();
    let mut alternatives = Vec::new();
    if len >= 2 {
        alternatives.push(if len == 2 {
            "[1-9]".to_string()
        } else {
            format!("[1-9][0-9]{{0,{}}}", len - 2)
        });
    }
    for i in 0..len {
        let low = if i == 0 { 1 } else { 0 };
        let high = digits[i];
        if high == low {
            continue;
        }
        let prefix: String = digits[..i].iter().map(|d| char::from(b'0' + d)).collect();
        let class = if high - 1 == low {
            format!("{low}")
        } else {
            format!("[{low}-{}]", high - 1)
        };
        let rest = len - i - 1;
        let tail = match rest {
            0 => String::new(),
            1 => "[0-9]".to_string(),
            n => format!("[0-9]{{{n}}}"),
        };
        if high > low {
            alternatives.push(format!("{prefix}{class}{tail}"));
        }
    }
    alternatives.push(n.to_string());
    alternatives.join("|")
}

/// The JSON form of well-known types, which is not their message shape.
pub(super) fn wkt_schema(m: &MessageDescriptor) -> Option<Value> {
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

#[cfg(test)]
mod tests {
    use super::int_pattern;

    fn matches(pattern: &str, text: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(text)
    }

    #[test]
    fn int_patterns_accept_what_the_services_accept() {
        let p = int_pattern(Some(1.0), Some(1e12), true);
        for ok in ["1", "+007", "999999999999", "1000000000000"] {
            assert!(matches(&p, ok), "{p} {ok}");
        }
        for bad in ["0", "-1", "1000000000001", "1e3", " 1", "", "1.0"] {
            assert!(!matches(&p, bad), "{p} {bad}");
        }
        let p = int_pattern(Some(0.0), None, false);
        for ok in [
            "0",
            "000",
            "250",
            "999999999999999999",
            "9223372036854775807",
        ] {
            assert!(matches(&p, ok), "{p} {ok}");
        }
        for bad in ["-1", "abc", "9223372036854775808", "9999999999999999999"] {
            assert!(!matches(&p, bad), "{p} {bad}");
        }
        // Exactly 1..=n, checked against the numbers themselves.
        for n in [1u64, 9, 10, 42, 100, 999, 1000, 1234, 90210] {
            let re = regex::Regex::new(&format!("^({})$", super::at_most(n))).unwrap();
            for k in 0..=(n * 2 + 20) {
                assert_eq!(
                    re.is_match(&k.to_string()),
                    (1..=n).contains(&k),
                    "{n}: {k}"
                );
            }
        }
        let p = int_pattern(Some(-1e12), Some(1e12), true);
        for ok in ["-1", "+5", "-1000000000000"] {
            assert!(matches(&p, ok), "{p} {ok}");
        }
        for bad in ["0", "-0", "-1000000000001"] {
            assert!(!matches(&p, bad), "{p} {bad}");
        }
        let p = int_pattern(Some(1.0), Some(1000.0), true);
        assert!(matches(&p, "1000") && !matches(&p, "1001") && matches(&p, "999"));
    }
}
