//! Calls the gateway makes on a client's behalf when it translates a protocol (REST,
//! Connect, SSE, NDJSON) instead of proxying gRPC as it is: build the gRPC request, send it
//! through the upstream's resilience stack, and read the reply one message at a time.
//!
//! The reply is never collected whole: [`Frames`] hands out each length-prefixed message
//! as soon as its bytes have arrived and then the final status (from the trailers, or the
//! headers of a trailers-only reply), so a server stream is translated while it flows and
//! dropping a [`Frames`] drops the HTTP/2 stream, which resets it — the upstream's handler
//! sees the cancel.

use std::net::IpAddr;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use stockmesh::client::UpstreamChannel;
use stockmesh::identity::ClientAttestor;
use tonic::{Code, Status};
use tower::ServiceExt;

/// Headers that belong to one hop or to the gRPC framing, never copied between protocols.
pub const NOT_METADATA: [&str; 14] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "te",
    "trailer",
    "grpc-encoding",
    "grpc-accept-encoding",
    "grpc-status",
    "grpc-message",
];

/// A gRPC request for `path` carrying one encoded `frame`, with `headers` (the caller's
/// metadata) and the client address stamped when `client` is given.
pub fn request(
    path: &str,
    mut headers: HeaderMap,
    client: Option<(&ClientAttestor, IpAddr)>,
    frame: Bytes,
) -> Result<Request<tonic::body::Body>, Status> {
    let mut req = Request::new(tonic::body::Body::new(Full::new(frame)));
    *req.method_mut() = Method::POST;
    *req.version_mut() = Version::HTTP_2;
    *req.uri_mut() = path
        .parse()
        .map_err(|_| Status::internal(format!("bad method path {path}")))?;
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some((attestor, ip)) = client {
        attestor.stamp(ip, &mut headers);
    } else {
        headers.remove(stockmesh::identity::CLIENT_IP_HEADER);
        headers.remove(stockmesh::identity::CLIENT_PROOF_HEADER);
    }
    *req.headers_mut() = headers;
    Ok(req)
}

/// The headers a transcoded REST call forwards: `authorization`, `x-request-id` and
/// `grpc-timeout`.
pub fn rest_metadata(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [
        header::AUTHORIZATION.as_str(),
        crate::observe::REQUEST_ID,
        "grpc-timeout",
    ] {
        if let Some(v) = incoming.get(name) {
            headers.insert(name, v.clone());
        }
    }
    headers
}

/// Sends `req` and waits for the reply's headers. A trailers-only error is returned as
/// the error; otherwise the reply's leading metadata and its messages.
pub async fn start(
    channel: UpstreamChannel,
    req: Request<tonic::body::Body>,
) -> Result<Reply, Status> {
    // The same per-message limit as the gRPC clients (`STOCKMESH_MAX_MESSAGE_BYTES`).
    let limit = channel.max_message_bytes();
    let resp = channel.oneshot(req).await?;
    let (parts, body) = resp.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        // Trailers-only: the headers are the trailers.
        if status.code() != Code::Ok {
            return Err(status);
        }
        return Ok(Reply {
            frames: Frames::ended(status, parts.headers.clone()),
            headers: parts.headers,
        });
    }
    if parts.status != StatusCode::OK {
        return Err(Status::unknown(format!(
            "upstream answered HTTP {}",
            parts.status
        )));
    }
    Ok(Reply {
        headers: parts.headers,
        frames: Frames::new(body).limit(limit),
    })
}

/// Makes a unary call with one encoded frame; returns the response message bytes.
pub async fn unary(
    channel: UpstreamChannel,
    req: Request<tonic::body::Body>,
) -> Result<Bytes, Status> {
    let mut frames = start(channel, req).await?.frames;
    let mut message = None;
    while let Some(item) = frames.next().await {
        match item {
            Item::Message(m) if message.is_none() => message = Some(m),
            Item::Message(_) => {
                return Err(Status::internal("upstream sent more than one message"));
            }
            Item::End(status, _) if status.code() != Code::Ok => return Err(status),
            Item::End(..) => break,
        }
    }
    message.ok_or_else(|| Status::internal("upstream response without a message"))
}

/// The reply to a call: leading metadata and the message stream.
pub struct Reply {
    pub headers: HeaderMap,
    pub frames: Frames,
}

/// One piece of a reply.
#[derive(Debug)]
pub enum Item {
    /// One message (the payload, without its 5-byte prefix).
    Message(Bytes),
    /// The final status (code OK included) and the trailers it came with.
    End(Status, HeaderMap),
}

/// Reads a gRPC response body message by message; see the module docs.
pub struct Frames {
    body: Option<tonic::body::Body>,
    buf: BytesMut,
    end: Option<(Status, HeaderMap)>,
    limit: usize,
}

impl Frames {
    pub fn new(body: tonic::body::Body) -> Self {
        Self {
            body: Some(body),
            buf: BytesMut::new(),
            end: None,
            limit: stockmesh::message_limit::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The largest message accepted (default 4 MiB); a larger one ends the reply with
    /// RESOURCE_EXHAUSTED before its bytes are buffered.
    pub fn limit(mut self, bytes: usize) -> Self {
        self.limit = bytes;
        self
    }

    /// A reply that has nothing more than its final status.
    pub fn ended(status: Status, trailers: HeaderMap) -> Self {
        Self {
            body: None,
            buf: BytesMut::new(),
            end: Some((status, trailers)),
            limit: stockmesh::message_limit::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The next message, or the end (once); `None` after the end.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(message) = self.split_message() {
                return Some(match message {
                    Ok(m) => Item::Message(m),
                    Err(status) => self.finish(status, HeaderMap::new()),
                });
            }
            let Some(body) = self.body.as_mut() else {
                return self
                    .end
                    .take()
                    .map(|(status, trailers)| Item::End(status, trailers));
            };
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let status = Status::from_header_map(&trailers).unwrap_or_else(|| {
                            Status::internal("upstream trailers without grpc-status")
                        });
                        self.body = None;
                        self.end = Some((status, trailers));
                    }
                },
                Some(Err(status)) => return Some(self.finish(status, HeaderMap::new())),
                None => {
                    self.body = None;
                    if self.end.is_none() {
                        let status = if self.buf.is_empty() {
                            Status::internal("upstream stream ended without grpc-status")
                        } else {
                            Status::internal("upstream stream ended inside a message")
                        };
                        self.end = Some((status, HeaderMap::new()));
                    }
                }
            }
        }
    }

    fn finish(&mut self, status: Status, trailers: HeaderMap) -> Item {
        self.body = None;
        self.end = None;
        self.buf.clear();
        Item::End(status, trailers)
    }

    /// A whole message at the front of the buffer, if there is one.
    fn split_message(&mut self) -> Option<Result<Bytes, Status>> {
        if self.buf.len() < 5 {
            return None;
        }
        let compressed = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if compressed != 0 {
            return Some(Err(Status::internal("upstream sent a compressed message")));
        }
        if len > self.limit {
            return Some(Err(Status::resource_exhausted(format!(
                "upstream message of {len} bytes exceeds the limit of {} bytes \
                 (STOCKMESH_MAX_MESSAGE_BYTES)",
                self.limit
            ))));
        }
        if self.buf.len() < 5 + len {
            return None;
        }
        self.buf.advance(5);
        Some(Ok(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;

    fn body(chunks: Vec<Frame<Bytes>>) -> tonic::body::Body {
        let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, Status>));
        tonic::body::Body::new(http_body_util::StreamBody::new(stream))
    }

    fn prefixed(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn messages_split_across_chunks_then_trailers() {
        let mut wire = prefixed(b"hello");
        wire.extend(prefixed(b""));
        wire.extend(prefixed(b"world!"));
        let (a, b) = wire.split_at(3);
        let (b, c) = b.split_at(7);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("14"));
        trailers.insert("grpc-message", HeaderValue::from_static("draining"));
        trailers.insert("x-extra", HeaderValue::from_static("1"));
        let mut frames = Frames::new(body(vec![
            Frame::data(Bytes::copy_from_slice(a)),
            Frame::data(Bytes::copy_from_slice(b)),
            Frame::data(Bytes::copy_from_slice(c)),
            Frame::trailers(trailers),
        ]));
        let mut got = Vec::new();
        while let Some(item) = frames.next().await {
            got.push(item);
        }
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(&got[0], Item::Message(m) if m.as_ref() == b"hello"));
        assert!(matches!(&got[1], Item::Message(m) if m.is_empty()));
        assert!(matches!(&got[2], Item::Message(m) if m.as_ref() == b"world!"));
        match &got[3] {
            Item::End(status, trailers) => {
                assert_eq!(status.code(), Code::Unavailable);
                assert_eq!(status.message(), "draining");
                assert_eq!(trailers["x-extra"], "1");
            }
            other => panic!("{other:?}"),
        }
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn a_body_cut_short_ends_with_internal() {
        let mut wire = prefixed(b"hello");
        wire.truncate(7);
        let mut frames = Frames::new(body(vec![Frame::data(Bytes::from(wire))]));
        match frames.next().await {
            Some(Item::End(status, _)) => {
                assert_eq!(status.code(), Code::Internal);
                assert!(status.message().contains("inside a message"), "{status:?}");
            }
            other => panic!("{other:?}"),
        }
        let mut compressed = prefixed(b"x");
        compressed[0] = 1;
        let mut frames = Frames::new(body(vec![Frame::data(Bytes::from(compressed))]));
        assert!(matches!(frames.next().await, Some(Item::End(s, _)) if s.code() == Code::Internal));
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn a_message_over_the_limit_ends_with_resource_exhausted() {
        let mut wire = prefixed(b"0123456789");
        wire.extend(prefixed(b"0123456789a"));
        let mut frames = Frames::new(body(vec![Frame::data(Bytes::from(wire))])).limit(10);
        assert!(matches!(frames.next().await, Some(Item::Message(m)) if m.len() == 10));
        match frames.next().await {
            Some(Item::End(status, _)) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert!(status.message().contains("11 bytes"), "{status:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
