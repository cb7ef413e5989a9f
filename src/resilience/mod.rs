//! The outbound resilience stack, one tower layer per file. [`crate::client`] assembles
//! them in one place, so their order reads in a few lines.

pub mod deadline;
mod settings;

pub use settings::ResilienceArgs;
