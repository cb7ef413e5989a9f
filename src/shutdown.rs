//! Graceful shutdown: one token that every server and background task watches.
//!
//! `stockmesh up` runs several servers in one process; a single SIGINT/SIGTERM must stop
//! all of them the same way. Each server drains in three steps ([`Drain`], see
//! [`crate::server`]): it reports NOT_SERVING at once and keeps answering for the drain
//! delay, so that clients watching its health and the kubelet's readiness probe move
//! traffic away before anything is refused; then it sends GOAWAY and stops accepting;
//! then in-flight calls get a bounded grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How a server drains on shutdown (`STOCKMESH_DRAIN_DELAY_MS`,
/// `STOCKMESH_SHUTDOWN_GRACE_MS`), and what its port requires: every service passes
/// `config.drain()` to [`crate::server::GrpcServer::serve`], so the mesh TLS settings
/// travel with it rather than through a parameter of every service's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// NOT_SERVING but still answering, before GOAWAY.
    pub delay: Duration,
    /// Time in-flight calls get after GOAWAY.
    pub grace: Duration,
    /// Mutual TLS (`STOCKMESH_TLS_DIR`); `None`: plaintext.
    pub tls: Option<Arc<crate::tls::MeshTls>>,
}

impl From<Duration> for Drain {
    fn from(grace: Duration) -> Self {
        Self::immediate(grace)
    }
}

impl Drain {
    /// No delay: GOAWAY at once, then `grace` (tests, and servers nobody balances over).
    pub fn immediate(grace: Duration) -> Self {
        Self {
            delay: Duration::ZERO,
            grace,
            tls: None,
        }
    }
}

/// A cloneable shutdown signal. Triggering it is idempotent.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything watching this token (and its children) to stop.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once [`Shutdown::trigger`] has been called.
    pub async fn wait(&self) {
        self.0.cancelled().await
    }

    /// A token that is triggered with this one but can also be triggered alone (e.g. to
    /// stop one service of an in-process mesh in a test).
    pub fn child(&self) -> Shutdown {
        Shutdown(self.0.child_token())
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (Kubernetes stop).
pub async fn os_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
