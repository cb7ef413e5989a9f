//! The gateway's one error type, and how it looks on each protocol: a `google.rpc.Status`
//! JSON body with the mapped HTTP status for REST, a trailers-only `grpc-status` response
//! for gRPC and gRPC-web.
//!
//! The gRPC → HTTP mapping is the one in API.md (Google's standard mapping, with
//! FAILED_PRECONDITION as 400).

use std::time::Duration;

use axum::body::Body;
use http::{HeaderValue, Method, Response, StatusCode, header};
use tonic::{Code, Status};

/// Everything that can end a request at the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request (path, query or JSON body) is malformed.
    #[error("{field}: {why}")]
    BadField { field: String, why: String },
    /// The JSON body is not JSON at all.
    #[error("request body: {0}")]
    BadBody(String),
    #[error("no route for {method} {path}")]
    NotFound { method: Method, path: String },
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        method: Method,
        path: String,
        allow: Vec<Method>,
    },
    #[error("unsupported content type {0:?}: use application/json")]
    UnsupportedMediaType(String),
    /// `Accept` admits nothing the route answers ([`crate::csv`]) → 406.
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("rate limit exceeded; retry in {}s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// A status from an upstream, or from the gateway's own checks (authentication).
    #[error("{}", .0.message())]
    Status(#[from] Status),
}

impl Error {
    pub fn field(field: impl Into<String>, why: impl std::fmt::Display) -> Self {
        Error::BadField {
            field: field.into(),
            why: why.to_string(),
        }
    }

    /// The gRPC code clients see.
    pub fn code(&self) -> Code {
        match self {
            Error::BadField { .. }
            | Error::BadBody(_)
            | Error::UnsupportedMediaType(_)
            | Error::NotAcceptable(_) => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::MethodNotAllowed { .. } => Code::Unimplemented,
            Error::TooLarge { .. } | Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::Status(s) => s.code(),
        }
    }

    /// The HTTP status of the REST response.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => http_status(self.code()),
        }
    }

    /// The REST response: `google.rpc.Status` JSON.
    pub fn into_rest(self) -> Response<Body> {
        let status = self.http_status();
        let body = serde_json::json!({
            "code": self.code() as i32,
            "message": self.to_string(),
            "details": [],
        });
        let mut resp = Response::new(Body::from(body.to_string()));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            Error::RateLimited { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs()),
                );
            }
            Error::MethodNotAllowed { allow, .. } => {
                let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
                if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                    headers.insert(header::ALLOW, v);
                }
            }
            Error::Status(s) if s.code() == Code::Unauthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Status(s) => s,
            Error::RateLimited { retry_after } => {
                let mut s = Status::resource_exhausted(e.to_string());
                if let Ok(v) = retry_after.as_secs().to_string().parse() {
                    s.metadata_mut().insert("retry-after", v);
                }
                s
            }
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

/// HTTP status for a gRPC code (API.md).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // 499 is nginx's "client closed request"; always a valid status code.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_table_matches_api_md() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[tokio::test]
    async fn rest_body_is_google_rpc_status() {
        use http_body_util::BodyExt;
        let resp = Error::Status(Status::already_exists("sku: taken")).into_rest();
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": 6, "message": "sku: taken", "details": []})
        );
    }

    #[test]
    fn rate_limit_carries_retry_after_on_both_protocols() {
        let e = Error::RateLimited {
            retry_after: Duration::from_secs(3),
        };
        let resp = e.into_rest();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        let s = Status::from(Error::RateLimited {
            retry_after: Duration::from_secs(3),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get("retry-after").unwrap(), "3");
    }
}
