//! Errors of the kernel itself (start-up: configuration, database, binding) and the helpers
//! every service uses to turn its own error enum into a `tonic::Status` consistently:
//! one message shape for bad fields, one policy for database failures.

use std::fmt::Display;

use sea_orm::{DbErr, SqlErr};
use tonic::Status;

/// Start-up and infrastructure errors of the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `INVALID_ARGUMENT` naming the offending field: `"email: must contain '@'"`.
pub fn invalid_field(field: &str, why: impl Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// True when the database refused a write because of a unique constraint.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// True when the database refused a write because of a foreign key.
pub fn is_foreign_key_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(SqlErr::ForeignKeyConstraintViolation(_))
    )
}

/// True when the failure is the database being unreachable rather than the statement
/// being wrong: callers may retry those.
pub fn is_unavailable(err: &DbErr) -> bool {
    matches!(err, DbErr::Conn(_) | DbErr::ConnectionAcquire(_))
}

/// The status for a database failure that the domain did not expect. Details are logged,
/// never sent to the client.
pub fn db_status(err: &DbErr) -> Status {
    if is_unavailable(err) {
        tracing::warn!(error = %err, "database unavailable");
        Status::unavailable("database unavailable")
    } else {
        tracing::error!(error = %err, "database error");
        Status::internal("internal error")
    }
}

/// The status for an unexpected internal failure; the cause is logged only.
pub fn internal(err: impl Display) -> Status {
    tracing::error!(error = %err, "internal error");
    Status::internal("internal error")
}
