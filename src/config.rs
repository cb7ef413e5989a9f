//! Configuration: command-line flags with `STOCKMESH_*` environment overrides (clap), the
//! same set for every target so that `stockmesh up` and `stockmesh serve <target>` agree.
//!
//! Defaults make a laptop run work with no settings at all: SQLite files under `./data`,
//! every service on 127.0.0.1 with its well-known port, upstreams found on those ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::resilience::ResilienceArgs;
use crate::telemetry::LogFormat;

/// One deployable part of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Target {
    Auth,
    Products,
    Inventory,
    Orders,
    Gateway,
}

impl Target {
    /// The four gRPC services, in start-up order (each depends only on earlier ones).
    pub const SERVICES: [Target; 4] = [
        Target::Auth,
        Target::Products,
        Target::Inventory,
        Target::Orders,
    ];
    pub const ALL: [Target; 5] = [
        Target::Auth,
        Target::Products,
        Target::Inventory,
        Target::Orders,
        Target::Gateway,
    ];

    /// Short lower-case name: `auth`, `products`, … (used in env var names, db files, logs).
    pub fn name(self) -> &'static str {
        match self {
            Target::Auth => "auth",
            Target::Products => "products",
            Target::Inventory => "inventory",
            Target::Orders => "orders",
            Target::Gateway => "gateway",
        }
    }

    /// Fully-qualified gRPC service name, as used by health checks and routing.
    pub fn grpc_service(self) -> &'static str {
        match self {
            Target::Auth => "stockmesh.auth.v1.AuthService",
            Target::Products => "stockmesh.products.v1.ProductService",
            Target::Inventory => "stockmesh.inventory.v1.InventoryService",
            Target::Orders => "stockmesh.orders.v1.OrderService",
            Target::Gateway => "stockmesh.gateway.v1.Gateway",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Target::Auth => 50051,
            Target::Products => 50052,
            Target::Inventory => 50053,
            Target::Orders => 50054,
            Target::Gateway => 8080,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every setting of every target.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Directory for SQLite databases and the auth signing key when no URL is given.
    #[arg(
        long,
        env = "STOCKMESH_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Log format: human or json.
    #[arg(long, env = "STOCKMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// Address every server binds to.
    #[arg(long, env = "STOCKMESH_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST), global = true)]
    pub bind: IpAddr,
    /// Time in-flight calls get to finish after SIGINT/SIGTERM (milliseconds).
    #[arg(
        long,
        env = "STOCKMESH_SHUTDOWN_GRACE_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub shutdown_grace_ms: u64,
    /// After SIGINT/SIGTERM, time a server keeps answering while it reports NOT_SERVING,
    /// before it sends GOAWAY (milliseconds): long enough for health watchers and
    /// readiness probes to move traffic away.
    #[arg(
        long,
        env = "STOCKMESH_DRAIN_DELAY_MS",
        default_value_t = 2000,
        global = true
    )]
    pub drain_delay_ms: u64,
    /// Largest gRPC message a service accepts or sends, and its outbound clients accept
    /// (bytes); a larger one is RESOURCE_EXHAUSTED. The gateway's body cap
    /// (`STOCKMESH_MAX_BODY_BYTES`) has the same default.
    #[arg(
        long,
        env = "STOCKMESH_MAX_MESSAGE_BYTES",
        default_value_t = crate::message_limit::DEFAULT_MAX_MESSAGE_BYTES,
        global = true
    )]
    pub max_message_bytes: usize,

    #[command(flatten)]
    pub ports: Ports,
    #[command(flatten)]
    pub databases: Databases,
    #[command(flatten)]
    pub upstreams: Upstreams,
    #[command(flatten)]
    pub resilience: ResilienceArgs,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub inventory: InventorySettings,
    #[command(flatten)]
    pub orders: OrdersSettings,
    #[command(flatten)]
    pub gateway: GatewaySettings,
    #[command(flatten)]
    pub events: EventsSettings,
    #[command(flatten)]
    pub tls: TlsSettings,
}

/// Listening ports.
#[derive(Debug, Clone, clap::Args)]
pub struct Ports {
    #[arg(
        long,
        env = "STOCKMESH_AUTH_PORT",
        default_value_t = 50051,
        global = true
    )]
    pub auth_port: u16,
    #[arg(
        long,
        env = "STOCKMESH_PRODUCTS_PORT",
        default_value_t = 50052,
        global = true
    )]
    pub products_port: u16,
    #[arg(
        long,
        env = "STOCKMESH_INVENTORY_PORT",
        default_value_t = 50053,
        global = true
    )]
    pub inventory_port: u16,
    #[arg(
        long,
        env = "STOCKMESH_ORDERS_PORT",
        default_value_t = 50054,
        global = true
    )]
    pub orders_port: u16,
    #[arg(
        long,
        env = "STOCKMESH_GATEWAY_PORT",
        default_value_t = 8080,
        global = true
    )]
    pub gateway_port: u16,
    /// Admin port (`/metrics`, `/healthz`) of `serve auth`.
    #[arg(
        long,
        env = "STOCKMESH_AUTH_METRICS_PORT",
        default_value_t = 9101,
        global = true
    )]
    pub auth_metrics_port: u16,
    /// Admin port of `serve products`.
    #[arg(
        long,
        env = "STOCKMESH_PRODUCTS_METRICS_PORT",
        default_value_t = 9102,
        global = true
    )]
    pub products_metrics_port: u16,
    /// Admin port of `serve inventory`.
    #[arg(
        long,
        env = "STOCKMESH_INVENTORY_METRICS_PORT",
        default_value_t = 9103,
        global = true
    )]
    pub inventory_metrics_port: u16,
    /// Admin port of `serve orders`.
    #[arg(
        long,
        env = "STOCKMESH_ORDERS_METRICS_PORT",
        default_value_t = 9104,
        global = true
    )]
    pub orders_metrics_port: u16,
}

/// Database URLs; unset means `sqlite://<data-dir>/<service>.db`.
#[derive(Debug, Clone, clap::Args)]
pub struct Databases {
    #[arg(long, env = "STOCKMESH_AUTH_DATABASE_URL", global = true)]
    pub auth_database_url: Option<String>,
    #[arg(long, env = "STOCKMESH_PRODUCTS_DATABASE_URL", global = true)]
    pub products_database_url: Option<String>,
    #[arg(long, env = "STOCKMESH_INVENTORY_DATABASE_URL", global = true)]
    pub inventory_database_url: Option<String>,
    #[arg(long, env = "STOCKMESH_ORDERS_DATABASE_URL", global = true)]
    pub orders_database_url: Option<String>,
}

/// Where each upstream lives; a comma-separated list balances over several endpoints.
/// Unset means `http://127.0.0.1:<that service's port>`.
#[derive(Debug, Clone, clap::Args)]
pub struct Upstreams {
    #[arg(
        long,
        env = "STOCKMESH_AUTH_ADDRS",
        value_delimiter = ',',
        global = true
    )]
    pub auth_addrs: Vec<String>,
    #[arg(
        long,
        env = "STOCKMESH_PRODUCTS_ADDRS",
        value_delimiter = ',',
        global = true
    )]
    pub products_addrs: Vec<String>,
    #[arg(
        long,
        env = "STOCKMESH_INVENTORY_ADDRS",
        value_delimiter = ',',
        global = true
    )]
    pub inventory_addrs: Vec<String>,
    #[arg(
        long,
        env = "STOCKMESH_ORDERS_ADDRS",
        value_delimiter = ',',
        global = true
    )]
    pub orders_addrs: Vec<String>,
}

/// Auth service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// Email of the admin created when the auth database has none.
    #[arg(
        long,
        env = "STOCKMESH_ADMIN_EMAIL",
        default_value = "admin@stockmesh.local",
        global = true
    )]
    pub admin_email: String,
    /// Password of that admin; unset means a random one, printed once at start.
    #[arg(
        long,
        env = "STOCKMESH_ADMIN_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub admin_password: Option<String>,
    /// Lifetime of access tokens (seconds).
    #[arg(
        long,
        env = "STOCKMESH_ACCESS_TOKEN_TTL_SECS",
        default_value_t = 900,
        global = true
    )]
    pub access_token_ttl_secs: u64,
    /// Lifetime of refresh tokens (seconds).
    #[arg(long, env = "STOCKMESH_REFRESH_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600, global = true)]
    pub refresh_token_ttl_secs: u64,
    /// Login attempts allowed per (email, client) in a burst before RESOURCE_EXHAUSTED
    /// (ten times as many per email across all clients).
    #[arg(
        long,
        env = "STOCKMESH_LOGIN_BURST",
        default_value_t = 5,
        global = true
    )]
    pub login_burst: u32,
    /// Login attempts per (email, client) replenished per minute after the burst.
    #[arg(
        long,
        env = "STOCKMESH_LOGIN_PER_MINUTE",
        default_value_t = 10,
        global = true
    )]
    pub login_per_minute: u32,
    /// Most entries each login-throttle limiter keeps (least recently used evicted).
    #[arg(
        long,
        env = "STOCKMESH_LOGIN_THROTTLE_MAX_KEYS",
        default_value_t = 50_000,
        global = true
    )]
    pub login_throttle_max_keys: usize,
    /// Shared secret from which service identities (orders, inventory, gateway) sign in
    /// to auth. Unset: read from (or created in) `<data-dir>/service-secret`, which works
    /// for `up` and for several `serve` processes on one machine; set it on Kubernetes.
    #[arg(
        long,
        env = "STOCKMESH_SERVICE_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub service_secret: Option<String>,
}

/// Inventory service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct InventorySettings {
    /// Reservations neither committed nor released expire after this (seconds).
    #[arg(
        long,
        env = "STOCKMESH_RESERVATION_TTL_SECS",
        default_value_t = 900,
        global = true
    )]
    pub reservation_ttl_secs: u64,
    /// How often the expiry sweeper runs (milliseconds).
    #[arg(
        long,
        env = "STOCKMESH_RESERVATION_SWEEP_MS",
        default_value_t = 5000,
        global = true
    )]
    pub reservation_sweep_ms: u64,
    /// A product whose available quantity (in one warehouse) falls below this emits a
    /// `stock.low` event, unless SetLowStockThreshold gave it its own threshold.
    #[arg(
        long,
        env = "STOCKMESH_LOW_STOCK_THRESHOLD",
        default_value_t = 5,
        global = true
    )]
    pub low_stock_threshold: u64,
}

/// Orders service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct OrdersSettings {
    /// How often the saga reconciler runs (milliseconds).
    #[arg(
        long,
        env = "STOCKMESH_RECONCILE_INTERVAL_MS",
        default_value_t = 5000,
        global = true
    )]
    pub reconcile_interval_ms: u64,
    /// Age after which an unfinished order intent is reconciled (seconds).
    #[arg(
        long,
        env = "STOCKMESH_RECONCILE_AFTER_SECS",
        default_value_t = 30,
        global = true
    )]
    pub reconcile_after_secs: u64,
    /// Most open (not yet completed or cancelled) orders one customer may hold; at least 1.
    #[arg(
        long,
        env = "STOCKMESH_MAX_PENDING_ORDERS_PER_CUSTOMER",
        default_value_t = 20,
        global = true
    )]
    pub max_pending_orders_per_customer: u64,
    /// Largest quantity one order line may ask for; at least 1.
    #[arg(
        long,
        env = "STOCKMESH_MAX_QUANTITY_PER_LINE",
        default_value_t = 1000,
        global = true
    )]
    pub max_quantity_per_line: u64,
}

/// Gateway settings.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewaySettings {
    /// Allowed CORS origins (comma-separated; `*` allows any).
    #[arg(
        long,
        env = "STOCKMESH_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "*",
        global = true
    )]
    pub cors_origins: Vec<String>,
    /// Sustained requests per second allowed per client IP and per signed-in user.
    #[arg(
        long,
        env = "STOCKMESH_RATE_LIMIT_RPS",
        default_value_t = 100,
        global = true
    )]
    pub rate_limit_rps: u32,
    /// Burst above the sustained rate.
    #[arg(
        long,
        env = "STOCKMESH_RATE_LIMIT_BURST",
        default_value_t = 200,
        global = true
    )]
    pub rate_limit_burst: u32,
    /// Largest accepted request body (bytes); 413 on REST, RESOURCE_EXHAUSTED on gRPC.
    /// Defaults to the services' message limit (`STOCKMESH_MAX_MESSAGE_BYTES`), so a
    /// body the gateway lets through is one a service accepts.
    #[arg(long, env = "STOCKMESH_MAX_BODY_BYTES", default_value_t = crate::message_limit::DEFAULT_MAX_MESSAGE_BYTES, global = true)]
    pub max_body_bytes: usize,
    /// Proxies in front of the gateway whose `X-Forwarded-For` is believed
    /// (comma-separated IPs or CIDRs; empty: the TCP peer is the client).
    #[arg(
        long,
        env = "STOCKMESH_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<String>,
}

/// Mutual TLS between services and the gateway's browser TLS (README "Mutual TLS"; see
/// [`crate::tls`]). All unset: plaintext, as without these settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsSettings {
    /// Directory of the mesh CA and certificates: `ca.crt` and `<identity>/tls.crt`,
    /// `<identity>/tls.key` (what `stockmesh certs` writes, or cert-manager Secrets mounted
    /// per identity). Set: every service's gRPC port requires a client certificate from
    /// that CA, every call between services presents its caller's, and internal RPCs
    /// require a mesh identity (`spiffe://stockmesh/<service>`). Certificates are re-read
    /// when they change on disk.
    #[arg(long, env = "STOCKMESH_TLS_DIR", global = true)]
    pub tls_dir: Option<PathBuf>,
    /// With STOCKMESH_TLS_DIR set: a plaintext port of the auth service serving only
    /// `grpc.health.v1` (kubelet probes), NOT_SERVING with the TLS port on drain.
    #[arg(long, env = "STOCKMESH_AUTH_HEALTH_PORT", global = true)]
    pub auth_health_port: Option<u16>,
    /// Plaintext health port of the products service (with STOCKMESH_TLS_DIR).
    #[arg(long, env = "STOCKMESH_PRODUCTS_HEALTH_PORT", global = true)]
    pub products_health_port: Option<u16>,
    /// Plaintext health port of the inventory service (with STOCKMESH_TLS_DIR).
    #[arg(long, env = "STOCKMESH_INVENTORY_HEALTH_PORT", global = true)]
    pub inventory_health_port: Option<u16>,
    /// Plaintext health port of the orders service (with STOCKMESH_TLS_DIR).
    #[arg(long, env = "STOCKMESH_ORDERS_HEALTH_PORT", global = true)]
    pub orders_health_port: Option<u16>,
    /// PEM certificate chain the gateway presents to browsers; with
    /// STOCKMESH_GATEWAY_TLS_KEY, the gateway's port speaks HTTPS (h2 and HTTP/1.1).
    #[arg(long, env = "STOCKMESH_GATEWAY_TLS_CERT", global = true)]
    pub gateway_tls_cert: Option<PathBuf>,
    /// PEM private key of STOCKMESH_GATEWAY_TLS_CERT.
    #[arg(long, env = "STOCKMESH_GATEWAY_TLS_KEY", global = true)]
    pub gateway_tls_key: Option<PathBuf>,
}

/// Event settings (outbox relay, bus, live feeds; see [`crate::events`]).
#[derive(Debug, Clone, clap::Args)]
pub struct EventsSettings {
    /// NATS server(s) of the event bus (`nats://host:4222`, comma-separated for a
    /// cluster). Unset: events go through an in-process broadcast, which reaches
    /// watchers in this process only.
    #[arg(long, env = "STOCKMESH_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// JetStream stream holding the events (created at start when absent).
    #[arg(
        long,
        env = "STOCKMESH_NATS_STREAM",
        default_value = "STOCKMESH",
        global = true
    )]
    pub nats_stream: String,
    /// First token of every event subject: `<prefix>.inventory.stock_changed`, ….
    #[arg(
        long,
        env = "STOCKMESH_NATS_SUBJECT_PREFIX",
        default_value = "stockmesh",
        global = true
    )]
    pub nats_subject_prefix: String,
    /// How often the outbox relay looks for unpublished events besides being woken by
    /// each commit (milliseconds).
    #[arg(
        long,
        env = "STOCKMESH_OUTBOX_POLL_MS",
        default_value_t = 1000,
        global = true
    )]
    pub outbox_poll_ms: u64,
    /// Events one watcher may have waiting before it is told it lagged and detached.
    #[arg(
        long,
        env = "STOCKMESH_WATCH_BUFFER",
        default_value_t = 256,
        global = true
    )]
    pub watch_buffer: usize,
    /// Recent events each feed keeps so a watcher can resume after one of them.
    #[arg(
        long,
        env = "STOCKMESH_EVENT_RETAIN",
        default_value_t = 1024,
        global = true
    )]
    pub event_retain: usize,
    /// The in-process bus of this configuration and its clones (embedded mode): every
    /// target started from one `Config` shares it, separately built ones do not.
    #[arg(skip)]
    pub embedded: crate::events::EmbeddedSlot,
}

#[derive(Parser)]
struct Standalone {
    #[command(flatten)]
    config: Config,
}

impl Config {
    /// Configuration from the environment alone (no flags), with defaults for the rest.
    pub fn from_env() -> Result<Self, clap::Error> {
        Standalone::try_parse_from(["stockmesh"]).map(|s| s.config)
    }

    pub fn port(&self, target: Target) -> u16 {
        match target {
            Target::Auth => self.ports.auth_port,
            Target::Products => self.ports.products_port,
            Target::Inventory => self.ports.inventory_port,
            Target::Orders => self.ports.orders_port,
            Target::Gateway => self.ports.gateway_port,
        }
    }

    /// The admin (metrics) port of a `serve <target>` process; `None` for the gateway,
    /// which serves `/metrics` on its own port.
    pub fn metrics_port(&self, target: Target) -> Option<u16> {
        match target {
            Target::Auth => Some(self.ports.auth_metrics_port),
            Target::Products => Some(self.ports.products_metrics_port),
            Target::Inventory => Some(self.ports.inventory_metrics_port),
            Target::Orders => Some(self.ports.orders_metrics_port),
            Target::Gateway => None,
        }
    }

    pub fn set_port(&mut self, target: Target, port: u16) {
        let slot = match target {
            Target::Auth => &mut self.ports.auth_port,
            Target::Products => &mut self.ports.products_port,
            Target::Inventory => &mut self.ports.inventory_port,
            Target::Orders => &mut self.ports.orders_port,
            Target::Gateway => &mut self.ports.gateway_port,
        };
        *slot = port;
    }

    pub fn listen_addr(&self, target: Target) -> SocketAddr {
        SocketAddr::new(self.bind, self.port(target))
    }

    /// Database URL of a service: explicit setting, else a SQLite file in the data dir.
    pub fn database_url(&self, target: Target) -> String {
        let explicit = match target {
            Target::Auth => &self.databases.auth_database_url,
            Target::Products => &self.databases.products_database_url,
            Target::Inventory => &self.databases.inventory_database_url,
            Target::Orders => &self.databases.orders_database_url,
            Target::Gateway => &None,
        };
        explicit
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/{}.db", self.data_dir.display(), target.name()))
    }

    pub fn set_database_url(&mut self, target: Target, url: impl Into<String>) {
        let url = Some(url.into());
        match target {
            Target::Auth => self.databases.auth_database_url = url,
            Target::Products => self.databases.products_database_url = url,
            Target::Inventory => self.databases.inventory_database_url = url,
            Target::Orders => self.databases.orders_database_url = url,
            Target::Gateway => {}
        }
    }

    /// Endpoints of an upstream service, as `http://host:port` URIs.
    pub fn upstream_addrs(&self, target: Target) -> Vec<String> {
        let explicit = match target {
            Target::Auth => &self.upstreams.auth_addrs,
            Target::Products => &self.upstreams.products_addrs,
            Target::Inventory => &self.upstreams.inventory_addrs,
            Target::Orders => &self.upstreams.orders_addrs,
            Target::Gateway => return Vec::new(),
        };
        let addrs: Vec<String> = explicit
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.contains("://") {
                    a.to_string()
                } else {
                    format!("http://{a}")
                }
            })
            .collect();
        if addrs.is_empty() {
            let host = if self.bind.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                self.bind
            };
            vec![format!(
                "http://{}",
                SocketAddr::new(host, self.port(target))
            )]
        } else {
            addrs
        }
    }

    pub fn set_upstream_addrs(&mut self, target: Target, addrs: Vec<String>) {
        match target {
            Target::Auth => self.upstreams.auth_addrs = addrs,
            Target::Products => self.upstreams.products_addrs = addrs,
            Target::Inventory => self.upstreams.inventory_addrs = addrs,
            Target::Orders => self.upstreams.orders_addrs = addrs,
            Target::Gateway => {}
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// How servers drain on shutdown — and, with mTLS on, what their port requires
    /// ([`crate::shutdown::Drain::tls`]), so that every service's `serve` gets it.
    pub fn drain(&self) -> crate::shutdown::Drain {
        crate::shutdown::Drain {
            delay: Duration::from_millis(self.drain_delay_ms),
            grace: self.shutdown_grace(),
            tls: self.mesh_tls().map(std::sync::Arc::new),
        }
    }

    /// `STOCKMESH_TLS_DIR`, when set (and not empty).
    pub fn tls_dir(&self) -> Option<&std::path::Path> {
        self.tls
            .tls_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty())
    }

    /// The mesh TLS settings servers need; `None` with mTLS off.
    pub fn mesh_tls(&self) -> Option<crate::tls::MeshTls> {
        let dir = self.tls_dir()?;
        Some(crate::tls::MeshTls {
            dir: dir.to_path_buf(),
            bind: self.bind,
            health_ports: Target::SERVICES
                .into_iter()
                .filter_map(|t| self.health_port(t).map(|p| (t, p)))
                .collect(),
        })
    }

    /// The gateway's browser TLS pair (`STOCKMESH_GATEWAY_TLS_CERT`, `_KEY`): both or
    /// neither.
    pub fn gateway_tls(&self) -> crate::Result<Option<(&std::path::Path, &std::path::Path)>> {
        fn set(p: &Option<PathBuf>) -> Option<&std::path::Path> {
            p.as_deref().filter(|p| !p.as_os_str().is_empty())
        }
        match (
            set(&self.tls.gateway_tls_cert),
            set(&self.tls.gateway_tls_key),
        ) {
            (Some(crt), Some(key)) => Ok(Some((crt, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(crate::Error::Config(
                "STOCKMESH_GATEWAY_TLS_CERT is set but STOCKMESH_GATEWAY_TLS_KEY is not".into(),
            )),
            (None, Some(_)) => Err(crate::Error::Config(
                "STOCKMESH_GATEWAY_TLS_KEY is set but STOCKMESH_GATEWAY_TLS_CERT is not".into(),
            )),
        }
    }

    /// The plaintext health port of `target` (`STOCKMESH_<SVC>_HEALTH_PORT`); only used
    /// with mTLS on.
    pub fn health_port(&self, target: Target) -> Option<u16> {
        match target {
            Target::Auth => self.tls.auth_health_port,
            Target::Products => self.tls.products_health_port,
            Target::Inventory => self.tls.inventory_health_port,
            Target::Orders => self.tls.orders_health_port,
            Target::Gateway => None,
        }
    }

    pub fn set_health_port(&mut self, target: Target, port: Option<u16>) {
        match target {
            Target::Auth => self.tls.auth_health_port = port,
            Target::Products => self.tls.products_health_port = port,
            Target::Inventory => self.tls.inventory_health_port = port,
            Target::Orders => self.tls.orders_health_port = port,
            Target::Gateway => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_well_known_ports_and_sqlite_files() {
        let c = Config::from_env().unwrap();
        assert_eq!(c.port(Target::Orders), 50054);
        assert_eq!(c.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(c.gateway.max_body_bytes, c.max_message_bytes);
        assert!(c.database_url(Target::Auth).ends_with("/auth.db"));
        assert_eq!(
            c.upstream_addrs(Target::Products),
            vec!["http://127.0.0.1:50052".to_string()]
        );
    }

    #[test]
    fn explicit_addresses_get_a_scheme() {
        let mut c = Config::from_env().unwrap();
        c.set_upstream_addrs(
            Target::Inventory,
            vec!["10.0.0.1:1".into(), " http://b:2 ".into()],
        );
        assert_eq!(
            c.upstream_addrs(Target::Inventory),
            vec!["http://10.0.0.1:1".to_string(), "http://b:2".to_string()]
        );
    }
}
