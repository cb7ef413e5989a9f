//! gRPC length-prefixed message framing, as every parser of it in the mesh reads it, over
//! arbitrary bodies cut into arbitrary chunks, each checked against a whole-buffer
//! reference parser:
//!
//! * the services' message limit (`stockmesh::message_limit::Framing`): the first
//!   oversized prefix, wherever the chunks fall;
//! * the gateway's body cap (`body_cap::CappedBody`): refused exactly when the body or a
//!   declared message end passes the cap;
//! * the gateway's reply reader (`upstream::Frames`): the same messages, then one end.
#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use stockmesh::message_limit::Framing;
use stockmesh_gateway::body_cap::{CappedBody, Tripped};
use stockmesh_gateway::upstream::{Frames, Item};
use tonic::Code;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Message limit / body cap, kept small so both sides of it are reached.
    limit: u16,
    /// Chunk lengths, cycled (0 is read as 1).
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

fn chunks(body: &[u8], cuts: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < body.len() {
        let n = cuts
            .get(i % cuts.len().max(1))
            .map_or(body.len(), |c| usize::from(*c).max(1));
        let end = (pos + n).min(body.len());
        out.push(Bytes::copy_from_slice(&body[pos..end]));
        pos = end;
        i += 1;
    }
    out
}

fn body_of(chunks: &[Bytes]) -> tonic::body::Body {
    let frames = chunks
        .iter()
        .cloned()
        .map(|c| Ok::<_, Infallible>(Frame::data(c)))
        .collect::<Vec<_>>();
    tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)))
}

/// A complete prefix in the body: where it starts, its flag, its declared length.
struct Prefix {
    at: usize,
    flag: u8,
    len: usize,
}

fn prefixes(body: &[u8]) -> Vec<Prefix> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 5 <= body.len() {
        let len = u32::from_be_bytes([body[pos + 1], body[pos + 2], body[pos + 3], body[pos + 4]])
            as usize;
        out.push(Prefix {
            at: pos,
            flag: body[pos],
            len,
        });
        pos = pos + 5 + len;
    }
    out
}

fuzz_target!(|input: Input| {
    let limit = usize::from(input.limit);
    let chunks = chunks(&input.body, &input.cuts);
    let prefixes = prefixes(&input.body);

    // The services' limit: the first prefix over it, found whatever the chunking.
    let mut framing = Framing::new(limit);
    let mut found = None;
    for chunk in &chunks {
        if let Err(over) = framing.feed(chunk) {
            found = Some(over.len);
            break;
        }
    }
    let expected = prefixes.iter().find(|p| p.len > limit).map(|p| p.len);
    assert_eq!(found, expected);

    // The gateway's cap: refused exactly when the body or a declared end passes it.
    let over_cap = input.body.len() > limit || prefixes.iter().any(|p| p.at + 5 + p.len > limit);
    let tripped = Tripped::default();
    let capped = CappedBody::new(body_of(&chunks), limit, tripped.clone());
    match runtime().block_on(capped.collect()) {
        Ok(collected) => {
            assert!(!over_cap, "an over-cap body passed");
            assert_eq!(collected.to_bytes().as_ref(), input.body.as_slice());
            assert!(!tripped.get());
        }
        Err(status) => {
            assert!(over_cap, "a body under the cap was refused");
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(tripped.get());
        }
    }

    // The gateway's reply reader: the complete uncompressed messages, then one end.
    let mut frames = Frames::new(body_of(&chunks));
    let mut messages = Vec::new();
    let mut ends = 0;
    runtime().block_on(async {
        while let Some(item) = frames.next().await {
            match item {
                Item::Message(m) => {
                    assert_eq!(ends, 0, "a message after the end");
                    messages.push(m);
                }
                Item::End(status, _) => {
                    assert_ne!(status.code(), Code::Ok, "no trailers, so no OK");
                    ends += 1;
                }
            }
        }
    });
    assert_eq!(ends, 1, "exactly one end");
    for (got, p) in messages.iter().zip(&prefixes) {
        assert_eq!(p.flag, 0);
        assert_eq!(got.as_ref(), &input.body[p.at + 5..p.at + 5 + p.len]);
    }
    let whole = prefixes
        .iter()
        .take_while(|p| p.flag == 0 && p.len <= 4 << 20 && p.at + 5 + p.len <= input.body.len())
        .count();
    assert_eq!(messages.len(), whole);
});
