//! Starting targets in-process.
//!
//! Every listener is bound *before* any server starts, so ephemeral ports (port 0, used by
//! tests) are known up front and every upstream address in the configuration points at a
//! real socket. Targets then start in dependency order and each is awaited until its health
//! reports SERVING (the readiness signal), so `up` prints endpoints only when they work.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use stockmesh::{Config, Shutdown, Target};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long a target may take to become SERVING (migrations included).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The entry point of one target.
pub type ServeFn =
    fn(Arc<Config>, TcpListener, Shutdown) -> BoxFuture<'static, stockmesh::Result<()>>;

/// The `serve` function of `target`.
pub fn serve_fn(target: Target) -> ServeFn {
    match target {
        Target::Auth => |c, l, s| Box::pin(stockmesh_auth::serve(c, l, s)),
        Target::Products => |c, l, s| Box::pin(stockmesh_products::serve(c, l, s)),
        Target::Inventory => |c, l, s| Box::pin(stockmesh_inventory::serve(c, l, s)),
        Target::Orders => |c, l, s| Box::pin(stockmesh_orders::serve(c, l, s)),
        Target::Gateway => |c, l, s| Box::pin(stockmesh_gateway::serve(c, l, s)),
    }
}

/// Runs the migrations of `target` (the gateway has no database).
pub async fn migrate(config: &Config, target: Target) -> stockmesh::Result<()> {
    match target {
        Target::Auth => stockmesh_auth::migrate(config).await,
        Target::Products => stockmesh_products::migrate(config).await,
        Target::Inventory => stockmesh_inventory::migrate(config).await,
        Target::Orders => stockmesh_orders::migrate(config).await,
        Target::Gateway => Ok(()),
    }
}

/// One running target.
pub struct Instance {
    pub addr: SocketAddr,
    /// Stops only this target (it is also stopped by the mesh's shutdown).
    pub shutdown: Shutdown,
    pub task: JoinHandle<stockmesh::Result<()>>,
}

/// Targets running in this process.
pub struct Mesh {
    pub config: Arc<Config>,
    pub shutdown: Shutdown,
    pub instances: BTreeMap<Target, Instance>,
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for {target}: {source}")]
    Bind {
        target: Target,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{target} failed to start: {source}")]
    Failed {
        target: Target,
        source: stockmesh::Error,
    },
    #[error("{target} did not become ready: {reason}")]
    NotReady { target: Target, reason: String },
}

/// Binds every target's port, starts them in order and waits for each to be SERVING.
/// Ports set to 0 get an ephemeral port, and the configuration is updated so that
/// upstreams find each other.
pub async fn start(
    mut config: Config,
    targets: &[Target],
    shutdown: Shutdown,
) -> Result<Mesh, StartError> {
    let mut targets = targets.to_vec();
    targets.sort();
    targets.dedup();

    let mut listeners = Vec::with_capacity(targets.len());
    for &target in &targets {
        let addr = config.listen_addr(target);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                target,
                addr,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind {
            target,
            addr,
            source,
        })?;
        config.set_port(target, bound.port());
        listeners.push((target, listener, bound));
    }
    // Upstreams not overridden explicitly follow the (possibly ephemeral) local ports.
    let config = Arc::new(config);

    let mut mesh = Mesh {
        config: config.clone(),
        shutdown: shutdown.clone(),
        instances: BTreeMap::new(),
    };
    for (target, listener, addr) in listeners {
        let own = shutdown.child();
        let mut task = tokio::spawn(serve_fn(target)(config.clone(), listener, own.clone()));
        let ready = ready(&config, target, addr);
        // A target that fails while starting must not leave us waiting for the timeout.
        let outcome = tokio::select! {
            r = ready => r.map_err(|reason| StartError::NotReady { target, reason }),
            joined = &mut task => {
                let source = match joined {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => stockmesh::Error::Config("stopped before it was ready".into()),
                    Err(e) => stockmesh::Error::Config(format!("panicked: {e}")),
                };
                Err(StartError::Failed { target, source })
            }
        };
        mesh.instances.insert(
            target,
            Instance {
                addr,
                shutdown: own,
                task,
            },
        );
        if let Err(e) = outcome {
            if let StartError::Failed { .. } = e {
                mesh.instances.remove(&target);
            }
            mesh.stop().await;
            return Err(e);
        }
        tracing::info!(%target, %addr, "ready");
    }
    Ok(mesh)
}

/// Waits until `target` at `addr` is SERVING: over mTLS (as the target's own identity)
/// when the services run it; over HTTPS trusting exactly its certificate when the gateway
/// terminates browser TLS.
async fn ready(config: &Config, target: Target, addr: SocketAddr) -> Result<(), String> {
    let service = target.grpc_service();
    if target == Target::Gateway {
        let Some((crt, _)) = config.gateway_tls().map_err(|e| e.to_string())? else {
            return stockmesh::health::wait_serving(addr, service, READY_TIMEOUT).await;
        };
        let tls = stockmesh::tls::pinned_client_config(crt).map_err(|e| e.to_string())?;
        return stockmesh::health::wait_serving_via(
            stockmesh::client::ClientTls::from_config(tls).connect(&format!("http://{addr}")),
            &addr.to_string(),
            service,
            READY_TIMEOUT,
        )
        .await;
    }
    match config.tls_dir() {
        Some(dir) => {
            let tls = stockmesh::client::ClientTls::new(dir, target.name(), target.name())
                .map_err(|e| e.to_string())?;
            let uri = format!("http://{addr}");
            stockmesh::health::wait_serving_via(
                tls.connect(&uri),
                &addr.to_string(),
                service,
                READY_TIMEOUT,
            )
            .await
        }
        _ => stockmesh::health::wait_serving(addr, service, READY_TIMEOUT).await,
    }
}

impl Mesh {
    pub fn addr(&self, target: Target) -> Option<SocketAddr> {
        self.instances.get(&target).map(|i| i.addr)
    }

    /// Waits until any target stops (an error) or `signal` completes, then stops all of
    /// them. Returns the first error any target reported.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), String> {
        let mut first_error = None;
        {
            let tasks = futures::future::select_all(
                self.instances
                    .iter_mut()
                    .map(|(t, i)| Box::pin(async move { (*t, (&mut i.task).await) })),
            );
            tokio::select! {
                () = signal => {}
                ((target, joined), _, _) = tasks => {
                    let msg = match joined {
                        Ok(Ok(())) => format!("{target} stopped unexpectedly"),
                        Ok(Err(e)) => format!("{target} failed: {e}"),
                        Err(e) => format!("{target} panicked: {e}"),
                    };
                    tracing::error!("{msg}; stopping the mesh");
                    first_error = Some(msg);
                    self.instances.remove(&target);
                }
            }
        }
        if let Some(e) = self.stop_collect().await {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every target and waits for them.
    pub async fn stop(self) {
        if let Some(e) = self.stop_collect().await {
            tracing::error!("{e}");
        }
    }

    async fn stop_collect(mut self) -> Option<String> {
        self.shutdown.trigger();
        let mut first = None;
        // Reverse order: callers stop before the services they call.
        while let Some((target, instance)) = self.instances.pop_last() {
            match instance.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first.get_or_insert(format!("{target} failed while stopping: {e}"));
                }
                Err(e) => {
                    first.get_or_insert(format!("{target} panicked: {e}"));
                }
            }
        }
        first
    }
}
