//! The largest gRPC message a service accepts or sends (`STOCKMESH_MAX_MESSAGE_BYTES`).
//!
//! tonic's own limit answers OUT_OF_RANGE and is fixed per generated server; gRPC's
//! status-code guide says a message larger than a configured limit is RESOURCE_EXHAUSTED,
//! and the limit is an operator's setting. So [`MessageLimitLayer`] sits in front of every
//! route of the server and reads the 5-byte prefix of each length-prefixed message as it
//! streams past, in both directions, without buffering the message:
//!
//! * a request message declared larger than the limit fails the request body with
//!   RESOURCE_EXHAUSTED naming the limit; tonic hands that status to the caller (a unary
//!   handler never runs; a streaming handler gets it from its stream);
//! * a response message declared larger than the limit is not sent: the response ends
//!   with trailers carrying RESOURCE_EXHAUSTED instead.
//!
//! The generated servers keep tonic's limit as a backstop, set to the same value (a
//! prefix is seen here before tonic decodes it, so this layer answers first).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

/// Default of `STOCKMESH_MAX_MESSAGE_BYTES`: 4 MiB, tonic's default decode limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The status of a message of `len` bytes over `limit`; `what` is "request" or "response".
pub fn too_large(what: &str, len: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "{what} message of {len} bytes exceeds the limit of {limit} bytes (STOCKMESH_MAX_MESSAGE_BYTES)"
    ))
}

/// Follows the length-prefixed messages of a gRPC body across arbitrary chunk boundaries.
#[derive(Debug, Clone)]
pub struct Framing {
    limit: usize,
    header: [u8; 5],
    /// Bytes of `header` collected so far.
    have: usize,
    /// Payload bytes of the current message not yet seen.
    remaining: usize,
}

/// A message prefix declaring more than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    /// Declared length of the message.
    pub len: usize,
    /// Offset in the chunk just fed where that message's prefix begins (0 when the prefix
    /// began in an earlier chunk).
    pub at: usize,
}

impl Framing {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            header: [0; 5],
            have: 0,
            remaining: 0,
        }
    }

    /// Reads `chunk`, the next bytes of the body. Errs at the first prefix that declares a
    /// message over the limit; after that the framing is lost and must not be fed again.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Oversized> {
        let mut pos = 0;
        while pos < chunk.len() {
            if self.remaining > 0 {
                let skip = self.remaining.min(chunk.len() - pos);
                self.remaining -= skip;
                pos += skip;
                continue;
            }
            let start = pos;
            let take = (5 - self.have).min(chunk.len() - pos);
            self.header[self.have..self.have + take].copy_from_slice(&chunk[pos..pos + take]);
            let began_here = self.have == 0;
            self.have += take;
            pos += take;
            if self.have < 5 {
                continue;
            }
            self.have = 0;
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            if len > self.limit {
                return Err(Oversized {
                    len,
                    at: if began_here { start } else { 0 },
                });
            }
            self.remaining = len;
        }
        Ok(())
    }
}

/// Applies the message limit to every call of a server (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct MessageLimitLayer {
    limit: usize,
}

impl MessageLimitLayer {
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`MessageLimitLayer`].
#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
    limit: usize,
}

impl<S> Service<http::Request<Body>> for MessageLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let limit = self.limit;
        let req = req.map(|body| {
            Body::new(Limited {
                inner: body,
                framing: Framing::new(limit),
                direction: Direction::Request,
                state: State::Open,
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| {
                Body::new(Limited {
                    inner: body,
                    framing: Framing::new(limit),
                    direction: Direction::Response,
                    state: State::Open,
                })
            }))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

#[derive(Debug)]
enum State {
    Open,
    /// A response message was refused: these trailers go out next, then the body ends.
    Trailers(Option<HeaderMap>),
    Done,
}

/// A body whose messages are checked against the limit as they pass.
struct Limited {
    inner: Body,
    framing: Framing,
    direction: Direction,
    state: State,
}

impl Limited {
    fn refused(&self, len: usize) -> Status {
        let what = match self.direction {
            Direction::Request => "request",
            Direction::Response => "response",
        };
        too_large(what, len, self.framing.limit)
    }
}

fn status_trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        // Only the message can fail to encode; the code alone still says what happened.
        trailers.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    trailers
}

impl http_body::Body for Limited {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Open => {}
            State::Trailers(trailers) => {
                let trailers = trailers.take().unwrap_or_default();
                this.state = State::Done;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            State::Done => return Poll::Ready(None),
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let Err(over) = this.framing.feed(data) else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let status = this.refused(over.len);
        match this.direction {
            Direction::Request => {
                this.state = State::Done;
                Poll::Ready(Some(Err(status)))
            }
            Direction::Response => {
                tracing::warn!(
                    len = over.len,
                    limit = this.framing.limit,
                    "response message over the limit not sent"
                );
                let trailers = status_trailers(&status);
                let before = frame
                    .into_data()
                    .map(|d| d.slice(..over.at))
                    .unwrap_or_default();
                if before.is_empty() {
                    this.state = State::Done;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                } else {
                    // The messages ahead of the refused one in this chunk still go out.
                    this.state = State::Trailers(Some(trailers));
                    Poll::Ready(Some(Ok(Frame::data(before))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.state {
            State::Open => self.inner.is_end_stream(),
            State::Trailers(_) => false,
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Open => self.inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    #[test]
    fn messages_at_the_limit_pass_and_one_byte_over_fails_whatever_the_chunking() {
        let mut body = message(10);
        body.extend(message(0));
        body.extend(message(10));
        let at_over = body.len();
        body.extend(message(11));
        for chunk in 1..=body.len() {
            let mut framing = Framing::new(10);
            let mut result = Ok(());
            let mut offset = 0;
            for piece in body.chunks(chunk) {
                result = framing.feed(piece);
                if let Err(mut over) = result {
                    over.at += offset;
                    result = Err(over);
                    break;
                }
                offset += piece.len();
            }
            let over = result.expect_err("the 11-byte message is over");
            assert_eq!(over.len, 11, "chunks of {chunk}");
            // The prefix's offset is exact when it began in the chunk that completed it.
            if at_over / chunk == (at_over + 4) / chunk {
                assert_eq!(over.at, at_over, "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn a_huge_declared_length_fails_at_its_prefix() {
        let mut framing = Framing::new(DEFAULT_MAX_MESSAGE_BYTES);
        let prefix = [0u8, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            framing.feed(&prefix),
            Err(Oversized {
                len: u32::MAX as usize,
                at: 0
            })
        );
    }

    /// An inner service that reads its request body as tonic would, then answers with
    /// `reply` as its single message (or with the body's error, trailers-only).
    #[derive(Clone)]
    struct Replies(Vec<u8>);

    impl Service<http::Request<Body>> for Replies {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future =
            Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: http::Request<Body>) -> Self::Future {
            let reply = self.0.clone();
            Box::pin(async move {
                Ok(match req.into_body().collect().await {
                    Ok(_) => http::Response::new(Body::new(http_body_util::Full::new(
                        Bytes::from(reply),
                    ))),
                    Err(status) => status.into_http(),
                })
            })
        }
    }

    fn request(bytes: Vec<u8>) -> http::Request<Body> {
        http::Request::new(Body::new(http_body_util::Full::new(Bytes::from(bytes))))
    }

    #[tokio::test]
    async fn a_request_message_over_the_limit_fails_its_body_with_resource_exhausted() {
        let mut svc = MessageLimitLayer::new(8).layer(Replies(message(1)));
        let resp = svc
            .call(request(message(9)))
            .await
            .unwrap_or_else(|e| match e {});
        let status = Status::from_header_map(resp.headers()).expect("trailers-only status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains("request message of 9 bytes exceeds the limit of 8 bytes"),
            "{}",
            status.message()
        );

        let resp = svc
            .call(request(message(8)))
            .await
            .unwrap_or_else(|e| match e {});
        assert!(resp.headers().get("grpc-status").is_none());
        let got = resp.into_body().collect().await.expect("reply").to_bytes();
        assert_eq!(got.as_ref(), message(1).as_slice());
    }

    #[tokio::test]
    async fn a_response_message_over_the_limit_becomes_resource_exhausted_trailers() {
        let mut reply = message(3);
        reply.extend(message(9));
        let mut svc = MessageLimitLayer::new(8).layer(Replies(reply));
        let resp = svc
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap_or_else(|e| match e {});
        let collected = resp.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned().expect("trailers");
        // The message under the limit went out; the one over it did not.
        assert_eq!(collected.to_bytes().as_ref(), message(3).as_slice());
        let status = Status::from_header_map(&trailers).expect("status in the trailers");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("response message of 9 bytes"),
            "{}",
            status.message()
        );
    }
}
