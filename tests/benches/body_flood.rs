//! Body flood: do oversized request bodies without `Content-Length` grow the gateway's
//! memory? (issue 13)
//!
//! Starts the whole mesh as one real `stockmesh-drill up` process (SQLite, a temp dir,
//! gateway rate limit lifted, body cap at its default 4 MiB), samples its RSS idle, then
//! sends `STOCKMESH_FLOOD_BODIES` (default 96) bodies of 32 MiB each, 16 at a time, as
//! 64 KiB chunks with no length: a third as gRPC over h2c (`CreateProduct`, a message
//! prefix declaring just under the cap followed by more than the cap), a third as
//! gRPC-web, a third as chunked REST (`POST /v1/products`). Every one must be refused
//! (RESOURCE_EXHAUSTED, 413). Then a second wave four times as large. RSS is sampled
//! every 20 ms throughout; the peak growth over idle must stay within 16 × the cap + 64 MB
//! (16 concurrent REST bodies are held up to the cap each before 413) and must not grow
//! with the volume: the second wave may raise the peak by at most 24 MB.
//!
//! Run: `cargo bench -p stockmesh-tests --bench body_flood`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stockmesh::Target;
use stockmesh_tests::bench::{port, rss_mb};
use tokio::process::Command;

const CAP: usize = 4 * 1024 * 1024;
const BODY: usize = 32 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

type Streamed = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Grpc,
    GrpcWeb,
    Rest,
}

/// `BODY` bytes in `CHUNK`s, with no length; gRPC kinds start with a message prefix.
fn body(kind: Kind) -> Streamed {
    let mut first = BytesMut::with_capacity(CHUNK);
    if !matches!(kind, Kind::Rest) {
        first.put_u8(0);
        first.put_u32((CAP - 16) as u32);
    } else {
        first.put_slice(b"{\"name\":\"");
    }
    first.resize(CHUNK, b'a');
    let first = first.freeze();
    let filler = Bytes::from(vec![b'a'; CHUNK]);
    let chunks = futures::stream::iter(0..BODY / CHUNK).map(move |i| {
        let chunk = if i == 0 {
            first.clone()
        } else {
            filler.clone()
        };
        Ok::<_, Infallible>(hyper::body::Frame::data(chunk))
    });
    BodyExt::boxed_unsync(StreamBody::new(chunks))
}

async fn send(client: &Client<HttpConnector, Streamed>, base: &str, kind: Kind) -> String {
    let (path, ctype) = match kind {
        Kind::Grpc => (
            "/stockmesh.products.v1.ProductService/CreateProduct",
            "application/grpc",
        ),
        Kind::GrpcWeb => (
            "/stockmesh.products.v1.ProductService/CreateProduct",
            "application/grpc-web+proto",
        ),
        Kind::Rest => ("/v1/products", "application/json"),
    };
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("{base}{path}"))
        .header("content-type", ctype)
        .header("te", "trailers")
        .body(body(kind))
        .expect("request");
    let Ok(resp) = client.request(req).await else {
        // The gateway may reset the stream once it has refused the body.
        return "reset".into();
    };
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let trailers = body
        .collect()
        .await
        .ok()
        .and_then(|c| c.trailers().cloned())
        .unwrap_or_default();
    let grpc = parts
        .headers
        .get("grpc-status")
        .or_else(|| trailers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match kind {
        Kind::Rest => status.as_u16().to_string(),
        _ => format!("grpc-status {grpc}"),
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("STOCKMESH_FLOOD_BODIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let dir = std::env::temp_dir().join(format!("stockmesh_body_flood_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ports: Vec<(Target, u16)> = Target::ALL.iter().map(|t| (*t, port())).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stockmesh-drill"));
    cmd.arg("up")
        .env("STOCKMESH_DATA_DIR", &dir)
        .env("STOCKMESH_BIND", "127.0.0.1")
        .env("STOCKMESH_ADMIN_PASSWORD", "flood-admin-password")
        .env(
            "STOCKMESH_SERVICE_SECRET",
            "flood-service-secret-0123456789abcdef-0123456789",
        )
        .env("STOCKMESH_RATE_LIMIT_RPS", "0")
        .env("STOCKMESH_DRAIN_DELAY_MS", "0")
        .env("RUST_LOG", "error")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for (t, p) in &ports {
        cmd.env(
            format!("STOCKMESH_{}_PORT", t.name().to_uppercase()),
            p.to_string(),
        );
    }
    let mut child = cmd.spawn().expect("start stockmesh-drill up");
    let pid = child.id().expect("pid");
    let gateway = ports
        .iter()
        .find(|(t, _)| *t == Target::Gateway)
        .map(|(_, p)| SocketAddr::from(([127, 0, 0, 1], *p)))
        .expect("gateway port");
    let give_up = Instant::now() + Duration::from_secs(120);
    for (t, p) in &ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], *p));
        while stockmesh::health::wait_serving(addr, t.grpc_service(), Duration::from_secs(30))
            .await
            .is_err()
        {
            assert!(Instant::now() < give_up, "{} did not start", t.name());
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the mesh exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let base = format!("http://{gateway}");
    let h2: Client<HttpConnector, Streamed> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let h1: Client<HttpConnector, Streamed> = Client::builder(TokioExecutor::new()).build_http();

    // Warm-up: connections, allocator pools.
    for kind in [Kind::Grpc, Kind::GrpcWeb, Kind::Rest] {
        let client = if matches!(kind, Kind::Rest) { &h1 } else { &h2 };
        send(client, &base, kind).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mb(pid);
    let peak = Arc::new(AtomicU64::new((idle * 1024.0) as u64));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let kib = (rss_mb(pid) * 1024.0) as u64;
                peak.fetch_max(kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Two waves, the second four times the first: memory must follow the concurrency
    // (16 bodies held up to the cap at most), not the volume sent.
    let mut peaks = Vec::new();
    for wave in [n, 4 * n] {
        let started = Instant::now();
        let answers: Vec<(Kind, String)> = futures::stream::iter(0..wave)
            .map(|i| {
                let kind = [Kind::Grpc, Kind::GrpcWeb, Kind::Rest][i % 3];
                let client = if matches!(kind, Kind::Rest) {
                    h1.clone()
                } else {
                    h2.clone()
                };
                let base = base.clone();
                async move { (kind, send(&client, &base, kind).await) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let elapsed = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let peak_mb = peak.load(Ordering::Relaxed) as f64 / 1024.0;
        let refused = |k: &str| {
            answers
                .iter()
                .filter(|(kind, a)| {
                    format!("{kind:?}") == k && (a == "413" || a == "grpc-status 8" || a == "reset")
                })
                .count()
        };
        println!(
            "wave of {wave} bodies of {} MiB without length, 16 at a time, in {elapsed:.1?} ({:.0} MiB sent)",
            BODY >> 20,
            (wave * BODY) as f64 / (1 << 20) as f64
        );
        let mut seen: Vec<&str> = answers.iter().map(|(_, a)| a.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        for k in ["Grpc", "GrpcWeb", "Rest"] {
            println!("  {k}: refused {}/{}", refused(k), wave / 3);
            assert_eq!(
                refused(k),
                wave / 3,
                "every oversized {k} body is refused: {seen:?}"
            );
        }
        println!(
            "  answers seen: {seen:?}; mesh RSS peak so far {peak_mb:.1} MB (+{:.1} over idle)",
            peak_mb - idle
        );
        peaks.push(peak_mb - idle);
    }
    sampler.abort();
    let after = rss_mb(pid);
    let bound = 16.0 * (CAP >> 20) as f64 + 64.0;
    println!(
        "  mesh RSS idle {idle:.1} MB, after {after:.1} MB; peak growth {:.1} MB after the first wave, {:.1} MB after the second (4x the volume); bound {bound:.0} MB (16 x the 4 MiB cap + 64)",
        peaks[0], peaks[1]
    );
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        peaks[1] <= bound,
        "peak RSS growth {:.1} MB over {bound:.0} MB",
        peaks[1]
    );
    assert!(
        peaks[1] <= peaks[0] + 24.0,
        "memory grew with the volume sent: {:.1} -> {:.1} MB",
        peaks[0],
        peaks[1]
    );
}
