//! The inventory service's one error type and its one mapping to gRPC status codes.
//!
//! Domain code returns [`Error`]; handlers turn it into a `tonic::Status` with `?`.
//! Database details are logged, never sent to clients.

use sea_orm::DbErr;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or out of range (INVALID_ARGUMENT naming the field).
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A unique name is taken, or an idempotency key was already used for a different
    /// request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the current state refuses it: short stock, an
    /// adjustment below reserved, an illegal reservation transition.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A dependency (ProductService) could not answer; nothing was written.
    #[error("{0}")]
    Unavailable(String),
    /// A state that the code and schema should make impossible.
    #[error("internal: {0}")]
    Internal(String),
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            why: why.into(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { field, why } => stockmesh::error::invalid_field(&field, why),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Internal(m) => stockmesh::error::internal(m),
            // The code checks every invariant before writing; a CHECK violation means a
            // race the conditional updates did not cover, which is still the caller's
            // precondition failing, not a server fault.
            Error::Db(e) if is_check_violation(&e) => {
                tracing::warn!(error = %e, "CHECK constraint refused a write");
                Status::failed_precondition("the change would break the stock invariant")
            }
            Error::Db(e) => stockmesh::error::db_status(&e),
        }
    }
}

/// True when the database refused a write because of a CHECK constraint.
pub fn is_check_violation(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::error::ErrorKind;
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_database_error() {
                Some(db) => matches!(db.kind(), ErrorKind::CheckViolation),
                None => false,
            }
        }
        _ => false,
    }
}
