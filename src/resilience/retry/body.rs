//! Request bodies as retry needs them: read whole when they already are (a unary gRPC
//! message), buffered up to the replay limit otherwise, and handed on as a stream past
//! that limit, so no body is ever held beyond it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tonic::Status;
use tonic::body::Body;

/// Reads a body that is already complete, without waiting: `None` when it is not (and
/// then nothing was taken from it).
pub(super) fn read_now(body: &mut Body) -> Option<Result<Bytes, Status>> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    if body.is_end_stream() {
        return Some(Ok(Bytes::new()));
    }
    let first = match Pin::new(&mut *body).poll_frame(&mut cx) {
        Poll::Pending => return None,
        Poll::Ready(None) => return Some(Ok(Bytes::new())),
        Poll::Ready(Some(Err(status))) => return Some(Err(status)),
        Poll::Ready(Some(Ok(frame))) => frame,
    };
    let Ok(mut data) = first.into_data() else {
        return Some(Err(Status::internal("request body starts with trailers")));
    };
    let bytes = data.copy_to_bytes(data.remaining());
    if body.is_end_stream() {
        return Some(Ok(bytes));
    }
    match Pin::new(&mut *body).poll_frame(&mut cx) {
        Poll::Ready(None) => Some(Ok(bytes)),
        // Rare: more frames, or not yet ended. Give up the fast path without losing the
        // chunk already read.
        other => {
            let rest = std::mem::take(body);
            *body = Body::new(Prefixed {
                first: Some(bytes),
                pending: Some(other),
                rest,
            });
            None
        }
    }
}

pin_project! {
    /// A body whose first chunk (and the frame polled after it) were already taken.
    struct Prefixed {
        first: Option<Bytes>,
        pending: Option<Poll<Option<Result<http_body::Frame<Bytes>, Status>>>>,
        #[pin]
        rest: Body,
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.project();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        match this.pending.take() {
            Some(Poll::Ready(frame)) => Poll::Ready(frame),
            _ => this.rest.poll_frame(cx),
        }
    }
}

/// A request body as far as [`buffer`] read it.
pub(super) enum Buffered {
    /// All of it, within the replay limit.
    Whole(Bytes),
    /// Over the limit: what was read, chained to the rest of the stream.
    Partial(Body),
}

/// Reads a request body whole, but never more than `limit` bytes of it: a larger (or
/// endless) body is handed on as a stream after the first `limit`-odd bytes, so a client
/// cannot make this layer hold an unbounded body. A unary gRPC request is one data
/// frame, kept as is (no copy); several frames are joined.
pub(super) async fn buffer(mut body: Body, limit: usize) -> Result<Buffered, Status> {
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(mut data) = frame?.into_data() else {
            continue; // request trailers: gRPC clients send none
        };
        let chunk = data.copy_to_bytes(data.remaining());
        len += chunk.len();
        match (&mut first, &mut rest) {
            (None, _) => first = Some(chunk),
            (Some(head), None) => {
                let mut joined = BytesMut::with_capacity(head.len() + chunk.len());
                joined.extend_from_slice(head);
                joined.extend_from_slice(&chunk);
                rest = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&chunk),
        }
        if len > limit {
            let read = match (first, rest) {
                (_, Some(joined)) => joined.freeze(),
                (Some(one), None) => one,
                (None, None) => Bytes::new(),
            };
            return Ok(Buffered::Partial(Body::new(Prefixed {
                first: Some(read),
                pending: None,
                rest: body,
            })));
        }
    }
    Ok(Buffered::Whole(match (first, rest) {
        (_, Some(joined)) => joined.freeze(),
        (Some(one), None) => one,
        (None, None) => Bytes::new(),
    }))
}

pub(super) fn replayable(body: Bytes) -> Body {
    Body::new(Full::new(body))
}
