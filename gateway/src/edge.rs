//! Edge checks run before any request reaches a service: token authentication and rate
//! limiting.
//!
//! * **Authentication.** A request without `authorization` passes only to a public RPC
//!   ([`Access`], from the protos' `stockmesh.options.v1.access` via [`crate::contract`]);
//!   to any other it is refused here with UNAUTHENTICATED / 401 *before its body is read*,
//!   so a caller learns it must sign in whatever it sent (not a 400 about a body it may
//!   not send at all). A request *with* a token must carry a well-formed, unexpired bearer
//!   token signed by a key in auth's JWKS, or it is refused the same way — forged and
//!   stale tokens never cost a service anything. The header is forwarded unchanged:
//!   services still verify it and check roles themselves.
//! * **Rate limiting** (governor, GCRA). Signed-in callers are limited per user (the
//!   token's `sub`), so many users behind one NAT do not starve each other; anonymous
//!   callers per client IP ([`crate::client_ip`]: the peer, or the address a trusted proxy
//!   reports; IPv6 by its /64). Over the limit → [`Error::RateLimited`] with the time until
//!   the next request would be admitted. The limiter holds at most [`MAX_CLIENTS`]
//!   clients; newcomers beyond that share one bucket until idle ones are pruned
//!   ([`crate::rate_store`]), so a flood from many addresses cannot grow its memory.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::{Quota, RateLimiter};
use http::HeaderMap;
use stockmesh::authn::{AuthnError, Verifier};
use stockmesh::{Config, Target};
use tonic::Status;

use crate::client_ip::rate_key;
use crate::contract::Access;
use crate::error::Error;
use crate::rate_store::CappedStore;

/// Clients (users and anonymous addresses) the rate limiter keeps state for at once.
pub const MAX_CLIENTS: usize = 100_000;

type Limiter = RateLimiter<ClientKey, CappedStore<ClientKey>, DefaultClock, NoOpMiddleware>;

/// Who a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    User(String),
    Ip(IpAddr),
    /// No peer address known (not over TCP); all such requests share one bucket.
    Unknown,
}

/// The edge checks of one gateway.
pub struct Edge {
    verifier: Verifier,
    limiter: Option<Limiter>,
    clock: DefaultClock,
}

impl Edge {
    pub fn new(config: &Config) -> stockmesh::Result<Self> {
        let verifier = Verifier::remote(stockmesh::authn::RemoteJwks::new(
            stockmesh::client::upstream(config, Target::Gateway, Target::Auth)?,
        ));
        Ok(Self::with_verifier(
            verifier,
            config.gateway.rate_limit_rps,
            config.gateway.rate_limit_burst,
        ))
    }

    /// `rps == 0` turns rate limiting off.
    pub fn with_verifier(verifier: Verifier, rps: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(rps).map(|rps| {
            let burst = NonZeroU32::new(burst).unwrap_or(rps);
            RateLimiter::new(
                Quota::per_second(rps).allow_burst(burst),
                CappedStore::new(MAX_CLIENTS),
                DefaultClock::default(),
            )
        });
        Self {
            verifier,
            limiter,
            clock: DefaultClock::default(),
        }
    }

    /// Authenticates (when a token is present, or `access` needs a caller) and counts the
    /// request. A refused or missing token is counted against the client's IP, so a flood
    /// of forged tokens is throttled too. `client` is the resolved client address
    /// ([`crate::client_ip`]).
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        access: Access,
    ) -> Result<(), Error> {
        let anonymous = client.map_or(ClientKey::Unknown, |ip| ClientKey::Ip(rate_key(ip)));
        let verified = match bearer(headers) {
            Ok(None) if access.needs_caller() => {
                self.check(&anonymous)?;
                return Err(Status::from(AuthnError::Missing).into());
            }
            Ok(None) => return self.check(&anonymous),
            Ok(Some(token)) => self.verifier.verify(token).await,
            Err(e) => Err(e),
        };
        match verified {
            Ok(caller) => self.check(&ClientKey::User(caller.user_id)),
            Err(e) => {
                self.check(&anonymous)?;
                Err(Status::from(e).into())
            }
        }
    }

    /// Counts one request against `key`.
    pub fn check(&self, key: &ClientKey) -> Result<(), Error> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Retry-After is whole seconds; never tell a client to retry "in 0 s".
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            Error::RateLimited {
                retry_after: Duration::from_secs(secs.max(1)),
            }
        })
    }

    /// Forgets idle clients so the limiter's memory stays bounded.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The token of `authorization: Bearer <token>`; the same rules as the services apply.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthnError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthnError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthnError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthnError::Malformed);
    }
    Ok(Some(token.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(rps: u32, burst: u32) -> Edge {
        Edge::with_verifier(Verifier::with_keys(&[]).unwrap(), rps, burst)
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_and_missing_ones_pass() {
        let e = edge(0, 0);
        assert!(
            e.admit(&HeaderMap::new(), None, Access::Public)
                .await
                .is_ok()
        );
        for bad in ["Basic abc", "Bearer", "Bearer not-a-jwt", "token"] {
            let err = e
                .admit(&headers(bad), None, Access::Public)
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_missing_token_is_refused_unless_the_rpc_is_public() {
        let e = edge(0, 0);
        for access in [Access::SignedIn, Access::Internal] {
            let err = e.admit(&HeaderMap::new(), None, access).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{access:?}");
        }
        assert!(
            e.admit(&HeaderMap::new(), None, Access::Public)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn missing_tokens_count_against_the_ip() {
        let e = edge(1, 1);
        let peer = Some(IpAddr::from([10, 0, 0, 4]));
        let err = e.admit(&HeaderMap::new(), peer, Access::SignedIn).await;
        assert_eq!(err.unwrap_err().code(), tonic::Code::Unauthenticated);
        let err = e.admit(&HeaderMap::new(), peer, Access::SignedIn).await;
        assert!(matches!(err, Err(Error::RateLimited { .. })), "{err:?}");
    }

    #[test]
    fn burst_then_retry_after() {
        let e = edge(1, 2);
        let ip = ClientKey::Ip(IpAddr::from([10, 0, 0, 1]));
        assert!(e.check(&ip).is_ok());
        assert!(e.check(&ip).is_ok());
        match e.check(&ip) {
            Err(Error::RateLimited { retry_after }) => {
                assert!(retry_after >= Duration::from_secs(1));
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        // Another client has its own bucket.
        assert!(e.check(&ClientKey::Ip(IpAddr::from([10, 0, 0, 2]))).is_ok());
        assert!(e.check(&ClientKey::User("u1".into())).is_ok());
    }

    #[tokio::test]
    async fn refused_tokens_count_against_the_ip() {
        let e = edge(1, 2);
        let peer = Some(IpAddr::from([10, 0, 0, 3]));
        let bad = headers("Bearer forged");
        for _ in 0..2 {
            let err = e.admit(&bad, peer, Access::Public).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
        }
        let err = e.admit(&bad, peer, Access::Public).await.unwrap_err();
        assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn ipv6_clients_share_a_bucket_per_64() {
        let e = edge(1, 1);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(
            e.admit(&HeaderMap::new(), Some(a), Access::Public)
                .await
                .is_ok()
        );
        let err = e
            .admit(&HeaderMap::new(), Some(same_64), Access::Public)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
        assert!(
            e.admit(&HeaderMap::new(), Some(other_64), Access::Public)
                .await
                .is_ok()
        );
    }

    #[test]
    fn zero_rps_disables_limiting() {
        let e = edge(0, 0);
        for _ in 0..1000 {
            assert!(e.check(&ClientKey::Unknown).is_ok());
        }
    }
}
