//! What a Connect request says besides its message: whether the method may be called
//! with GET, the GET query, `Connect-Timeout-Ms`, the content encodings (identity only),
//! the metadata passed on to the upstream, and the one envelope of a streaming request.

use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use prost_reflect::MethodDescriptor;
use tonic::Status;

use super::{Codec, FLAG_COMPRESSED, IDENTITY, Refusal};
use crate::upstream::NOT_METADATA;

/// Whether `method` may be called with GET; see the module docs.
pub fn get_allowed(method: &MethodDescriptor) -> bool {
    if method.is_client_streaming() || method.is_server_streaming() {
        return false;
    }
    let options = method.options();
    // NO_SIDE_EFFECTS = 1.
    let declared = options.has_field_by_name("idempotency_level")
        && options
            .get_field_by_name("idempotency_level")
            .and_then(|v| v.as_enum_number())
            == Some(1);
    let http_get = method
        .parent_pool()
        .get_extension_by_name("google.api.http")
        .is_some_and(|ext| {
            options.has_extension(&ext)
                && options
                    .get_extension(&ext)
                    .as_message()
                    .is_some_and(|rule| rule.has_field_by_name("get"))
        });
    let named_read = ["Get", "List", "BatchGet"]
        .iter()
        .any(|p| method.name().starts_with(p));
    declared || http_get || named_read
}

/// The Connect query of a GET.
pub(super) struct GetQuery {
    pub(super) codec: Codec,
    pub(super) message: Vec<u8>,
}

impl GetQuery {
    pub(super) fn parse(query: &str) -> Result<Self, Refusal> {
        let mut codec = None;
        let mut message = None;
        let mut base64 = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = crate::template::percent_decode(&value.replace('+', " "), false)
                .ok_or_else(|| Status::invalid_argument(format!("{key}: bad percent-encoding")))?;
            match key {
                "encoding" => {
                    codec = Some(Codec::parse(&value).ok_or_else(|| {
                        Refusal::from(crate::error::Error::UnsupportedMediaType(format!(
                            "encoding={value}; use json or proto"
                        )))
                    })?);
                }
                "message" => message = Some(value),
                "base64" => base64 = value == "1",
                "compression" if !value.is_empty() && value != IDENTITY => {
                    return Err(unsupported_compression(&value).into());
                }
                "connect" if value != "v1" => {
                    return Err(Status::invalid_argument(format!(
                        "connect={value} is not supported (use v1)"
                    ))
                    .into());
                }
                // Unknown parameters are allowed alongside the Connect ones.
                _ => {}
            }
        }
        let codec = codec
            .ok_or_else(|| Status::invalid_argument("the encoding query parameter is required"))?;
        let message = message.unwrap_or_default();
        let message = if base64 {
            let trimmed = message.trim_end_matches('=');
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| Status::invalid_argument("message: not base64 (base64=1)"))?
        } else {
            message.into_bytes()
        };
        Ok(Self { codec, message })
    }
}

pub(super) fn unsupported_compression(name: &str) -> Status {
    Status::unimplemented(format!(
        "compression {name:?} is not supported; supported: {IDENTITY}"
    ))
}

/// Refuses a compressed request (`header` names the encoding).
pub(super) fn check_encoding(headers: &HeaderMap, name: &str) -> Result<(), Status> {
    match headers.get(name).map(|v| v.to_str().unwrap_or("?").trim()) {
        None | Some("") | Some(IDENTITY) => Ok(()),
        Some(other) => Err(unsupported_compression(other)),
    }
}

/// `Connect-Timeout-Ms`: at most 10 digits.
pub(super) fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(v) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("");
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Status::invalid_argument(format!(
            "connect-timeout-ms: {text:?} is not a positive integer of at most 10 digits"
        )));
    }
    let ms: u64 = text
        .parse()
        .map_err(|_| Status::invalid_argument("connect-timeout-ms: not a number"))?;
    Ok(Some(Duration::from_millis(ms)))
}

/// The caller's metadata for the upstream: every header but the hop's, the framing's and
/// Connect's own, plus `grpc-timeout` from `Connect-Timeout-Ms`.
pub(super) fn upstream_metadata(incoming: &HeaderMap, timeout: Option<Duration>) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        let n = name.as_str();
        if NOT_METADATA.contains(&n)
            || n.starts_with("connect-")
            || n.starts_with("grpc-")
            || matches!(n, "content-encoding" | "accept-encoding" | "accept")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Some(t) = timeout
        && let Ok(v) =
            HeaderValue::from_str(&stockmesh::resilience::deadline::format_grpc_timeout(t))
    {
        out.insert("grpc-timeout", v);
    }
    out
}

/// The one request message of a server-streaming call.
pub(super) fn single_envelope(bytes: &[u8]) -> Result<&[u8], Status> {
    let Some((head, rest)) = bytes.split_at_checked(5) else {
        return Err(Status::invalid_argument(
            "request body is not an enveloped message",
        ));
    };
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if head[0] & FLAG_COMPRESSED != 0 {
        return Err(Status::invalid_argument(
            "a compressed envelope without connect-content-encoding",
        ));
    }
    if head[0] != 0 {
        return Err(Status::invalid_argument(format!(
            "request envelope flags {:#04x} are not allowed",
            head[0]
        )));
    }
    if rest.len() != len {
        return Err(Status::invalid_argument(
            "a server-streaming request is exactly one enveloped message",
        ));
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::super::tests::method;
    use super::super::{FLAG_END, envelope};
    use super::*;
    use tonic::Code;

    const PRODUCTS: &str = "stockmesh.products.v1.ProductService";
    const INVENTORY: &str = "stockmesh.inventory.v1.InventoryService";

    #[test]
    fn only_reads_may_use_get() {
        assert!(get_allowed(&method(PRODUCTS, "GetProduct")));
        assert!(get_allowed(&method(PRODUCTS, "ListProducts")));
        // A POST binding, but a read by name.
        assert!(get_allowed(&method(PRODUCTS, "BatchGetProducts")));
        assert!(!get_allowed(&method(PRODUCTS, "CreateProduct")));
        assert!(!get_allowed(&method(INVENTORY, "Restock")));
        // Streams are never unary GETs.
        assert!(!get_allowed(&method(INVENTORY, "WatchStock")));
    }

    #[test]
    fn get_messages_percent_or_base64() {
        let q = GetQuery::parse("message=%7B%22id%22%3A%22a+b%22%7D&encoding=json&connect=v1&x=1")
            .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(q.message, br#"{"id":"a b"}"#);
        // URL-safe base64, padding optional (percent-encoded when present).
        let q = GetQuery::parse("encoding=proto&base64=1&message=CgFh")
            .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(q.message, b"\x0a\x01a");
        let q = GetQuery::parse("encoding=proto&base64=1&message=CgJhYg%3D%3D")
            .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(q.message, b"\x0a\x02ab");
        assert!(GetQuery::parse("message=%7B%7D").is_err());
    }

    #[test]
    fn timeouts_become_grpc_timeouts() {
        let mut h = HeaderMap::new();
        assert_eq!(timeout(&h).unwrap(), None);
        h.insert("connect-timeout-ms", HeaderValue::from_static("1500"));
        let t = timeout(&h).unwrap();
        assert_eq!(t, Some(Duration::from_millis(1500)));
        let meta = upstream_metadata(&h, t);
        assert_eq!(
            stockmesh::resilience::deadline::parse_grpc_timeout(
                meta["grpc-timeout"].to_str().unwrap()
            ),
            Some(Duration::from_millis(1500))
        );
        assert!(meta.get("connect-timeout-ms").is_none());
        // 10 digits are allowed (more than 100 days), 11 are not.
        h.insert("connect-timeout-ms", HeaderValue::from_static("9999999999"));
        let meta = upstream_metadata(&h, timeout(&h).unwrap());
        assert!(meta.get("grpc-timeout").is_some());
        for bad in ["12345678901", "-1", "1.5", ""] {
            h.insert("connect-timeout-ms", HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                timeout(&h).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn metadata_passes_but_connect_and_framing_headers_do_not() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer t"),
            ("x-custom", "1"),
            ("content-type", "application/json"),
            ("connect-protocol-version", "1"),
            ("accept-encoding", "gzip"),
            ("grpc-timeout", "1S"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let meta = upstream_metadata(&h, None);
        assert_eq!(meta.len(), 2, "{meta:?}");
        assert_eq!(meta["authorization"], "Bearer t");
        assert_eq!(meta["x-custom"], "1");
    }

    #[test]
    fn envelopes() {
        let body = envelope(0, b"abc");
        assert_eq!(single_envelope(&body).unwrap(), b"abc");
        assert!(single_envelope(&envelope(FLAG_COMPRESSED, b"abc")).is_err());
        assert!(single_envelope(&envelope(FLAG_END, b"abc")).is_err());
        let mut two = body.to_vec();
        two.extend_from_slice(&body);
        assert!(single_envelope(&two).is_err());
        assert!(single_envelope(b"\0\0").is_err());
    }
}
