//! The orders service's one error type, and its one mapping to gRPC status codes.
//!
//! Domain code returns [`Error`]; handlers turn it into a [`Status`] with `?`. Failures of
//! upstream services are classified once, in [`Error::upstream`]: business refusals
//! (short stock, unknown product) keep their code and message, while anything that says
//! "the dependency could not answer" becomes UNAVAILABLE, and a refused service credential
//! (a deployment mistake, not the caller's) becomes INTERNAL.

use sea_orm::DbErr;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed → INVALID_ARGUMENT `"<field>: <why>"`.
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// An upstream refused a value of the request; its message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The order (or a product) does not exist, or the caller may not know it does →
    /// NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// The caller's role does not allow this → PERMISSION_DENIED.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is valid but the state forbids it (short stock, completed order, mixed
    /// currencies) → FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A per-customer quota is used up (too many open orders) → RESOURCE_EXHAUSTED.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Lost a race with another call on the same order or request id; retrying is safe →
    /// ABORTED.
    #[error("{0}")]
    Aborted(String),
    /// A dependency (auth, products, inventory) could not answer → UNAVAILABLE.
    #[error("{0}")]
    Unavailable(String),
    /// Something that should not happen; logged, reported without detail → INTERNAL.
    #[error("{0}")]
    Internal(String),
    /// Anything the database refused that the domain did not anticipate.
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Classifies a failed call to the upstream `service`.
    pub fn upstream(service: &str, status: Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument(message),
            Code::NotFound => Self::NotFound(message),
            Code::FailedPrecondition => Self::FailedPrecondition(message),
            Code::Aborted => Self::Aborted(message),
            Code::Unauthenticated | Code::PermissionDenied | Code::AlreadyExists => {
                Self::Internal(format!("{service} refused the orders service: {status:?}"))
            }
            // Unavailable, DeadlineExceeded, ResourceExhausted, Cancelled, Unknown
            // (transport failures), Internal, …: the dependency could not do its part.
            _ => Self::Unavailable(format!("{service} unavailable: {message}")),
        }
    }

    /// Whether the failure says nothing about what the upstream did (it may or may not
    /// have applied the call).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Internal(_))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidField { field, reason } => {
                stockmesh::error::invalid_field(&field, reason)
            }
            Error::InvalidArgument(msg) => Status::invalid_argument(msg),
            Error::NotFound(msg) => Status::not_found(msg),
            Error::PermissionDenied(msg) => Status::permission_denied(msg),
            Error::FailedPrecondition(msg) => Status::failed_precondition(msg),
            Error::ResourceExhausted(msg) => Status::resource_exhausted(msg),
            Error::Aborted(msg) => Status::aborted(msg),
            Error::Unavailable(msg) => Status::unavailable(msg),
            Error::Internal(msg) => stockmesh::error::internal(msg),
            Error::Db(e) => stockmesh::error::db_status(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let s = Status::from(Error::invalid("items[0].quantity", "must be > 0"));
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "items[0].quantity: must be > 0")
        );
        let s = Status::from(Error::Db(DbErr::Custom("secret detail".into())));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret"));
        let s = Status::from(Error::ResourceExhausted("too many open orders".into()));
        assert_eq!(
            (s.code(), s.message()),
            (Code::ResourceExhausted, "too many open orders")
        );
        let s = Status::from(Error::Internal("secret detail".into()));
        assert!(!s.message().contains("secret"));
    }

    #[test]
    fn upstream_business_errors_keep_their_code_and_transport_errors_become_unavailable() {
        let short = Error::upstream("inventory", Status::failed_precondition("only 2 left"));
        assert_eq!(Status::from(short).message(), "only 2 left");
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Unknown] {
            let e = Error::upstream("inventory", Status::new(code, "x"));
            assert!(e.outcome_unknown());
            assert_eq!(Status::from(e).code(), Code::Unavailable);
        }
        let e = Error::upstream("products", Status::permission_denied("no"));
        assert_eq!(Status::from(e).code(), Code::Internal);
        let e = Error::upstream("products", Status::not_found("p1"));
        assert_eq!(Status::from(e).code(), Code::NotFound);
    }
}
