//! Integration tests of the products service: the real auth and products servers started
//! in-process on ephemeral ports, each test with fresh databases, called over real gRPC.
//! Every suite runs on SQLite and on PostgreSQL (`stockmesh::db_tests!`).

mod catalog;
mod limits;
mod pagination;
mod rbac;
mod service;
mod suppliers;
mod support;
