//! Classification: the one place that decides what the result of a call means.
//!
//! Every layer that reacts to results asks here: the breaker (does this count against the
//! upstream's health?) and retry (may this be tried again?). Keeping the table in one
//! place means the two can never disagree about, say, whether NOT_FOUND is a failure.
//!
//! | result                                           | class                     |
//! |--------------------------------------------------|---------------------------|
//! | OK, and every business code (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED, RESOURCE_EXHAUSTED from the server, INTERNAL…) | success: the upstream answered |
//! | connection could not be opened                   | failure, retryable, request never sent |
//! | stream refused or never sent (GOAWAY, REFUSED_STREAM, connection closed first: a draining server) | failure, retryable, request never reached a handler |
//! | connection broke, stream reset                   | failure, retryable, request may have been processed |
//! | UNAVAILABLE (status, or HTTP 502/503/504)        | failure, retryable, may have been processed |
//! | DEADLINE_EXCEEDED                                | failure, not retryable (the time is up) |
//! | rejected here: breaker open, bulkhead full       | neutral: says nothing new about the upstream |
//! | CANCELLED                                        | neutral |
//! | the request body failed (reset sent by this side) | neutral: the caller's fault |
//!
//! gRPC carries a status either in the response headers (a "trailers-only" response:
//! what tonic sends for every error a handler returns) or in the trailers after the body.
//! Only the former is visible when the response future completes, which is where the
//! layers look; a unary success always has its `grpc-status: 0` in the trailers.

use std::sync::Arc;

use tonic::{Code, Status};

/// What a call's result says about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered, whatever it answered.
    Success,
    /// The upstream or the way to it is failing.
    Failure(Failure),
    /// Nothing learned about the upstream (the call was refused locally or cancelled).
    Neutral,
}

/// How a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be opened: the request never left this process.
    Connect,
    /// The server refused the stream or the connection closed before the request went
    /// out (a draining server's GOAWAY, REFUSED_STREAM): no handler saw it.
    Refused,
    /// The connection or the stream broke after the request was sent.
    Transport,
    /// The upstream (or a proxy) answered UNAVAILABLE.
    Unavailable,
    /// The deadline passed before an answer came.
    DeadlineExceeded,
}

impl Failure {
    /// Whether trying again could help.
    pub fn retryable(self) -> bool {
        !matches!(self, Failure::DeadlineExceeded)
    }

    /// Whether the upstream may have acted on the request; when false, any method may be
    /// sent again, idempotent or not.
    pub fn may_have_been_processed(self) -> bool {
        !matches!(self, Failure::Connect | Failure::Refused)
    }
}

/// A call refused by this process before reaching the upstream. Attached as the
/// [`Status`] source so that retry and breaker recognise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("circuit breaker open")]
    BreakerOpen,
    #[error("every endpoint is ejected")]
    AllEjected,
    /// Discovery has found no address for the upstream (yet).
    #[error("no endpoint known")]
    NoEndpoints,
    #[error("too many calls in flight")]
    Shed,
    /// The caller's request body failed while it was sent (too large, aborted).
    #[error("the request body failed")]
    RequestBody,
}

impl Rejected {
    /// The status a caller receives, with `self` as its source.
    pub fn status(self, code: Code, message: String) -> Status {
        let mut status = Status::new(code, message);
        status.set_source(Arc::new(self));
        status
    }
}

/// The transport failed; attached as the [`Status`] source by [`transport_status`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransportFailure {
    /// The endpoint the call went to (so that a retry can go elsewhere).
    pub endpoint: &'static str,
    /// True when no connection could be opened, so the request was never sent.
    pub connect: bool,
    /// True when the server refused the stream or the connection closed before the
    /// request was sent ([`never_reached_server`]).
    pub refused: bool,
    message: String,
}

/// Whether `err` says the request never reached a handler although a connection was up:
/// the server's GOAWAY left this stream out (a draining server), it answered
/// REFUSED_STREAM, or the connection closed before hyper sent the request (hyper calls
/// that "canceled"). Any method may then be sent again.
pub fn never_reached_server(err: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = find_in_chain::<h2::Error>(err)
        && e.is_remote()
        && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM))
    {
        return true;
    }
    find_in_chain::<hyper::Error>(err).is_some_and(hyper::Error::is_canceled)
}

/// Turns an error of a tonic `Channel` into the status callers see: UNAVAILABLE naming the
/// upstream and endpoint, tagged with [`TransportFailure`] (or DEADLINE_EXCEEDED when it is
/// the channel's own `grpc-timeout` timer). Everything a channel returns as
/// an error is a transport problem: the server's own statuses arrive as responses.
pub fn transport_status(
    upstream: &str,
    endpoint: &'static str,
    err: tonic::transport::Error,
) -> Status {
    // The request body itself failed (e.g. the gateway's streaming size cap): the caller's
    // fault, not the upstream's. Its status goes back as it is, marked neutral.
    if let Some(status) = find_in_chain::<Status>(&err) {
        let mut out = Status::new(status.code(), status.message().to_string());
        out.set_source(Arc::new(Rejected::RequestBody));
        return out;
    }
    // hyper reports a failed request body as a stream reset that this side sent (the
    // body's own error is not kept): nothing the upstream did.
    if find_in_chain::<h2::Error>(&err)
        .is_some_and(|e| e.is_reset() && !e.is_remote() && !e.is_library())
    {
        return Rejected::RequestBody.status(
            Code::Cancelled,
            format!("upstream {upstream}: the request body failed while it was sent to {endpoint}"),
        );
    }
    // The channel enforces the `grpc-timeout` it sends, too; its timer may fire first.
    if chain_has::<tonic::TimeoutExpired>(&err) {
        return Status::deadline_exceeded(format!(
            "upstream {upstream}: deadline exceeded waiting for {endpoint}"
        ));
    }
    let connect = chain_has::<tonic::ConnectError>(&err);
    let refused = !connect && never_reached_server(&err);
    let detail = error_chain(&err);
    let message = if connect {
        format!("upstream {upstream} unavailable: cannot connect to {endpoint}: {detail}")
    } else if refused {
        format!("upstream {upstream} unavailable: {endpoint} did not take the call: {detail}")
    } else {
        format!("upstream {upstream} unavailable: connection to {endpoint} failed: {detail}")
    };
    let mut status = Status::unavailable(message.clone());
    status.set_source(Arc::new(TransportFailure {
        endpoint,
        connect,
        refused,
        message,
    }));
    status
}

fn find_in_chain<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

fn chain_has<T: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<T>() {
            return true;
        }
        cur = e.source();
    }
    false
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// The endpoint that answered a call, put in the response's extensions by the balancer
/// when the answer is a failure, so that a retry can avoid it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedBy(pub &'static str);

/// The endpoint a failed call went to, when the stack knows it: from the transport error,
/// or from [`ServedBy`] on a failed response.
pub fn failed_endpoint<B>(result: &Result<http::Response<B>, Status>) -> Option<&'static str> {
    match result {
        Ok(response) => response.extensions().get::<ServedBy>().map(|s| s.0),
        Err(status) => source_of::<TransportFailure>(status).map(|t| t.endpoint),
    }
}

/// The [`Rejected`] reason of a status produced by this stack, if any.
pub fn rejected(status: &Status) -> Option<Rejected> {
    source_of::<Rejected>(status).copied()
}

fn source_of<T: std::error::Error + 'static>(status: &Status) -> Option<&T> {
    std::error::Error::source(status).and_then(|s| s.downcast_ref::<T>())
}

/// Classifies a status code the upstream sent.
pub fn classify_code(code: Code) -> Outcome {
    match code {
        Code::Unavailable => Outcome::Failure(Failure::Unavailable),
        Code::DeadlineExceeded => Outcome::Failure(Failure::DeadlineExceeded),
        // The caller went away, or tonic's server-side timer fired (it answers CANCELLED):
        // either way, no verdict on the upstream.
        Code::Cancelled => Outcome::Neutral,
        _ => Outcome::Success,
    }
}

/// Classifies an error returned by the stack below.
pub fn classify_error(status: &Status) -> Outcome {
    if rejected(status).is_some() {
        return Outcome::Neutral;
    }
    if let Some(t) = source_of::<TransportFailure>(status) {
        return Outcome::Failure(if t.connect {
            Failure::Connect
        } else if t.refused {
            Failure::Refused
        } else {
            Failure::Transport
        });
    }
    classify_code(status.code())
}

/// Classifies a response by its headers (see the module docs for trailers).
pub fn classify_response<B>(response: &http::Response<B>) -> Outcome {
    if let Some(code) = response.headers().get("grpc-status") {
        return classify_code(Code::from_bytes(code.as_bytes()));
    }
    match response.status().as_u16() {
        200 => Outcome::Success,
        502..=504 => Outcome::Failure(Failure::Unavailable),
        _ => Outcome::Neutral,
    }
}

/// Classifies a call's result.
pub fn classify<B>(result: &Result<http::Response<B>, Status>) -> Outcome {
    match result {
        Ok(response) => classify_response(response),
        Err(status) => classify_error(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(grpc_status: Option<&str>, http: u16) -> http::Response<()> {
        let mut r = http::Response::builder().status(http);
        if let Some(s) = grpc_status {
            r = r.header("grpc-status", s);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn business_codes_are_successes() {
        for code in [
            Code::Ok,
            Code::NotFound,
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::ResourceExhausted,
        ] {
            let r = response(Some(&(code as i32).to_string()), 200);
            assert_eq!(classify_response(&r), Outcome::Success, "{code:?}");
        }
    }

    #[test]
    fn unavailable_and_deadline_are_failures() {
        let r = response(Some("14"), 200);
        assert_eq!(
            classify_response(&r),
            Outcome::Failure(Failure::Unavailable)
        );
        let r = response(Some("4"), 200);
        assert_eq!(
            classify_response(&r),
            Outcome::Failure(Failure::DeadlineExceeded)
        );
        assert_eq!(
            classify_response(&response(None, 503)),
            Outcome::Failure(Failure::Unavailable)
        );
        assert_eq!(classify_response(&response(None, 200)), Outcome::Success);
    }

    #[test]
    fn local_rejections_are_neutral() {
        let s = Rejected::BreakerOpen.status(Code::Unavailable, "open".into());
        assert_eq!(classify_error(&s), Outcome::Neutral);
        let s = Rejected::Shed.status(Code::ResourceExhausted, "full".into());
        assert_eq!(classify_error(&s), Outcome::Neutral);
        assert_eq!(rejected(&s), Some(Rejected::Shed));
    }

    #[test]
    fn failure_kinds() {
        assert!(Failure::Connect.retryable());
        assert!(!Failure::Connect.may_have_been_processed());
        assert!(Failure::Transport.may_have_been_processed());
        assert!(Failure::Refused.retryable());
        assert!(!Failure::Refused.may_have_been_processed());
        assert!(!Failure::DeadlineExceeded.retryable());
    }
}
