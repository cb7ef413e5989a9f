//! Cost of the outbound resilience stack, in one run (`cargo bench -p stockmesh --bench
//! resilience`; results are recorded in BENCHMARKS.md):
//!
//! 1. **Throughput**: the same unary call (`grpc.health.v1.Health/Check`, which the stack
//!    treats as a retryable read, so it takes the full path: deadline, retry with body
//!    buffering and budget, limit, breaker, attempt deadline) to a local server, by 64
//!    concurrent callers for a fixed time, through a bare tonic `Channel` and through
//!    `ClientBuilder::build`, in alternating rounds. Reported both as calls per second
//!    and as **CPU time per call** (client and server together, from `/proc/self/stat`):
//!    with the CPU saturated, throughput is cores ÷ CPU per call, and CPU time is far
//!    less disturbed than wall time by other tenants of a shared machine. Goal: the
//!    stack costs ≤ 5 % throughput.
//! 2. **Allocations per call** through each (exact, noise-free).
//! 3. **Latency** of one call at a time through each, p50/p99.
//! 4. **Fail-fast**: latency of calls refused by an open breaker (upstream dead), through
//!    a generated client as a service would see it, and through the stack alone.
//!    Goal: p99 ≤ 1 ms.
//!
//! `BENCH_LAYERS=1` adds the CPU per call of each layer alone over the bare channel.
//!
//! A bench binary rather than criterion: the goals are a throughput ratio under
//! concurrency and a p99, which a fixed-duration loop and an HDR histogram measure
//! directly. Environment: `BENCH_SECS` (per round, default 2), `BENCH_ROUNDS` (default 7),
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
use stockmesh::resilience::{ResilienceArgs, Route};
use tonic::Status;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::Service;

/// The allocator of the `stockmesh` binary (mimalloc, so that the bench measures what
/// production runs), counting allocations while [`COUNTING`] is set (only during the
/// allocation measurement, so that the shared counter does not slow the others).
struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

// SAFETY: forwards every call to mimalloc unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { INNER.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { INNER.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { INNER.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per call over `n` sequential calls (client and server together).
async fn allocations(call: Call, n: usize) -> f64 {
    latency(call.clone(), 100, true).await;
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    latency(call, n, true).await;
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst) as f64 / n as f64
}

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
    let secs = env_or("BENCH_SECS", 2);
    let rounds = env_or("BENCH_ROUNDS", 7) as usize;
    let concurrency = env_or("BENCH_CONCURRENCY", 64) as usize;
    let addr = start_server().await;
    let bare_client = caller!(HealthClient::new(bare(addr)));
    let stack_client = caller!(HealthClient::new(stack(addr, ResilienceArgs::default())));
    // Warm both connections.
    latency(bare_client.clone(), 200, true).await;
    latency(stack_client.clone(), 200, true).await;

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

    println!(
        "allocations per call: bare {:.1}, full stack {:.1}",
        allocations(bare_client.clone(), 10_000).await,
        allocations(stack_client.clone(), 10_000).await
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

    if std::env::var("BENCH_LAYERS").is_ok() {
        println!("CPU per call by layer (medians of {rounds} rounds):");
        layers(addr, secs, rounds, concurrency).await;
    }
}

/// CPU per call of each layer alone over the bare channel (`BENCH_LAYERS=1`).
async fn layers(addr: SocketAddr, secs: u64, rounds: usize, concurrency: usize) {
    use stockmesh::resilience::breaker::{BreakerLayer, BreakerSettings, BreakerState};
    use stockmesh::resilience::deadline::{AttemptDeadlineLayer, DeadlineLayer};
    use stockmesh::resilience::limit::LimitLayer;
    use stockmesh::resilience::retry::{RetryLayer, RetrySettings};
    use tower::ServiceBuilder;
    use tower::util::BoxCloneSyncService;

    let args = ResilienceArgs::default();
    let channel = bare(addr);
    let endpoint = || {
        ServiceBuilder::new()
            .map_err(|e: tonic::transport::Error| Status::from_error(Box::new(e)))
            .service(channel.clone())
    };
    // The bare channel with a deadline set by the caller: what propagating a deadline
    // costs tonic itself (client and server timers, the header), whatever the stack.
    let with_timeout: Call = {
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
    let breaker = BreakerState::new(
        Route::new("bench", "bench"),
        "e",
        &BreakerSettings::try_new(&args).unwrap(),
        false,
    );
    let variants: Vec<(&str, Call)> = vec![
        ("bare channel", caller!(HealthClient::new(bare(addr)))),
        ("bare + grpc-timeout", with_timeout),
        (
            // Every layer row below is boxed the same way: this row is their baseline.
            "boxed (BoxCloneSyncService)",
            caller!(HealthClient::new(BoxCloneSyncService::new(endpoint()))),
        ),
        (
            "deadline (both layers)",
            caller!(HealthClient::new(BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(DeadlineLayer::new("bench", Duration::from_secs(2)))
                    .layer(AttemptDeadlineLayer::new("bench"))
                    .service(endpoint())
            ))),
        ),
        (
            "retry",
            caller!(HealthClient::new(BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(RetryLayer::new(
                        Route::new("bench", "bench"),
                        RetrySettings::try_new(&args).unwrap()
                    ))
                    .service(endpoint())
            ))),
        ),
        (
            "limit",
            caller!(HealthClient::new(BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(LimitLayer::new(Route::new("bench", "bench"), 512))
                    .service(endpoint())
            ))),
        ),
        (
            "breaker",
            caller!(HealthClient::new(BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(BreakerLayer::new(breaker))
                    .service(endpoint())
            ))),
        ),
        (
            "full stack",
            caller!(HealthClient::new(stack(addr, args.clone()))),
        ),
    ];
    for (_, call) in &variants {
        latency(call.clone(), 200, true).await;
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, call)) in variants.iter().enumerate() {
            let rate = throughput(call.clone(), concurrency, secs).await;
            results[i].push(rate.cpu_us_per_call);
        }
    }
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "  {name:<30} {:>6.2} µs CPU/call",
            median(results[i].clone())
        );
    }
}
