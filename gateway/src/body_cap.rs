//! The request body cap of proxied gRPC and gRPC-web calls, enforced while the body
//! streams — `Content-Length` is optional (HTTP/2, chunked HTTP/1.1), so it cannot be the
//! only check.
//!
//! [`CappedBody`] wraps the body handed to the upstream channel and counts the bytes that
//! pass. It fails with RESOURCE_EXHAUSTED as soon as more than the limit has passed, or
//! earlier: it reads each gRPC message's 5-byte prefix, and a message declared to end past
//! the limit fails at once, without waiting for its bytes. Whoever reads the body (the
//! retry layer buffering a unary request, the HTTP/2 client) gets that status as the body
//! error; in case it is turned into something else on the way, the wrapper also trips a
//! shared [`Tripped`] flag, and the dispatcher answers RESOURCE_EXHAUSTED itself when it
//! is set ([`Tripped::guard`] does the same for a response body already under way).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Frame, SizeHint};
use tonic::Status;

/// The status of a body over `limit` bytes.
pub fn too_large(limit: usize) -> Status {
    Status::resource_exhausted(format!("request body exceeds the limit of {limit} bytes"))
}

/// How a [`CappedBody`] ended, shared with the dispatcher: set once it refused its body
/// ([`Tripped::get`]), or once it passed whole.
#[derive(Debug, Clone, Default)]
pub struct Tripped(Arc<AtomicU8>);

impl Tripped {
    const OPEN: u8 = 0;
    const FINISHED: u8 = 1;
    const TRIPPED: u8 = 2;

    /// Whether the body was refused.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::TRIPPED
    }

    fn set(&self) {
        self.0.store(Self::TRIPPED, Ordering::Release);
    }

    fn finish(&self) {
        let _ = self.0.compare_exchange(
            Self::OPEN,
            Self::FINISHED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Wraps a response body so that, should it fail after the request body was refused
    /// (a streaming call whose answer had begun), the client gets trailers with
    /// `status` instead of a reset. A body that already passed whole (every unary call)
    /// can no longer be refused: its response is left as it is.
    pub fn guard(&self, body: tonic::body::Body, status: Status) -> tonic::body::Body {
        if self.0.load(Ordering::Acquire) == Self::FINISHED {
            return body;
        }
        tonic::body::Body::new(Guarded {
            inner: body,
            tripped: self.clone(),
            status: Some(status),
        })
    }
}

pin_project_lite::pin_project! {
    /// See the module docs.
    pub struct CappedBody {
        #[pin]
        inner: tonic::body::Body,
        limit: u64,
        seen: u64,
        scan: FrameScan,
        tripped: Tripped,
        failed: bool,
    }
}

impl CappedBody {
    pub fn new(inner: tonic::body::Body, limit: usize, tripped: Tripped) -> Self {
        Self {
            inner,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            seen: 0,
            scan: FrameScan::default(),
            tripped,
            failed: false,
        }
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let polled = this.inner.as_mut().poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.tripped.finish();
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let before = *this.seen;
            *this.seen = before.saturating_add(data.len() as u64);
            let declared_end = this.scan.feed(before, data);
            if *this.seen > *this.limit || declared_end.is_some_and(|end| end > *this.limit) {
                *this.failed = true;
                this.tripped.set();
                let limit = usize::try_from(*this.limit).unwrap_or(usize::MAX);
                return Poll::Ready(Some(Err(too_large(limit))));
            }
        }
        if this.inner.is_end_stream() {
            this.tripped.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Follows the gRPC message framing (1 flag byte, 4 length bytes, payload) across
/// arbitrary chunk boundaries.
#[derive(Debug, Default)]
struct FrameScan {
    header: [u8; 5],
    have: usize,
    /// Payload bytes of the current message still to come.
    skip: u64,
}

impl FrameScan {
    /// Feeds `chunk`, which starts at body offset `offset`; returns the largest end offset
    /// a message prefix in it declares, if any.
    fn feed(&mut self, offset: u64, chunk: &[u8]) -> Option<u64> {
        let mut end = None;
        let mut i = 0;
        while i < chunk.len() {
            if self.skip > 0 {
                let n = self.skip.min((chunk.len() - i) as u64);
                self.skip -= n;
                // `n` is at most the rest of the chunk, so it fits a usize.
                i += usize::try_from(n).unwrap_or(chunk.len() - i);
                continue;
            }
            self.header[self.have] = chunk[i];
            self.have += 1;
            i += 1;
            if self.have == self.header.len() {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                self.skip = u64::from(u32::from_be_bytes([a, b, c, d]));
                end = Some(offset + i as u64 + self.skip);
            }
        }
        end
    }
}

pin_project_lite::pin_project! {
    struct Guarded {
        #[pin]
        inner: tonic::body::Body,
        tripped: Tripped,
        status: Option<Status>,
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let Some(status) = this.status.as_ref() else {
            return Poll::Ready(None);
        };
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(_))) if this.tripped.get() => {
                let trailers = trailers_of(status);
                *this.status = None;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.status.is_none() || (!self.tripped.get() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn trailers_of(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from(status.code() as i32));
    if let Ok(v) = HeaderValue::from_str(status.message()) {
        map.insert("grpc-message", v);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn prefix(len: u32) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    fn chunked(chunks: Vec<Vec<u8>>) -> tonic::body::Body {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c))));
        tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)))
    }

    async fn drain(body: CappedBody) -> Result<usize, Status> {
        let mut body = std::pin::pin!(body);
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            n += frame?.into_data().map_or(0, |d| d.len());
        }
        Ok(n)
    }

    #[tokio::test]
    async fn a_body_within_the_limit_passes_untouched() {
        let mut msg = prefix(5);
        msg.extend_from_slice(b"hello");
        let tripped = Tripped::default();
        let body = CappedBody::new(chunked(vec![msg.clone(), msg]), 20, tripped.clone());
        assert_eq!(drain(body).await.unwrap(), 20);
        assert!(!tripped.get());
        // Finished: a response is no longer wrapped.
        let resp = tonic::body::Body::empty();
        let size = http_body::Body::size_hint(&resp).exact();
        let guarded = tripped.guard(resp, too_large(20));
        assert_eq!(http_body::Body::size_hint(&guarded).exact(), size);
    }

    #[tokio::test]
    async fn counting_stops_a_body_over_the_limit() {
        // Badly framed (no prefix declares it), so only the count can catch it.
        let tripped = Tripped::default();
        let mut first = prefix(0);
        first.extend_from_slice(&[0; 3]);
        let body = CappedBody::new(
            chunked(vec![first, vec![0; 4], vec![0; 4], vec![0; 4]]),
            10,
            tripped.clone(),
        );
        let err = drain(body).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(err.message(), "request body exceeds the limit of 10 bytes");
        assert!(tripped.get());
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_fails_before_the_bytes() {
        let tripped = Tripped::default();
        // The prefix alone, split over two chunks, then nothing more ever comes.
        let p = prefix(1000);
        let frames = futures::stream::iter(vec![
            Ok::<_, Status>(Frame::data(Bytes::copy_from_slice(&p[..2]))),
            Ok(Frame::data(Bytes::copy_from_slice(&p[2..]))),
        ]);
        let frames = futures::StreamExt::chain(frames, futures::stream::pending());
        let body = tonic::body::Body::new(StreamBody::new(frames));
        let err = drain(CappedBody::new(body, 100, tripped.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(tripped.get());
    }

    #[test]
    fn frame_scan_follows_messages_across_chunks() {
        let mut s = FrameScan::default();
        let mut body = prefix(3);
        body.extend_from_slice(b"abc");
        body.extend(prefix(2));
        body.extend_from_slice(b"de");
        let mut ends = vec![];
        for (i, b) in body.iter().enumerate() {
            if let Some(end) = s.feed(i as u64, std::slice::from_ref(b)) {
                ends.push(end);
            }
        }
        assert_eq!(ends, vec![8, 15]);
        let mut s = FrameScan::default();
        assert_eq!(s.feed(0, &body), Some(15));
    }

    #[tokio::test]
    async fn the_guard_turns_a_broken_response_into_the_status() {
        let tripped = Tripped::default();
        tripped.set();
        let broken = tonic::body::Body::new(StreamBody::new(futures::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Err(Status::unknown("reset")),
        ])));
        let body = tripped.guard(broken, too_large(7));
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "8");
        assert_eq!(collected.to_bytes(), "x");
    }
}
