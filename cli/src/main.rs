//! `stockmesh`: one binary for every part of the mesh.
//!
//! * `stockmesh up` — every target in one process, SQLite under `./data` by default.
//! * `stockmesh serve <target>` — one target as its own process (Kubernetes, drills).
//! * `stockmesh migrate [target]` — apply database migrations and exit.
//! * `stockmesh certs [--dir DIR] [--force]` — a development CA and mesh certificates for
//!   `STOCKMESH_TLS_DIR` (README "Mutual TLS").
//!
//! Every setting is a flag and a `STOCKMESH_*` environment variable (see `--help`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stockmesh::{Config, Shutdown, Target};
use stockmesh_cli::mesh;

mod memory;

/// mimalloc instead of glibc's allocator: a call between services makes some 80 small
/// allocations (tonic, hyper, h2, the resilience stack), often freed on another worker
/// thread, where glibc's arenas are slow. In `benches/resilience.rs` it cuts the CPU per
/// call by about a fifth (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "stockmesh",
    version,
    about = "A gRPC service mesh: auth, products, inventory, orders and a gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run every target (or the listed ones) in this process.
    Up {
        /// Targets to run; all when omitted.
        #[arg(value_enum)]
        targets: Vec<Target>,
    },
    /// Run one target as its own process.
    Serve {
        #[arg(value_enum)]
        target: Target,
    },
    /// Apply database migrations of one service (all when omitted) and exit.
    Migrate {
        #[arg(value_enum)]
        target: Option<Target>,
    },
    /// Create a development CA and one certificate per mesh identity (auth, products,
    /// inventory, orders, gateway) for STOCKMESH_TLS_DIR.
    Certs {
        /// Where to write them; default STOCKMESH_TLS_DIR, else <data-dir>/tls.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Replace existing files (with a new CA).
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    memory::tune();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Within the runtime: the OTLP exporter (when configured) runs on it.
    let service_name = match &cli.command {
        Command::Serve { target } => format!("stockmesh-{}", target.name()),
        _ => "stockmesh".to_string(),
    };
    {
        let _rt = runtime.enter();
        stockmesh::telemetry::init(cli.config.log_format, &service_name);
    }
    let result = runtime.block_on(run(cli));
    {
        let _rt = runtime.enter();
        stockmesh::telemetry::shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Up { targets } => {
            let targets = if targets.is_empty() {
                Target::ALL.to_vec()
            } else {
                targets
            };
            run_mesh(cli.config, &targets, true).await
        }
        Command::Serve { target } => {
            if matches!(target, Target::Inventory | Target::Orders)
                && cli
                    .config
                    .events
                    .nats_url
                    .as_deref()
                    .is_none_or(|u| u.trim().is_empty())
            {
                tracing::warn!(
                    %target,
                    "STOCKMESH_NATS_URL is unset: events stay in this process; watchers on \
                     other replicas will not see changes; set STOCKMESH_NATS_URL"
                );
            }
            // A service process of its own serves its metrics on its admin port (under
            // `up`, the gateway's /metrics shows every in-process target).
            if let Some(port) = cli.config.metrics_port(target) {
                let addr = std::net::SocketAddr::new(cli.config.bind, port);
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot bind the admin port {addr}: {e}"))?;
                let shutdown = Shutdown::new();
                let admin =
                    tokio::spawn(stockmesh::metrics::serve_admin(listener, shutdown.clone()));
                let served = run_mesh(cli.config, &[target], false).await;
                shutdown.trigger();
                if let Ok(Err(e)) = admin.await {
                    tracing::warn!(error = %e, "admin endpoint failed");
                }
                return served;
            }
            run_mesh(cli.config, &[target], false).await
        }
        Command::Certs { dir, force } => {
            let dir = dir
                .or_else(|| cli.config.tls_dir().map(|d| d.to_path_buf()))
                .unwrap_or_else(|| cli.config.data_dir.join("tls"));
            let written = stockmesh_cli::certs::create(&dir, force)?;
            println!("wrote the mesh CA and certificates:");
            for f in &written.files {
                println!("  {}", f.display());
            }
            println!();
            println!(
                "run the mesh over mutual TLS with STOCKMESH_TLS_DIR={}",
                written.dir.display()
            );
            Ok(())
        }
        Command::Migrate { target } => {
            let targets = target.map_or(Target::SERVICES.to_vec(), |t| vec![t]);
            for t in targets {
                mesh::migrate(&cli.config, t)
                    .await
                    .map_err(|e| format!("migrating {t}: {e}"))?;
                println!(
                    "{t}: migrations applied ({})",
                    redact(&cli.config.database_url(t))
                );
            }
            Ok(())
        }
    }
}

async fn run_mesh(config: Config, targets: &[Target], banner: bool) -> Result<(), String> {
    let shutdown = Shutdown::new();
    let mesh = tokio::select! {
        m = mesh::start(config, targets, shutdown.clone()) => m.map_err(|e| e.to_string())?,
        () = stockmesh::shutdown::os_signal() => {
            shutdown.trigger();
            return Ok(());
        }
    };
    memory::steady();
    if banner {
        print_banner(&mesh);
    }
    mesh.run_until(stockmesh::shutdown::os_signal()).await
}

/// Hides the password of a database URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn print_banner(mesh: &mesh::Mesh) {
    let config = &mesh.config;
    println!();
    println!("stockmesh is up (Ctrl-C to stop)");
    println!();
    for (target, instance) in &mesh.instances {
        let what = match target {
            Target::Gateway => "gRPC, gRPC-web, REST".to_string(),
            t => format!("gRPC {}", t.grpc_service()),
        };
        let db = match target {
            Target::Gateway => String::new(),
            t => format!("  db {}", redact(&config.database_url(*t))),
        };
        println!(
            "  {:<10} {:<22} {what}{db}",
            target.name(),
            instance.addr.to_string()
        );
    }
    let scheme = if matches!(config.gateway_tls(), Ok(Some(_))) {
        "https"
    } else {
        "http"
    };
    if config.tls_dir().is_some() {
        println!();
        println!("  mutual TLS between services (STOCKMESH_TLS_DIR)");
    }
    if let Some(gw) = mesh.addr(Target::Gateway) {
        println!();
        println!("  REST:     curl {scheme}://{gw}/v1/products");
        println!(
            "  OpenAPI:  {scheme}://{gw}/openapi.json   readiness: {scheme}://{gw}/readyz   metrics: {scheme}://{gw}/metrics"
        );
    }
    println!();
    let pw = if config.auth.admin_password.is_some() {
        "the password in STOCKMESH_ADMIN_PASSWORD".to_string()
    } else {
        "the password printed above when the admin was first created".to_string()
    };
    println!("Sign in as {} with {pw}:", config.auth.admin_email);
    if let Some(gw) = mesh.addr(Target::Gateway) {
        println!(
            "  curl -s {scheme}://{gw}/v1/auth/login --json '{{\"email\":\"{}\",\"password\":\"…\"}}'",
            config.auth.admin_email
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://./data/a.db"), "sqlite://./data/a.db");
    }
}
