//! The Connect protocol (connectrpc.com/docs/protocol) on the gateway's port, translated
//! to gRPC for the upstream, so `createConnectTransport` clients (and curl) work without
//! a Connect server anywhere in the mesh.
//!
//! A request is Connect when its path is a method the gateway proxies
//! (`/stockmesh.products.v1.ProductService/GetProduct`; REST paths are never Connect) and
//! it is neither gRPC nor gRPC-web ([`is_connect`]):
//!
//! * **unary POST**, `Content-Type: application/json` or `application/proto`, the bare
//!   message as the body; the answer is the bare response message with the same content
//!   type, or an error: HTTP status by the spec's table (the same as REST's) and
//!   `{"code":"not_found","message":…,"details":[…]}`. Leading metadata is forwarded both
//!   ways; the upstream's trailers come back as `trailer-<name>` headers.
//! * **unary GET** `?connect=v1&encoding=json|proto&message=…[&base64=1]`, for cacheable
//!   reads: only for methods that cannot change anything ([`get_allowed`]): declared
//!   `idempotency_level = NO_SIDE_EFFECTS`, bound to an HTTP GET by their
//!   `google.api.http` rule, or named `Get…`, `List…`, `BatchGet…` — the reads the kernel's
//!   retry layer treats as safe too. Any other method answers 405 with `Allow: POST`.
//! * **server streaming**, `Content-Type: application/connect+json` or
//!   `application/connect+proto`: the request is one envelope (flags, 4-byte length,
//!   message), the response is HTTP 200 with an envelope per message (translated as it
//!   arrives, [`crate::streaming::pump`]) and a last envelope with flag 2 holding the
//!   end-of-stream JSON: `{}` on success, else `{"error":{…}}`, plus `"metadata"` with the
//!   upstream's trailers. Errors of a stream, even those found before it starts (a bad
//!   token, a rate limit), are reported that way, per the spec.
//!
//! `Connect-Protocol-Version` (and GET's `connect=`) may be left out; when present it must
//! be `1` (`v1`). `Connect-Timeout-Ms` becomes `grpc-timeout`, and also ends a stream
//! with `deadline_exceeded` when it passes. Only the `identity` encoding is supported: a
//! request compressed with anything else is refused with `unimplemented` naming the
//! supported encoding, and responses are never compressed (every client accepts
//! identity). A codec other than `json`/`proto` is 415. Client- and bidi-streaming
//! methods (the mesh has none) are `unimplemented`.
//!
//! The edge checks are those of every call: token check and rate limit once per call,
//! body cap while reading, CORS (the Connect headers are allowed and the ones scripts
//! read exposed, see [`crate::serve`]).

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions};
use stockmesh::Target;
use tonic::{Code, Status};

use crate::app::State;
use crate::client_ip::ClientIp;
use crate::observe::{Protocol, StatusSlot};
use crate::streaming::{Options, Render};
use crate::upstream::{self, Item, NOT_METADATA};

mod errors;
mod request;

pub use errors::{code_name, end_stream_json, error_json};
use errors::{envelope, stream_error, unary_error};
pub use request::get_allowed;
use request::{GetQuery, check_encoding, single_envelope, timeout, upstream_metadata};

/// The one content coding supported.
const IDENTITY: &str = "identity";

/// Envelope flag: the message is compressed.
const FLAG_COMPRESSED: u8 = 0b01;
/// Envelope flag: the end-of-stream message.
const FLAG_END: u8 = 0b10;

/// How messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

impl Codec {
    fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "json" => Some(Codec::Json),
            "proto" => Some(Codec::Proto),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Proto => "proto",
        }
    }
}

/// Whether a request on a known method path (not gRPC, not gRPC-web) is Connect: every
/// POST and GET is; anything else is left to the REST router (which answers 404).
pub fn is_connect(method: &Method) -> bool {
    method == Method::POST || method == Method::GET
}

/// What kind of Connect call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unary(Codec),
    Get(Codec),
    Stream(Codec),
}

impl Shape {
    fn codec(self) -> Codec {
        match self {
            Shape::Unary(c) | Shape::Get(c) | Shape::Stream(c) => c,
        }
    }
}

/// A Connect error: the status, and the HTTP status when it is not the code's.
struct Refusal {
    status: Status,
    http: Option<StatusCode>,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Self { status, http: None }
    }
}

impl From<crate::error::Error> for Refusal {
    fn from(e: crate::error::Error) -> Self {
        let http = matches!(e, crate::error::Error::UnsupportedMediaType(_))
            .then_some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        Self {
            status: Status::from(e),
            http,
        }
    }
}

impl Refusal {
    fn with_http(status: Status, http: StatusCode) -> Self {
        Self {
            status,
            http: Some(http),
        }
    }
}

/// Answers one Connect request for `method` (owned by `target`).
pub async fn handle(
    state: &State,
    method: &MethodDescriptor,
    target: Target,
    req: Request<Body>,
) -> Response<Body> {
    let slot = req.extensions().get::<StatusSlot>().cloned();
    let (parts, body) = req.into_parts();
    let shape = match shape(&parts, method) {
        Ok(shape) => shape,
        Err(refusal) => return unary_error(&refusal, slot.as_ref()),
    };
    let mut resp = match shape {
        Shape::Stream(codec) => match stream(state, method, target, &parts, body, codec).await {
            Ok(resp) => resp,
            Err(refusal) => stream_error(codec, &refusal.status, slot.as_ref()),
        },
        _ => match unary(state, method, target, &parts, body, shape).await {
            Ok(resp) => {
                if let Some(slot) = &slot {
                    slot.set(Code::Ok as i32);
                }
                resp
            }
            Err(refusal) => unary_error(&refusal, slot.as_ref()),
        },
    };
    resp.extensions_mut().insert(Protocol::Connect);
    resp
}

/// Reads the call's shape from the method, content type and query; refuses what does not
/// fit the RPC.
fn shape(parts: &Parts, method: &MethodDescriptor) -> Result<Shape, Refusal> {
    if method.is_client_streaming() {
        return Err(Status::unimplemented(format!(
            "{} is client-streaming: not available over Connect here",
            method.full_name()
        ))
        .into());
    }
    if let Some(v) = parts.headers.get("connect-protocol-version")
        && v.as_bytes() != b"1"
    {
        return Err(Status::invalid_argument(format!(
            "connect-protocol-version: {:?} is not supported (use 1)",
            String::from_utf8_lossy(v.as_bytes())
        ))
        .into());
    }
    let shape = if parts.method == Method::GET {
        let query = GetQuery::parse(parts.uri.query().unwrap_or(""))?;
        if !get_allowed(method) {
            return Err(Refusal::with_http(
                Status::unimplemented(format!(
                    "{} may change state: call it with POST",
                    method.full_name()
                )),
                StatusCode::METHOD_NOT_ALLOWED,
            ));
        }
        Shape::Get(query.codec)
    } else {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let unsupported = || {
            Refusal::from(crate::error::Error::UnsupportedMediaType(format!(
                "{ct}; use application/json, application/proto, application/connect+json \
                 or application/connect+proto"
            )))
        };
        if let Some(name) = essence.strip_prefix("application/connect+") {
            Shape::Stream(Codec::parse(name).ok_or_else(unsupported)?)
        } else if let Some(name) = essence.strip_prefix("application/") {
            Shape::Unary(Codec::parse(name).ok_or_else(unsupported)?)
        } else {
            return Err(unsupported());
        }
    };
    let streaming = method.is_server_streaming();
    match shape {
        Shape::Stream(codec) if !streaming => Err(Refusal::with_http(
            Status::unimplemented(format!(
                "{} is unary: use application/{}",
                method.full_name(),
                codec.name()
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )),
        Shape::Unary(codec) | Shape::Get(codec) if streaming => Err(Refusal::with_http(
            Status::unimplemented(format!(
                "{} is server-streaming: use POST with application/connect+{}",
                method.full_name(),
                codec.name()
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )),
        shape => Ok(shape),
    }
}

/// Reads the whole request body (one message), capped.
async fn read_body(state: &State, parts: &Parts, body: Body) -> Result<Bytes, Refusal> {
    let limit = state.config.gateway.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(crate::error::Error::TooLarge { limit }.into());
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(crate::error::Error::TooLarge { limit }.into()),
        Err(e) => Err(Status::invalid_argument(format!("cannot read the body: {e}")).into()),
    }
}

/// One request message in the codec, as protobuf bytes of `input`.
fn decode_request(input: &MessageDescriptor, codec: Codec, bytes: &[u8]) -> Result<Bytes, Refusal> {
    match codec {
        Codec::Json => {
            let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
                b"{}"
            } else {
                bytes
            };
            let msg = crate::transcode::parse_json(input.clone(), body, "")?;
            Ok(Bytes::from(msg.encode_to_vec()))
        }
        Codec::Proto => {
            DynamicMessage::decode(input.clone(), bytes).map_err(|e| {
                Status::invalid_argument(format!(
                    "request is not a valid {}: {e}",
                    input.full_name()
                ))
            })?;
            Ok(Bytes::copy_from_slice(bytes))
        }
    }
}

/// One message of `output` in the codec.
fn encode_message(
    output: &MessageDescriptor,
    codec: Codec,
    message: Bytes,
) -> Result<Bytes, Status> {
    match codec {
        Codec::Proto => Ok(message),
        Codec::Json => {
            let msg = DynamicMessage::decode(output.clone(), message)
                .map_err(|e| Status::internal(format!("undecodable message from upstream: {e}")))?;
            Ok(Bytes::from(crate::streaming::to_json(
                &msg,
                &SerializeOptions::new(),
            )?))
        }
    }
}

fn frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    buf.put_slice(message);
    buf.freeze()
}

fn client(parts: &Parts) -> Option<std::net::IpAddr> {
    parts.extensions.get::<ClientIp>().map(|c| c.0)
}

async fn unary(
    state: &State,
    method: &MethodDescriptor,
    target: Target,
    parts: &Parts,
    body: Body,
    shape: Shape,
) -> Result<Response<Body>, Refusal> {
    let codec = shape.codec();
    let client = client(parts);
    // The caller first: a call that needs one is refused before anything it sent is read.
    state
        .admit(&parts.headers, client, &path_of(method))
        .await?;
    let limit_timeout = timeout(&parts.headers)?;
    let message = match shape {
        Shape::Get(_) => GetQuery::parse(parts.uri.query().unwrap_or(""))?.message,
        _ => {
            check_encoding(&parts.headers, "content-encoding")?;
            Vec::new()
        }
    };
    let bytes = match shape {
        Shape::Get(_) => Bytes::from(message),
        _ => read_body(state, parts, body).await?,
    };
    let request = decode_request(&method.input(), codec, &bytes)?;
    let channel = state
        .upstream(target)
        .ok_or_else(|| Status::unavailable(format!("no channel to {target}")))?;
    let req = upstream::request(
        &path_of(method),
        upstream_metadata(&parts.headers, limit_timeout),
        state.attest(client),
        frame(&request),
    )?;
    let reply = upstream::start(channel, req).await?;
    let leading = reply.headers;
    let mut frames = reply.frames;
    let mut message = None;
    let trailers = loop {
        match frames.next().await {
            Some(Item::Message(m)) if message.is_none() => message = Some(m),
            Some(Item::Message(_)) => {
                return Err(Status::internal("upstream sent more than one message").into());
            }
            Some(Item::End(status, _)) if status.code() != Code::Ok => return Err(status.into()),
            Some(Item::End(_, trailers)) => break trailers,
            None => return Err(Status::internal("upstream reply without a status").into()),
        }
    };
    let message = message.ok_or_else(|| Status::internal("upstream response without a message"))?;
    let body = encode_message(&method.output(), codec, message)?;
    let mut resp = Response::new(Body::from(body));
    let headers = resp.headers_mut();
    copy_metadata(&leading, headers, "");
    copy_metadata(&trailers, headers, "trailer-");
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(match codec {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }),
    );
    Ok(resp)
}

async fn stream(
    state: &State,
    method: &MethodDescriptor,
    target: Target,
    parts: &Parts,
    body: Body,
    codec: Codec,
) -> Result<Response<Body>, Refusal> {
    let slot = parts.extensions.get::<StatusSlot>().cloned();
    let client = client(parts);
    state
        .admit(&parts.headers, client, &path_of(method))
        .await?;
    let limit_timeout = timeout(&parts.headers)?;
    let deadline = limit_timeout.map(|t| tokio::time::Instant::now() + t);
    check_encoding(&parts.headers, "connect-content-encoding")?;
    let bytes = read_body(state, parts, body).await?;
    let message = single_envelope(&bytes)?;
    let request = decode_request(&method.input(), codec, message)?;
    let channel = state
        .upstream(target)
        .ok_or_else(|| Status::unavailable(format!("no channel to {target}")))?;
    let req = upstream::request(
        &path_of(method),
        upstream_metadata(&parts.headers, limit_timeout),
        state.attest(client),
        frame(&request),
    )?;
    let reply = upstream::start(channel, req).await?;
    let body = crate::streaming::pump(
        reply.frames,
        Envelopes {
            output: method.output(),
            codec,
        },
        Options {
            deadline,
            slot,
            ..Options::default()
        },
    );
    let mut resp = Response::new(body);
    copy_metadata(&reply.headers, resp.headers_mut(), "");
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, stream_content_type(codec));
    Ok(resp)
}

fn path_of(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

fn stream_content_type(codec: Codec) -> HeaderValue {
    HeaderValue::from_static(match codec {
        Codec::Json => "application/connect+json",
        Codec::Proto => "application/connect+proto",
    })
}

/// Whether a header is call metadata (worth passing between protocols).
fn is_metadata(name: &HeaderName) -> bool {
    let n = name.as_str();
    !(NOT_METADATA.contains(&n)
        || n.starts_with("grpc-")
        || n == "date"
        || n == "content-encoding"
        || n == crate::observe::REQUEST_ID)
}

fn copy_metadata(from: &HeaderMap, to: &mut HeaderMap, prefix: &str) {
    for (name, value) in from {
        if !is_metadata(name) {
            continue;
        }
        let name = if prefix.is_empty() {
            name.clone()
        } else {
            match HeaderName::from_bytes(format!("{prefix}{name}").as_bytes()) {
                Ok(n) => n,
                Err(_) => continue,
            }
        };
        to.append(name, value.clone());
    }
}

/// Connect streaming envelopes of one stream.
struct Envelopes {
    output: MessageDescriptor,
    codec: Codec,
}

impl Render for Envelopes {
    fn message(&mut self, message: Bytes) -> Result<Bytes, Status> {
        let payload = encode_message(&self.output, self.codec, message)?;
        Ok(envelope(0, &payload))
    }

    fn end(&mut self, status: &Status, trailers: &HeaderMap) -> Bytes {
        envelope(
            FLAG_END,
            end_stream_json(status, trailers).to_string().as_bytes(),
        )
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    pub(crate) fn method(service: &str, name: &str) -> MethodDescriptor {
        pool()
            .get_service_by_name(service)
            .unwrap()
            .methods()
            .find(|m| m.name() == name)
            .unwrap()
    }

    fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const PRODUCTS: &str = "stockmesh.products.v1.ProductService";
    const INVENTORY: &str = "stockmesh.inventory.v1.InventoryService";

    #[test]
    fn shapes_follow_content_type_method_and_rpc() {
        let get = method(PRODUCTS, "GetProduct");
        let watch = method(INVENTORY, "WatchStock");
        let s =
            |p: Parts, m: &MethodDescriptor| shape(&p, m).map_err(|r| (r.status.code(), r.http));
        assert_eq!(
            s(
                parts(
                    Method::POST,
                    "/x",
                    &[("content-type", "application/json; charset=utf-8")]
                ),
                &get
            ),
            Ok(Shape::Unary(Codec::Json))
        );
        assert_eq!(
            s(
                parts(
                    Method::POST,
                    "/x",
                    &[
                        ("content-type", "application/proto"),
                        ("connect-protocol-version", "1")
                    ]
                ),
                &get
            ),
            Ok(Shape::Unary(Codec::Proto))
        );
        assert_eq!(
            s(
                parts(
                    Method::POST,
                    "/x",
                    &[("content-type", "application/connect+proto")]
                ),
                &watch
            ),
            Ok(Shape::Stream(Codec::Proto))
        );
        assert_eq!(
            s(
                parts(
                    Method::GET,
                    "/x?connect=v1&encoding=json&message=%7B%7D",
                    &[]
                ),
                &get
            ),
            Ok(Shape::Get(Codec::Json))
        );
        assert_eq!(
            s(
                parts(Method::POST, "/x", &[("content-type", "application/xml")]),
                &get
            ),
            Err((
                Code::InvalidArgument,
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            ))
        );
        assert_eq!(
            s(
                parts(
                    Method::POST,
                    "/x",
                    &[
                        ("content-type", "application/json"),
                        ("connect-protocol-version", "2")
                    ]
                ),
                &get
            ),
            Err((Code::InvalidArgument, None))
        );
        assert_eq!(
            s(
                parts(Method::POST, "/x", &[("content-type", "application/json")]),
                &watch
            ),
            Err((
                Code::Unimplemented,
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            ))
        );
        assert_eq!(
            s(
                parts(
                    Method::POST,
                    "/x",
                    &[("content-type", "application/connect+json")]
                ),
                &get
            ),
            Err((
                Code::Unimplemented,
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            ))
        );
        let create = method(PRODUCTS, "CreateProduct");
        assert_eq!(
            s(
                parts(Method::GET, "/x?encoding=json&message=%7B%7D", &[]),
                &create
            ),
            Err((Code::Unimplemented, Some(StatusCode::METHOD_NOT_ALLOWED)))
        );
        assert_eq!(
            s(parts(Method::GET, "/x?encoding=xml&message=", &[]), &get),
            Err((
                Code::InvalidArgument,
                Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            ))
        );
        assert_eq!(
            s(
                parts(
                    Method::GET,
                    "/x?encoding=json&message=%7B%7D&compression=gzip",
                    &[]
                ),
                &get
            ),
            Err((Code::Unimplemented, None))
        );
    }
}
