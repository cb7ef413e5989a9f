//! Connect errors: the code names, the error JSON (details as type + base64), the
//! end-of-stream message, and the responses that carry them — a unary error with the
//! code's HTTP status, or a stream's single end-of-stream envelope with HTTP 200.

use axum::body::Body;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use prost::Message;
use serde_json::{Map, Value, json};
use tonic::{Code, Status};

use super::{Codec, FLAG_END, Refusal, copy_metadata, is_metadata, stream_content_type};
use crate::observe::{Protocol, StatusSlot};

/// The Connect name of a code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `google.rpc.Status`, to read an error's details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<RpcAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RpcAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// The Connect error JSON of a (non-OK) status.
pub fn error_json(status: &Status) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), json!(code_name(status.code())));
    if !status.message().is_empty() {
        error.insert("message".into(), json!(status.message()));
    }
    if let Ok(rpc) = RpcStatus::decode(status.details())
        && !rpc.details.is_empty()
    {
        let details: Vec<Value> = rpc
            .details
            .iter()
            .map(|d| {
                json!({
                    "type": d.type_url.rsplit('/').next().unwrap_or(&d.type_url),
                    "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&d.value),
                })
            })
            .collect();
        error.insert("details".into(), Value::Array(details));
    }
    Value::Object(error)
}

/// The end-of-stream JSON: the error (when not OK) and the trailing metadata.
pub fn end_stream_json(status: &Status, trailers: &HeaderMap) -> Value {
    let mut end = Map::new();
    if status.code() != Code::Ok {
        end.insert("error".into(), error_json(status));
    }
    let mut metadata: Map<String, Value> = Map::new();
    let status_metadata = status.metadata().clone().into_headers();
    for (name, value) in trailers.iter().chain(status_metadata.iter()) {
        if !is_metadata(name) {
            continue;
        }
        let Ok(text) = value.to_str() else { continue };
        let entry = metadata
            .entry(name.as_str().to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = entry
            && !values.iter().any(|v| v == text)
        {
            values.push(json!(text));
        }
    }
    if !metadata.is_empty() {
        end.insert("metadata".into(), Value::Object(metadata));
    }
    Value::Object(end)
}

pub(super) fn unary_error(refusal: &Refusal, slot: Option<&StatusSlot>) -> Response<Body> {
    let status = &refusal.status;
    if let Some(slot) = slot {
        slot.set(status.code() as i32);
    }
    let http = refusal
        .http
        .unwrap_or_else(|| crate::error::http_status(status.code()));
    let mut resp = Response::new(Body::from(error_json(status).to_string()));
    *resp.status_mut() = http;
    let headers = resp.headers_mut();
    copy_metadata(&status.metadata().clone().into_headers(), headers, "");
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if http == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    resp.extensions_mut().insert(Protocol::Connect);
    resp
}

pub(super) fn stream_error(
    codec: Codec,
    status: &Status,
    slot: Option<&StatusSlot>,
) -> Response<Body> {
    if let Some(slot) = slot {
        slot.set(status.code() as i32);
    }
    let end = end_stream_json(status, &HeaderMap::new()).to_string();
    let mut resp = Response::new(Body::from(envelope(FLAG_END, end.as_bytes())));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, stream_content_type(codec));
    resp
}

pub(super) fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(flags);
    buf.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    buf.put_slice(payload);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_end_of_stream() {
        let status = Status::not_found("product p1 not found");
        assert_eq!(
            error_json(&status),
            json!({"code": "not_found", "message": "product p1 not found"})
        );
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("x-cost", HeaderValue::from_static("3"));
        assert_eq!(
            end_stream_json(&Status::ok(""), &trailers),
            json!({"metadata": {"x-cost": ["3"]}})
        );
        assert_eq!(
            end_stream_json(&Status::ok(""), &HeaderMap::new()),
            json!({})
        );
        let end = end_stream_json(&Status::unavailable("draining"), &HeaderMap::new());
        assert_eq!(
            end,
            json!({"error": {"code": "unavailable", "message": "draining"}})
        );
        // Details are carried as type + unpadded base64.
        let details = RpcStatus {
            code: 5,
            message: "x".into(),
            details: vec![RpcAny {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: vec![1, 2, 3],
            }],
        };
        let status =
            Status::with_details(Code::NotFound, "x", Bytes::from(details.encode_to_vec()));
        assert_eq!(
            error_json(&status)["details"],
            json!([{"type": "google.rpc.ErrorInfo", "value": "AQID"}])
        );
    }

    #[test]
    fn every_code_has_the_spec_name_and_status() {
        assert_eq!(code_name(Code::Cancelled), "canceled");
        assert_eq!(crate::error::http_status(Code::Cancelled).as_u16(), 499);
        assert_eq!(
            crate::error::http_status(Code::ResourceExhausted).as_u16(),
            429
        );
        assert_eq!(
            crate::error::http_status(Code::FailedPrecondition).as_u16(),
            400
        );
    }
}
