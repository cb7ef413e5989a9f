//! Integration tests of the auth service: the real server on an ephemeral port, a fresh
//! database per test, real gRPC clients. Every test runs on SQLite and PostgreSQL.

mod forged;
mod health;
mod rbac;
mod rotation;
mod sessions;
mod support;
mod users;
