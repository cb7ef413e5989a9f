//! gRPC-web as the gateway receives it: `tonic_web::GrpcWebLayer` (binary and base64
//! `-text` encodings, arbitrary chunking) in front of what the gateway's dispatcher does
//! with the decoded body — the body cap (`body_cap::CappedBody`) and the message reader
//! (`upstream::Frames`) — echoing the messages back through the layer's response
//! encoding. Never a panic; a well-framed binary call under the cap comes back intact.
#![no_main]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use stockmesh_gateway::body_cap::{CappedBody, Tripped};
use stockmesh_gateway::upstream::{Frames, Item};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

const CONTENT_TYPES: [&str; 5] = [
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
    "application/grpc",
];

#[derive(Arbitrary, Debug)]
struct Input {
    content_type: u8,
    /// Also the `accept` header (tonic-web answers in the encoding asked for).
    accept: u8,
    limit: u16,
    cuts: Vec<u8>,
    body: Vec<u8>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

/// Reads the decoded request as the gateway would and echoes its messages.
#[derive(Clone)]
struct Echo {
    limit: usize,
}

impl Service<Request<Body>> for Echo {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let limit = self.limit;
        Box::pin(async move {
            let capped = CappedBody::new(req.into_body(), limit, Tripped::default());
            let mut frames = Frames::new(Body::new(capped));
            let mut out = BytesMut::new();
            let mut code = tonic::Code::Ok;
            while let Some(item) = frames.next().await {
                match item {
                    Item::Message(m) => {
                        out.put_u8(0);
                        out.put_u32(m.len() as u32);
                        out.put_slice(&m);
                    }
                    // A request body has no grpc-status: its end is "no trailers".
                    Item::End(status, _) if status.message().contains("without grpc-status") => {}
                    Item::End(status, _) => code = status.code(),
                }
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(code as i32));
            let parts = vec![
                Ok::<_, Infallible>(Frame::data(out.freeze())),
                Ok(Frame::trailers(trailers)),
            ];
            let mut resp = Response::new(Body::new(StreamBody::new(futures::stream::iter(parts))));
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            Ok(resp)
        })
    }
}

fuzz_target!(|input: Input| {
    let content_type = CONTENT_TYPES[usize::from(input.content_type) % CONTENT_TYPES.len()];
    let accept = CONTENT_TYPES[usize::from(input.accept) % CONTENT_TYPES.len()];
    let mut chunks = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < input.body.len() {
        let n = input
            .cuts
            .get(i % input.cuts.len().max(1))
            .map_or(input.body.len(), |c| usize::from(*c).max(1));
        let end = (pos + n).min(input.body.len());
        chunks.push(Ok::<_, Infallible>(Frame::data(Bytes::copy_from_slice(
            &input.body[pos..end],
        ))));
        pos = end;
        i += 1;
    }
    let body = StreamBody::new(futures::stream::iter(chunks));
    let mut req = Request::new(body);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = http::Uri::from_static("/stockmesh.products.v1.ProductService/GetProduct");
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    req.headers_mut()
        .insert("accept", HeaderValue::from_static(accept));
    let limit = usize::from(input.limit);
    let svc = tonic_web::GrpcWebLayer::new().layer(Echo { limit });
    runtime().block_on(async {
        let Ok(resp) = svc.oneshot(req).await;
        let status = resp.status();
        let collected = resp.into_body().collect().await;
        // A well-framed binary request under the cap, answered in binary: echoed intact,
        // followed by the trailers frame.
        let binary = |t: &str| t.starts_with("application/grpc-web") && !t.contains("text");
        let framed = well_framed(&input.body);
        if binary(content_type) && binary(accept) && framed && input.body.len() <= limit {
            assert_eq!(status, http::StatusCode::OK);
            let bytes = collected.expect("echo body").to_bytes();
            assert!(bytes.starts_with(&input.body), "echo lost bytes");
            assert_eq!(bytes.get(input.body.len()), Some(&0x80), "trailers frame");
        }
    });
});

/// Whole uncompressed messages and nothing else.
fn well_framed(body: &[u8]) -> bool {
    let mut pos = 0;
    while pos < body.len() {
        if pos + 5 > body.len() || body[pos] != 0 {
            return false;
        }
        let len = u32::from_be_bytes([body[pos + 1], body[pos + 2], body[pos + 3], body[pos + 4]])
            as usize;
        pos += 5 + len;
    }
    pos == body.len()
}
