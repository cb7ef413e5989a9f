//! The products service's one error type, and its one mapping to gRPC status codes.
//!
//! Domain code returns [`Error`]; handlers turn it into a [`Status`] with `?`. Messages of
//! client errors name the field or the ids concerned; database failures are logged and
//! reported without detail (see [`stockmesh::error::db_status`]).

use sea_orm::DbErr;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed → INVALID_ARGUMENT `"<field>: <why>"`.
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// The named resource does not exist → NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// A unique field already holds this value → ALREADY_EXISTS.
    #[error("{what} with {field} {value:?} already exists")]
    AlreadyExists {
        what: &'static str,
        field: &'static str,
        value: String,
    },
    /// The request is well-formed but the stored state forbids it (unknown supplier,
    /// supplier still in use) → FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(String),
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
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidField { field, reason } => {
                stockmesh::error::invalid_field(&field, reason)
            }
            Error::NotFound(_) => Status::not_found(err.to_string()),
            Error::AlreadyExists { .. } => Status::already_exists(err.to_string()),
            Error::FailedPrecondition(msg) => Status::failed_precondition(msg),
            Error::Db(e) => stockmesh::error::db_status(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn codes_and_messages() {
        let s = Status::from(Error::invalid("sku", "required"));
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "sku: required")
        );
        let s = Status::from(Error::AlreadyExists {
            what: "product",
            field: "sku",
            value: "A-1".into(),
        });
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(s.message(), "product with sku \"A-1\" already exists");
        assert_eq!(
            Status::from(Error::NotFound("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(Error::FailedPrecondition("x".into())).code(),
            Code::FailedPrecondition
        );
        let s = Status::from(Error::Db(DbErr::Custom("secret detail".into())));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret"));
    }
}
