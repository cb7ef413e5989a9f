//! The gateway's path templates (`template::PathTemplate`, `percent_decode`) and route
//! lookup (`routes::Routes::find` over the real descriptor set):
//!
//! * any template text parses or is refused, never panics; a parsed one prints as given;
//! * a path built from a template by putting percent-encoded values in its `{variables}`
//!   matches it and gives those values back;
//! * `percent_decode` agrees with a strict reference (`%` and exactly two hex digits);
//! * any request path is found, not found, or method-not-allowed, with one value per
//!   variable of the route found.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use prost_reflect::DescriptorPool;
use stockmesh_gateway::routes::{Lookup, Routes};
use stockmesh_gateway::template::{PathTemplate, percent_decode};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    template: &'a str,
    path: &'a str,
    values: Vec<&'a str>,
    method: u8,
    keep_slash: bool,
}

fn routes() -> &'static Routes {
    static R: OnceLock<Routes> = OnceLock::new();
    R.get_or_init(|| {
        let pool = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).expect("pool");
        Routes::from_pool(&pool).expect("routes")
    })
}

const METHODS: [http::Method; 5] = [
    http::Method::GET,
    http::Method::POST,
    http::Method::PATCH,
    http::Method::DELETE,
    http::Method::PUT,
];

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The strict reading of `%XX` escapes.
fn reference_decode(text: &str, keep_slash: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let b = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if keep_slash && b == b'/' {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(b);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fuzz_target!(|input: Input<'_>| {
    assert_eq!(
        percent_decode(input.path, input.keep_slash),
        reference_decode(input.path, input.keep_slash),
        "percent_decode({:?}, {})",
        input.path,
        input.keep_slash
    );

    if let Ok(template) = PathTemplate::parse(input.template) {
        assert_eq!(template.to_string(), input.template);
        if let Some(values) = template.matches(input.path) {
            assert_eq!(values.len(), template.variables().len());
        }
        // Fill `{name}` variables (single segment, no `=pattern`) with encoded values.
        if !input.template.contains('*') && !input.template.contains('=') {
            let mut path = String::new();
            let mut expected = Vec::new();
            let mut rest = input.template;
            while let Some(open) = rest.find('{') {
                path.push_str(&rest[..open]);
                let close = open + rest[open..].find('}').expect("parsed: closed");
                let value = match input.values.get(expected.len()) {
                    Some(v) if !v.is_empty() => *v,
                    _ => "v",
                };
                path.push_str(&encode(value));
                expected.push(value.to_string());
                rest = &rest[close + 1..];
            }
            path.push_str(rest);
            assert_eq!(
                template.matches(&path),
                Some(expected),
                "{path:?} against {:?}",
                input.template
            );
        }
    }

    let method = &METHODS[usize::from(input.method) % METHODS.len()];
    match routes().find(method, input.path) {
        Lookup::Found(route, values) => {
            assert_eq!(route.http_method, *method);
            assert_eq!(values.len(), route.template.variables().len());
        }
        Lookup::MethodNotAllowed(allowed) => {
            assert!(!allowed.is_empty() && !allowed.contains(method));
        }
        Lookup::NotFound => {}
    }
});
