//! Login flood: does an anonymous flood of failed logins grow auth's memory?
//!
//! Starts one real `stockmesh-drill serve auth` process (SQLite, a temp dir), samples its
//! RSS when idle, sends `STOCKMESH_FLOOD_LOGINS` (default 100 000) failed logins, each
//! with a unique, valid, 254-byte email and a 2 KB password (the cheapest attempt: no
//! Argon2), 32 at a time, plus 1 000 with 50 KB emails (refused by validation), then
//! samples RSS again. Prints both and the growth; the goal is ≤ 20 MB.
//!
//! Run: `cargo bench -p stockmesh-tests --bench login_flood` (add `--profile dev` for a
//! quicker build; the numbers in BENCHMARKS.md say which).

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::process::Command;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("STOCKMESH_FLOOD_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("stockmesh_flood_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_stockmesh-drill"))
        .args(["serve", "auth"])
        .env("STOCKMESH_DATA_DIR", &dir)
        .env("STOCKMESH_BIND", "127.0.0.1")
        .env("STOCKMESH_AUTH_PORT", port.to_string())
        .env("STOCKMESH_AUTH_METRICS_PORT", "0")
        .env("STOCKMESH_ADMIN_PASSWORD", "flood-admin-password")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start stockmesh-drill serve auth");
    let pid = child.id().expect("pid");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // The process binds its port a moment after it starts: retry until it answers.
    let give_up = Instant::now() + Duration::from_secs(60);
    while let Err(e) = stockmesh::health::wait_serving(
        addr,
        "stockmesh.auth.v1.AuthService",
        Duration::from_secs(60),
    )
    .await
    {
        assert!(Instant::now() < give_up, "auth did not start: {e}");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("auth exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let client = AuthServiceClient::new(channel);
    let password = "p".repeat(2048);
    let attempt = |email: String| {
        let mut c = client.clone();
        let password = password.clone();
        async move {
            c.login(LoginRequest { email, password })
                .await
                .err()
                .map(|s| s.code())
        }
    };
    // Warm-up: connections, allocator pools, the first throttle entries.
    futures::stream::iter(0..2_000)
        .map(|i| attempt(format!("warm{i}@example.com")))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(pid);

    let started = Instant::now();
    let local = "a".repeat(254 - "@flood.example.com".len() - 8);
    let codes = futures::stream::iter(0..n)
        .map(|i| attempt(format!("{local}{i:08}@flood.example.com")))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let long = "b".repeat(50 * 1024);
    let long_codes = futures::stream::iter(0..1_000)
        .map(|i| attempt(format!("{long}{i}@flood.example.com")))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    let after = rss_kib(pid);
    let refused = codes.iter().filter(|c| c.is_some()).count();
    let invalid = long_codes
        .iter()
        .filter(|c| **c == Some(tonic::Code::InvalidArgument))
        .count();
    println!(
        "login flood: {n} failed logins (unique 254-byte emails) + 1000 with 50 KB emails in {elapsed:.1?}"
    );
    println!("  refused: {refused}/{n}; 50 KB emails refused as INVALID_ARGUMENT: {invalid}/1000");
    println!(
        "  auth RSS idle {:.1} MB, after {:.1} MB, growth {:.1} MB (goal <= 20 MB)",
        idle as f64 / 1024.0,
        after as f64 / 1024.0,
        (after as f64 - idle as f64) / 1024.0
    );
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(refused, n, "every failed login is refused");
    assert_eq!(invalid, 1000, "every 50 KB email is INVALID_ARGUMENT");
    let growth_mb = (after as f64 - idle as f64) / 1024.0;
    assert!(
        growth_mb <= 20.0,
        "auth grew {growth_mb:.1} MB (goal <= 20 MB)"
    );
}
