//! The auth service's one error type and its one mapping to `tonic::Status`.
//!
//! Messages are written for the client; causes of internal failures (database, crypto)
//! are logged by the kernel helpers and never sent.

use sea_orm::DbErr;
use stockmesh::error::{db_status, internal, invalid_field};
use tonic::Status;

/// Everything an auth operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// Unknown email or wrong password; one message for both so callers cannot probe
    /// which emails exist.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// A service-token proof is wrong, stale or replayed.
    #[error("service credential refused: {0}")]
    ServiceCredentialRefused(String),
    /// Service identities do not use Login.
    #[error("email: service identities sign in with IssueServiceToken, not Login")]
    ServiceLogin,
    #[error("too many failed logins for this email; retry later")]
    TooManyFailedLogins,
    /// Unknown, expired, revoked or already rotated refresh token.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A rotated refresh token was presented again: the session is revoked.
    #[error("refresh token was already used; the session has been revoked, sign in again")]
    RefreshTokenReused,
    #[error("access token does not belong to an existing user")]
    UnknownSubject,
    #[error("a user with this email already exists")]
    EmailTaken,
    #[error("user {0} not found")]
    UserNotFound(String),
    #[error("cannot remove the admin role from the last admin")]
    LastAdmin,
    /// The service has not finished starting (migrations, keys, bootstrap).
    #[error("auth is starting; retry shortly")]
    NotReady,
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// A start-up setting cannot be used (e.g. the admin email or the service secret).
    #[error("configuration: {0}")]
    Config(String),
    /// Hashing, signing or key handling failed.
    #[error("crypto: {0}")]
    Crypto(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::InvalidField { field, reason } => invalid_field(field, reason),
            Error::InvalidCredentials
            | Error::InvalidRefreshToken
            | Error::RefreshTokenReused
            | Error::UnknownSubject
            | Error::ServiceCredentialRefused(_) => Status::unauthenticated(e.to_string()),
            Error::ServiceLogin => invalid_field(
                "email",
                "service identities sign in with IssueServiceToken, not Login",
            ),
            Error::TooManyFailedLogins => Status::resource_exhausted(e.to_string()),
            Error::EmailTaken => Status::already_exists(e.to_string()),
            Error::UserNotFound(_) => Status::not_found(e.to_string()),
            Error::LastAdmin => Status::failed_precondition(e.to_string()),
            Error::NotReady => Status::unavailable(e.to_string()),
            Error::Db(db) => db_status(db),
            Error::Crypto(_) | Error::Config(_) => internal(&e),
        }
    }
}

impl From<Error> for stockmesh::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Db(db) => stockmesh::Error::Db(db),
            Error::Config(msg) => stockmesh::Error::Config(msg),
            other => stockmesh::Error::Config(other.to_string()),
        }
    }
}
