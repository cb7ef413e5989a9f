//! Cost of the outbound resilience stack, in one run (`cargo bench -p stockmesh --bench
//! resilience`; results are recorded in BENCHMARKS.md):
//!
//! 1. **Throughput**: the same unary call (`grpc.health.v1.Health/Check`, which the stack
//!    treats as a retryable read, so it takes the full path: deadline, retry with body
//!    buffering and budget, limit, breaker, attempt deadline) to a local server, by 64
//!    concurrent callers for a fixed time, through a bare tonic `Channel` and through
//!    `ClientBuilder::build`. Rounds alternate to even out noise; the median counts.
//!    Goal: the stack costs ≤ 5 % throughput.
//! 2. **Latency** of one call at a time through each, p50/p99.
//! 3. **Fail-fast**: latency of calls refused by an open breaker (upstream dead), measured
//!    through a generated client as a service would see it. Goal: p99 ≤ 1 ms.
//!
//! A bench binary rather than criterion: the goals are a throughput ratio under
//! concurrency and a p99, which a fixed-duration loop and an HDR histogram measure
//! directly. Environment: `BENCH_SECS` (per round, default 3), `BENCH_ROUNDS` (default 3),
//! `BENCH_CONCURRENCY` (default 64).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use stockmesh::Target;
use stockmesh::client::ClientBuilder;
use stockmesh::resilience::ResilienceArgs;
use tonic::Status;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::Service;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start_server() -> SocketAddr {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        // Keep the reporter alive with the server.
        let _reporter = reporter;
        Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
    });
    addr
}

fn bare(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect_lazy()
}

fn stack(addr: SocketAddr, settings: ResilienceArgs) -> stockmesh::client::UpstreamChannel {
    ClientBuilder::new(Target::Auth, vec![format!("http://{addr}")], settings)
        .build()
        .unwrap()
}

/// One call, type-erased so that the bare channel and the stack are measured by the same
/// code (each call clones its client and boxes its future, identically for both).
type Call = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send>> + Send + Sync>;

macro_rules! caller {
    ($client:expr) => {{
        let client = $client;
        let call: Call = Arc::new(move || {
            let mut c = client.clone();
            Box::pin(async move { c.check(HealthCheckRequest::default()).await.map(|_| ()) })
        });
        call
    }};
}

/// CPU time used by this process so far (client and server both), from
/// `/proc/self/stat` (utime + stime, in USER_HZ = 100 ticks). `None` off Linux.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// One throughput measurement.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Calls per second (wall clock).
    calls_per_sec: f64,
    /// CPU time per call, client and server together (µs): what bounds throughput when
    /// the CPU is saturated, and far less sensitive than wall time to other tenants.
    cpu_us_per_call: f64,
}

/// Calls per second by `concurrency` callers during `secs`.
async fn throughput(call: Call, concurrency: usize, secs: u64) -> Rate {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            let stop = stop.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    call().await.expect("check");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_count = done.load(Ordering::Relaxed);
    let start = Instant::now();
    let cpu_start = cpu_time();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = done.load(Ordering::Relaxed) - start_count;
    let cpu = match (cpu_start, cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    let rate = Rate {
        calls_per_sec: n as f64 / start.elapsed().as_secs_f64(),
        cpu_us_per_call: cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
    };
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    rate
}

/// Latency of `n` sequential calls, in microseconds.
async fn latency(call: Call, n: usize, expect_ok: bool) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..n {
        let start = Instant::now();
        let res = call().await;
        let us = start.elapsed().as_nanos() as u64 / 1000;
        assert_eq!(res.is_ok(), expect_ok, "{res:?}");
        h.record(us.max(1)).unwrap();
    }
    h
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn show(name: &str, h: &Histogram<u64>) {
    println!(
        "  {name:<28} p50 {:>6} µs   p99 {:>6} µs   p99.9 {:>6} µs   max {:>6} µs   (n={})",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let secs = env_or("BENCH_SECS", 3);
    let rounds = env_or("BENCH_ROUNDS", 3) as usize;
    let concurrency = env_or("BENCH_CONCURRENCY", 64) as usize;
    let addr = start_server().await;
    let bare_client = caller!(HealthClient::new(bare(addr)));
    let stack_client = caller!(HealthClient::new(stack(addr, ResilienceArgs::default())));
    // Warm both connections.
    latency(bare_client.clone(), 200, true).await;
    latency(stack_client.clone(), 200, true).await;

    if std::env::var("COUNT_ALLOCS").is_ok() {
        for (name, call) in [
            ("bare", caller!(HealthClient::new(bare(addr)))),
            ("full", caller!(HealthClient::new(stack(addr, ResilienceArgs::default())))),
        ] {
            latency(call.clone(), 1000, true).await;
            let before = ALLOCS.load(Ordering::Relaxed);
            latency(call.clone(), 10_000, true).await;
            println!("{name}: {:.1} allocations per call", (ALLOCS.load(Ordering::Relaxed) - before) as f64 / 10_000.0);
        }
        return;
    }
    if let Ok(which) = std::env::var("PROFILE_ONLY") {
        let call = match which.as_str() {
            "bare" => caller!(HealthClient::new(bare(addr))),
            "retry" => {
                let svc = tower::util::BoxCloneSyncService::new(tower::ServiceBuilder::new()
                    .layer(stockmesh::resilience::retry::RetryLayer::new("x", stockmesh::resilience::retry::RetrySettings::try_new(&ResilienceArgs::default()).unwrap()))
                    .map_err(|e: tonic::transport::Error| Status::from_error(Box::new(e)))
                    .service(bare(addr)));
                caller!(HealthClient::new(svc))
            }
            _ => caller!(HealthClient::new(stack(addr, ResilienceArgs::default()))),
        };
        let r = throughput(call, concurrency, secs).await;
        println!("{which}: {r:?}");
        return;
    }
    if std::env::var("ABLATION").is_ok() {
        ablation(addr, secs, concurrency).await;
        return;
    }
    println!("resilience stack benchmark ({concurrency} callers, {rounds} × {secs} s rounds)");
    let mut bare_rates = Vec::new();
    let mut stack_rates = Vec::new();
    for round in 0..rounds {
        let b = throughput(bare_client.clone(), concurrency, secs).await;
        let s = throughput(stack_client.clone(), concurrency, secs).await;
        println!(
            "  round {round}: bare {:>7.0} calls/s {:>6.2} µs CPU/call   stack {:>7.0} calls/s {:>6.2} µs CPU/call",
            b.calls_per_sec, b.cpu_us_per_call, s.calls_per_sec, s.cpu_us_per_call
        );
        bare_rates.push(b);
        stack_rates.push(s);
    }
    let bare_cpu = median(bare_rates.iter().map(|r| r.cpu_us_per_call).collect());
    let stack_cpu = median(stack_rates.iter().map(|r| r.cpu_us_per_call).collect());
    let bare_wall = median(bare_rates.iter().map(|r| r.calls_per_sec).collect());
    let stack_wall = median(stack_rates.iter().map(|r| r.calls_per_sec).collect());
    println!(
        "throughput (medians): bare {bare_wall:.0} calls/s, full stack {stack_wall:.0} calls/s \
         (wall clock: {:.1} % fewer)",
        (1.0 - stack_wall / bare_wall) * 100.0
    );
    println!(
        "CPU per call (medians): bare {bare_cpu:.2} µs, full stack {stack_cpu:.2} µs: \
         throughput cost at saturation {:.1} % (goal ≤ 5 %)",
        (1.0 - bare_cpu / stack_cpu) * 100.0
    );

    println!("latency, one call at a time:");
    show(
        "bare channel",
        &latency(bare_client.clone(), 20_000, true).await,
    );
    show(
        "full stack",
        &latency(stack_client.clone(), 20_000, true).await,
    );

    // Fail-fast: a dead upstream, one attempt per call so the breaker opens after 5
    // calls, and an open period longer than the measurement.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let settings = ResilienceArgs {
        retry_max_attempts: 1,
        breaker_failures: 5,
        breaker_open_ms: 600_000,
        breaker_max_open_ms: 600_000,
        ..ResilienceArgs::default()
    };
    let mut dead_channel = stack(dead, settings);
    let dead_client = caller!(HealthClient::new(dead_channel.clone()));
    for _ in 0..5 {
        assert!(dead_client().await.is_err());
    }
    // Confirm it is the breaker answering.
    let refusal = dead_client().await.unwrap_err();
    assert!(
        refusal.message().contains("circuit breaker open"),
        "{refusal:?}"
    );
    let h = latency(dead_client, 100_000, false).await;
    println!("fail-fast with the breaker open (goal p99 ≤ 1 ms = 1000 µs):");
    show("generated client", &h);
    // The stack alone, without tonic's client encoding around it.
    let mut raw = Histogram::<u64>::new(3).unwrap();
    for _ in 0..100_000 {
        let req = http::Request::builder()
            .uri(format!("http://{dead}/grpc.health.v1.Health/Check"))
            .body(tonic::body::Body::empty())
            .unwrap();
        let start = Instant::now();
        std::future::poll_fn(|cx| dead_channel.poll_ready(cx))
            .await
            .unwrap();
        let res = dead_channel.call(req).await;
        raw.record((start.elapsed().as_nanos() as u64).max(1))
            .unwrap();
        assert!(res.is_err());
    }
    println!(
        "  {:<28} p50 {:>6} ns   p99 {:>6} ns   max {:>6} ns",
        "stack only (UpstreamChannel)",
        raw.value_at_quantile(0.5),
        raw.value_at_quantile(0.99),
        raw.max()
    );
}

async fn ablation(addr: SocketAddr, secs: u64, concurrency: usize) {
    {
        use tower::retry::budget::{Budget, TpsBudget};
        let b = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
        let t = Instant::now();
        for _ in 0..1_000_000 { b.deposit(); }
        println!("deposit: {:?}/op", t.elapsed() / 1_000_000);
        let t = Instant::now();
        for _ in 0..1_000_000 { std::hint::black_box(tokio::time::Instant::now()); }
        println!("tokio Instant::now: {:?}/op", t.elapsed() / 1_000_000);
        let t = Instant::now();
        for _ in 0..1_000_000 { std::hint::black_box(stockmesh::resilience::idempotency::MethodTable::global().get(std::hint::black_box("/grpc.health.v1.Health/Check"))); }
        println!("lookup: {:?}/op", t.elapsed() / 1_000_000);
        let mut req = http::Request::new(());
        req.headers_mut().insert("te", http::HeaderValue::from_static("trailers"));
        req.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
        req.extensions_mut().insert(stockmesh::resilience::deadline::CallDeadline(tokio::time::Instant::now()));
        let (parts, ()) = req.into_parts();
        let t = Instant::now();
        for _ in 0..1_000_000 { std::hint::black_box((parts.headers.clone(), parts.extensions.clone(), parts.uri.clone())); }
        println!("parts clone: {:?}/op", t.elapsed() / 1_000_000);
        let bytes = bytes::Bytes::from_static(b"0123456789");
        let t = Instant::now();
        for _ in 0..1_000_000 { std::hint::black_box(tonic::body::Body::new(http_body_util::Full::new(bytes.clone()))); }
        println!("body box: {:?}/op", t.elapsed() / 1_000_000);
    }
    use stockmesh::resilience::breaker::{BreakerLayer, BreakerState, BreakerSettings};
    use stockmesh::resilience::deadline::{AttemptDeadlineLayer, DeadlineLayer};
    use stockmesh::resilience::limit::LimitLayer;
    use stockmesh::resilience::retry::{RetryLayer, RetrySettings};
    use tower::ServiceBuilder;
    use tower::util::BoxCloneSyncService;
    let args = ResilienceArgs::default();
    let ch = bare(addr);
    let mapped = || ServiceBuilder::new().map_err(|e: tonic::transport::Error| Status::from_error(Box::new(e))).service(ch.clone());
    let v_map = BoxCloneSyncService::new(mapped());
    let v_attempt = BoxCloneSyncService::new(ServiceBuilder::new().layer(AttemptDeadlineLayer::new("x")).service(mapped()));
    let v_deadline = BoxCloneSyncService::new(ServiceBuilder::new().layer(DeadlineLayer::new("x", Duration::from_secs(2))).layer(AttemptDeadlineLayer::new("x")).service(mapped()));
    let v_breaker = BoxCloneSyncService::new(ServiceBuilder::new().layer(BreakerLayer::new(BreakerState::new("x", "e", &BreakerSettings::try_new(&args).unwrap(), false))).service(mapped()));
    let v_limit = BoxCloneSyncService::new(ServiceBuilder::new().layer(LimitLayer::new("x", 512)).service(mapped()));
    let v_retry = BoxCloneSyncService::new(ServiceBuilder::new().layer(RetryLayer::new("x", RetrySettings::try_new(&args).unwrap())).service(mapped()));
    let timed: Call = {
        let client = HealthClient::new(bare(addr));
        Arc::new(move || {
            let mut c = client.clone();
            Box::pin(async move {
                let mut req = tonic::Request::new(HealthCheckRequest::default());
                req.set_timeout(Duration::from_secs(2));
                c.check(req).await.map(|_| ())
            })
        })
    };
    let v_outer = BoxCloneSyncService::new(ServiceBuilder::new().layer(DeadlineLayer::new("x", Duration::from_secs(2))).service(mapped()));
    let ch2 = mapped();
    let v_passthrough = BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let mut svc = ch2.clone();
        async move {
            use tower::ServiceExt;
            svc.ready().await?;
            svc.call(req).await
        }
    }));
    let ch3 = mapped();
    let v_rebody = BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let mut svc = ch3.clone();
        async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let (p, b) = req.into_parts();
            let bytes = b.collect().await?.to_bytes();
            svc.ready().await?;
            svc.call(http::Request::from_parts(p, tonic::body::Body::new(http_body_util::Full::new(bytes)))).await
        }
    }));
    let v_retry1 = BoxCloneSyncService::new(ServiceBuilder::new().layer(RetryLayer::new("x", RetrySettings::try_new(&ResilienceArgs { retry_max_attempts: 1, ..ResilienceArgs::default() }).unwrap())).service(mapped()));
    let variants: Vec<(&str, Call)> = vec![
        ("async passthrough", caller!(HealthClient::new(v_passthrough))),
        ("rebody", caller!(HealthClient::new(v_rebody))),
        ("retry off", caller!(HealthClient::new(v_retry1))),
        ("bare", caller!(HealthClient::new(bare(addr)))),
        ("bare+grpc-timeout", timed),
        ("outer deadline", caller!(HealthClient::new(v_outer))),
        ("boxed+map_err", caller!(HealthClient::new(v_map))),
        ("attempt deadline", caller!(HealthClient::new(v_attempt))),
        ("deadline+attempt", caller!(HealthClient::new(v_deadline))),
        ("breaker", caller!(HealthClient::new(v_breaker))),
        ("limit", caller!(HealthClient::new(v_limit))),
        ("retry", caller!(HealthClient::new(v_retry))),
        ("full", caller!(HealthClient::new(stack(addr, args.clone())))),
    ];
    for (name, call) in &variants {
        latency(call.clone(), 200, true).await;
        let _ = name;
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _round in 0..7 {
        for (i, (_, call)) in variants.iter().enumerate() {
            results[i].push(throughput(call.clone(), concurrency, secs).await.cpu_us_per_call);
        }
    }
    for (i, (name, _)) in variants.iter().enumerate() {
        let mut v = results[i].clone();
        v.sort_by(|a, b| a.total_cmp(b));
        println!("{name:<20} median {:>6.2} µs  all {:?}", v[v.len() / 2], v.iter().map(|x| (*x * 100.0).round() / 100.0).collect::<Vec<_>>());
    }
}
