//! Integration tests of the inventory service: the real auth, products and inventory
//! servers started in-process on ephemeral ports, talked to over gRPC exactly as other
//! services and clients do. Every test runs on SQLite and on PostgreSQL.

mod common;
mod events;
mod measurements;
mod rbac;
mod reports;
mod reservations;
mod stock;
mod sweeper;
mod tombstones;
mod warehouses;
mod watch;
