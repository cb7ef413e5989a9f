//! Whole-mesh tests and fault drills, on real gRPC over loopback.
//!
//! The layer drills put the real outbound stack (`stockmesh::client::ClientBuilder`) in
//! front of a controllable fake upstream ([`stockmesh_tests::fake`]) and break it on
//! purpose: kill it, slow it down, make it answer errors. Timing assertions are
//! orders of magnitude (fail-fast in milliseconds against a deadline of seconds), never
//! tight numbers; the speed goals themselves live in `benches/resilience.rs`.

mod balance;
mod breaker;
mod bulkhead;
mod console;
mod deadline;
mod discovery;
mod events;
mod health;
mod lost_response;
mod metrics;
mod process;
mod retry;
mod rolling;
mod startup;
mod tls;
mod traces;
