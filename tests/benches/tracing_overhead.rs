//! What tracing costs: the whole mesh (`stockmesh-drill up`, SQLite) serving
//! `GET /v1/products/{id}` through the gateway (which calls products), three times in one
//! run — tracing off, on with every trace sampled, on with 1 % sampled — exporting to an
//! OTLP collector this bench runs (it counts the spans it receives). For each mode it
//! prints requests per second and the mesh process's CPU time per request.
//!
//! Run: `cargo bench -p stockmesh-tests --bench tracing_overhead`
//! (`STOCKMESH_BENCH_SECS`, default 8, per mode; `STOCKMESH_BENCH_CLIENTS`, default 16).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use stockmesh::Target;
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::products::v1::CreateProductRequest;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh_tests::bench::{cpu_secs, port};
use tokio::process::Command;

#[derive(Clone, Default)]
struct Sink(Arc<AtomicUsize>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct Row {
    mode: &'static str,
    rps: f64,
    cpu_us: f64,
    spans: usize,
}

async fn run_mode(
    mode: &'static str,
    otel: Option<(SocketAddr, &str)>,
    secs: u64,
    clients: usize,
    sink: &Sink,
) -> Row {
    let dir = std::env::temp_dir().join(format!(
        "stockmesh_trace_bench_{}_{mode}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ports: Vec<(Target, u16)> = Target::ALL.iter().map(|t| (*t, port())).collect();
    let addr = |t: Target| {
        SocketAddr::from((
            [127, 0, 0, 1],
            ports.iter().find(|(x, _)| *x == t).unwrap().1,
        ))
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stockmesh-drill"));
    cmd.arg("up")
        .env("STOCKMESH_DATA_DIR", &dir)
        .env("STOCKMESH_BIND", "127.0.0.1")
        .env("STOCKMESH_ADMIN_PASSWORD", "bench-admin-password")
        .env("STOCKMESH_RATE_LIMIT_RPS", "10000000")
        .env("STOCKMESH_RATE_LIMIT_BURST", "10000000")
        .env("STOCKMESH_DRAIN_DELAY_MS", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for (t, p) in &ports {
        cmd.env(
            format!("STOCKMESH_{}_PORT", t.name().to_uppercase()),
            p.to_string(),
        );
    }
    match otel {
        Some((collector, sampler_arg)) => {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
                .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
                .env("OTEL_TRACES_SAMPLER_ARG", sampler_arg);
        }
        None => {
            cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        }
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id().unwrap_or(0);
    let give_up = Instant::now() + Duration::from_secs(120);
    while stockmesh::health::wait_serving(
        addr(Target::Gateway),
        Target::Gateway.grpc_service(),
        Duration::from_secs(60),
    )
    .await
    .is_err()
    {
        assert!(Instant::now() < give_up, "the mesh did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = |a: SocketAddr| {
        tonic::transport::Endpoint::from_shared(format!("http://{a}"))
            .unwrap()
            .connect_lazy()
    };
    let token = AuthServiceClient::new(channel(addr(Target::Auth)))
        .login(LoginRequest {
            email: "admin@stockmesh.local".into(),
            password: "bench-admin-password".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let mut req = tonic::Request::new(CreateProductRequest {
        sku: "SKU-BENCH".into(),
        name: "bench".into(),
        price_cents: 100,
        currency: "USD".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let id = ProductServiceClient::new(channel(addr(Target::Products)))
        .create_product(req)
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap()
        .id;

    let http: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{}/v1/products/{id}", addr(Target::Gateway))
        .parse()
        .unwrap();
    let run = |for_secs: u64| {
        let (http, uri) = (http.clone(), uri.clone());
        async move {
            let done = Arc::new(AtomicUsize::new(0));
            let errors = Arc::new(Mutex::new(0usize));
            let until = Instant::now() + Duration::from_secs(for_secs);
            let tasks: Vec<_> = (0..clients)
                .map(|_| {
                    let (http, uri, done, errors) =
                        (http.clone(), uri.clone(), done.clone(), errors.clone());
                    tokio::spawn(async move {
                        while Instant::now() < until {
                            match http.get(uri.clone()).await {
                                Ok(r) if r.status() == 200 => {
                                    let _ = r.into_body().collect().await;
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => *errors.lock().unwrap() += 1,
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
            let errors = *errors.lock().unwrap();
            (done.load(Ordering::Relaxed), errors)
        }
    };
    run(2).await; // warm-up
    let spans_before = sink.0.load(Ordering::Relaxed);
    let cpu_before = cpu_secs(pid);
    let start = Instant::now();
    let (n, errors) = run(secs).await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu_before;
    assert_eq!(errors, 0, "{mode}: failed requests");
    // Let the last batch arrive before counting spans.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = sink.0.load(Ordering::Relaxed) - spans_before;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Row {
        mode,
        rps: n as f64 / elapsed,
        cpu_us: cpu * 1e6 / n.max(1) as f64,
        spans,
    }
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("STOCKMESH_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let clients: usize = std::env::var("STOCKMESH_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let sink = Sink::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut rows = Vec::new();
    rows.push(run_mode("off", None, secs, clients, &sink).await);
    rows.push(
        run_mode(
            "on, 100 % sampled",
            Some((collector, "1.0")),
            secs,
            clients,
            &sink,
        )
        .await,
    );
    rows.push(
        run_mode(
            "on, 1 % sampled",
            Some((collector, "0.01")),
            secs,
            clients,
            &sink,
        )
        .await,
    );
    let base = rows[0].rps;
    let base_cpu = rows[0].cpu_us;
    println!(
        "tracing overhead: GET /v1/products/{{id}} through the gateway, {clients} clients, {secs} s per mode"
    );
    println!(
        "{:<20} {:>10} {:>10} {:>14} {:>10} {:>10}",
        "mode", "req/s", "vs off", "CPU µs/req", "vs off", "spans"
    );
    for r in &rows {
        println!(
            "{:<20} {:>10.0} {:>9.1}% {:>14.1} {:>9.1}% {:>10}",
            r.mode,
            r.rps,
            100.0 * r.rps / base,
            r.cpu_us,
            100.0 * r.cpu_us / base_cpu,
            r.spans
        );
    }
}
