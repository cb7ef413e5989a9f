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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// A body fed chunk by chunk through a channel, ending when the sender is dropped.
    fn streamed() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, Status>(http_body::Frame::data(b)));
        (tx, Body::new(StreamBody::new(frames)))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_kept_whole() {
        let (tx, body) = streamed();
        for i in 0..4u8 {
            tx.send(Bytes::from(vec![i; 1000])).await.unwrap();
        }
        drop(tx);
        let Buffered::Whole(bytes) = buffer(body, 4096).await.unwrap() else {
            panic!("4,000 bytes fit a 4,096-byte limit");
        };
        assert_eq!(bytes.len(), 4000);
        assert!(bytes[..1000].iter().all(|b| *b == 0) && bytes[3000..].iter().all(|b| *b == 3));
    }

    #[tokio::test]
    async fn past_the_limit_the_rest_streams_through_in_order() {
        let (tx, body) = streamed();
        // The sender stays open: buffering must give up at the limit, not wait for the end.
        for i in 0..3u8 {
            tx.send(Bytes::from(vec![i; 10_000])).await.unwrap();
        }
        let buffered = tokio::time::timeout(Duration::from_secs(5), buffer(body, 16 * 1024))
            .await
            .expect("buffer returns once over the limit, before the body ends")
            .unwrap();
        let Buffered::Partial(mut rest) = buffered else {
            panic!("30,000 bytes are over a 16 KiB limit");
        };
        let feeder = tokio::spawn(async move {
            for i in 3..10u8 {
                tx.send(Bytes::from(vec![i; 10_000])).await.unwrap();
            }
        });
        let mut all = Vec::new();
        while let Some(frame) = rest.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                all.extend_from_slice(&data);
            }
        }
        feeder.await.unwrap();
        assert_eq!(all.len(), 100_000, "nothing lost, nothing doubled");
        for (i, chunk) in all.chunks(10_000).enumerate() {
            assert!(
                chunk.iter().all(|b| usize::from(*b) == i),
                "chunk {i} in place"
            );
        }
    }
}
