//! Scale-out through DNS: the client's upstream is `dns:///products.drill.test:<port>`,
//! answered by a DNS server the test runs on loopback ([`stockmesh_tests::dns`]), whose
//! record set goes from one replica to three (replicas on 127.0.0.2–4, one port), then
//! back to two. New replicas must take at least 20 % of calls within 10 s; removing one
//! must fail no call.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stockmesh::proto::products::v1::GetProductRequest;
use stockmesh::resilience::ResilienceArgs;
use stockmesh_tests::dns::FakeDns;
use stockmesh_tests::fake::{FakeServer, Script};
use stockmesh_tests::{drill_settings, products_client};

const NAME: &str = "products.drill.test";

/// Calls from `workers` concurrent callers until stopped, counting failures.
struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(
        client: &stockmesh::proto::products::v1::product_service_client::ProductServiceClient<
            stockmesh::client::UpstreamChannel,
        >,
        workers: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|_| {
                let mut client = client.clone();
                let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let r = client
                            .get_product(GetProductRequest { id: "p".into() })
                            .await;
                        calls.fetch_add(1, Ordering::SeqCst);
                        if let Err(s) = r {
                            failures.lock().unwrap().push(format!(
                                "{:?}: {}",
                                s.code(),
                                s.message()
                            ));
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            calls,
            failures,
            tasks,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.calls.load(Ordering::SeqCst), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_name_scales_out_to_new_replicas_and_in_without_failures() {
    let dns = FakeDns::start().await;
    // One port for every replica, as on Kubernetes; the replicas differ by address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ips = [
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 4),
    ];
    let scripts = [Script::default(), Script::default(), Script::default()];
    let mut servers = Vec::new();
    for (ip, script) in ips.iter().zip(&scripts) {
        servers.push(FakeServer::start_at(SocketAddr::from((*ip, port)), script.clone()).await);
    }
    dns.set(NAME, &ips[..1]);

    let settings = ResilienceArgs {
        discovery_refresh_ms: 200,
        dns_nameserver: Some(dns.addr.to_string()),
        breaker_open_ms: 60_000,
        ..drill_settings()
    };
    let client = products_client(&[format!("dns:///{NAME}:{port}")], settings);
    let load = Load::start(&client, 4);

    // One replica: it takes everything.
    let start = Instant::now();
    while scripts[0].gets() < 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no calls reach the first replica"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(scripts[1].gets() + scripts[2].gets(), 0);

    // Three replicas: within 10 s, each takes at least 20 % of a window of calls.
    dns.set(NAME, &ips);
    let changed = Instant::now();
    let mut spread = None;
    while changed.elapsed() < Duration::from_secs(10) {
        let before: Vec<usize> = scripts.iter().map(Script::gets).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let window: Vec<usize> = scripts
            .iter()
            .zip(&before)
            .map(|(s, b)| s.gets() - b)
            .collect();
        let total: usize = window.iter().sum();
        if total >= 50 && window.iter().all(|n| *n * 5 >= total) {
            spread = Some((changed.elapsed(), window));
            break;
        }
    }
    let (took, window) = spread.unwrap_or_else(|| {
        panic!(
            "new replicas did not take ≥ 20 % each within 10 s: {:?}",
            scripts.iter().map(Script::gets).collect::<Vec<_>>()
        )
    });
    println!("scale-out 1 → 3: each replica ≥ 20 % after {took:?} (window {window:?})");

    // One replica leaves: DNS stops listing it, then it stops. No call fails, and the
    // calls that follow spread over the two that remain.
    dns.set(NAME, &[ips[0], ips[2]]);
    servers[1].stop().await;
    let before: Vec<usize> = scripts.iter().map(Script::gets).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (calls, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        scripts[0].gets() > before[0] && scripts[2].gets() > before[2],
        "the remaining replicas serve"
    );
    assert!(dns.queries() > 3, "the name was resolved again and again");
    println!("{calls} calls, 0 failed; DNS queries: {}", dns.queries());
}
