//! # stockmesh kernel
//!
//! Everything the four services and the gateway share, and nothing that belongs to one of
//! them: the generated protobuf code, configuration, telemetry, database connection and
//! migrations, health and reflection, access-token verification, error helpers, paging,
//! graceful shutdown and the outbound client with its resilience stack.
//!
//! Dependencies point one way: services and the gateway depend on this crate; it depends on
//! none of them.
#![forbid(unsafe_code)]

pub mod authn;
pub mod client;
pub mod config;
pub mod db;
pub mod discovery;
pub mod error;
pub mod events;
pub mod health;
pub mod identity;
pub mod message_limit;
pub mod metrics;
pub mod pagination;
pub mod proto;
pub mod resilience;
pub mod server;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use config::{Config, Target};
pub use error::{Error, Result};
pub use shutdown::{Drain, Shutdown};
