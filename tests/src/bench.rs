//! What the mesh benches share: a closed-loop load runner that records every call's
//! latency, and a process's CPU time and resident memory read from `/proc`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (0 when none could be bound).
pub fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// user + system CPU time of `pid`, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command: state is 0, utime 11, stime 12 (clock ticks, 100 Hz).
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of `pid` in MB (VmRSS).
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What one load run did.
#[derive(Debug, Clone)]
pub struct Load {
    pub ok: usize,
    pub errors: usize,
    pub secs: f64,
    /// Latencies of the successful calls, sorted.
    pub latencies: Vec<Duration>,
}

impl Load {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    /// The `q` quantile (0..=1) of the successful calls' latency.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// Runs `call(client, seq)` from `clients` concurrent loops for `secs`; a call answers
/// whether it succeeded.
pub async fn run<F, Fut>(clients: usize, secs: f64, call: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (call, stop) = (call.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if call(client, seq).await {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                    seq += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Load {
        ok: latencies.len(),
        errors,
        secs,
        latencies,
    }
}
