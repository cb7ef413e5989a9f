//! The `stockmesh` binary's library: which function serves which target, and how to run
//! several targets in one process (`stockmesh up`, and the whole-mesh tests).
//!
//! Like Loki or Mimir, one binary runs any part of the system: `serve <target>` runs one,
//! `up` runs them all in one process. Both go through [`mesh::start`], so what tests start
//! is exactly what operators run.

pub mod certs;
pub mod mesh;
