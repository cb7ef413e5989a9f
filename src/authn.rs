//! Access-token verification for every service: who is calling, with which role.
//!
//! Auth signs short-lived EdDSA (Ed25519) JWTs; every other service verifies them locally
//! with the public keys auth publishes through `GetJwks`, so a call never needs a round
//! trip to auth. Keys are cached by `kid`; a token whose `kid` is unknown triggers one
//! refetch (rate-limited, so a flood of forged kids cannot turn into a flood of JWKS
//! calls), which is how a key rotation reaches every service.
//!
//! Only EdDSA is accepted (no `alg: none`, no HMAC confusion), with no clock leeway, and
//! issuer and audience must match.
//!
//! A verified token is remembered until it expires, keyed by its SHA-256 (a bounded LRU
//! of [`VERIFIED_CACHE`] entries): a caller presents the same token on every call, and an
//! Ed25519 check plus two JSON decodes cost tens of microseconds where the hash costs
//! one. Only successes are cached, and a hit is re-checked against its expiry, so the
//! cache never accepts what a full check would refuse (keys are only ever added). Missing or bad token → UNAUTHENTICATED; a valid token
//! with the wrong role → PERMISSION_DENIED. ADMIN passes every role check.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

pub use crate::proto::auth::v1::{Jwk, Role};

/// `iss` of every access token.
pub const ISSUER: &str = "stockmesh-auth";
/// `aud` of every access token.
pub const AUDIENCE: &str = "stockmesh";
/// Verified tokens remembered per verifier (see the module docs); ~150 bytes each.
const VERIFIED_CACHE: usize = 10_000;
/// Minimum time between two JWKS refetches caused by unknown `kid`s.
const REFETCH_EVERY: Duration = Duration::from_secs(5);

/// The claims of a stockmesh access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: String,
    pub email: String,
    /// Role name as in the proto enum, e.g. `ROLE_ADMIN`.
    pub role: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    pub iss: String,
    pub aud: String,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
}

impl Caller {
    /// True when the caller has one of `roles`; ADMIN always qualifies.
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.role == Role::Admin || roles.contains(&self.role)
    }

    /// PERMISSION_DENIED unless the caller has one of `roles` (or is ADMIN).
    pub fn require(&self, roles: &[Role]) -> Result<(), Status> {
        if self.has_any(roles) {
            Ok(())
        } else {
            let names: Vec<&str> = std::iter::once(Role::Admin)
                .chain(roles.iter().copied())
                .map(|r| r.as_str_name())
                .collect();
            Err(Status::permission_denied(format!(
                "this call requires one of {}; caller has {}",
                names.join(", "),
                self.role.as_str_name()
            )))
        }
    }

    /// OPERATOR or ADMIN.
    pub fn is_staff(&self) -> bool {
        self.has_any(&[Role::Operator])
    }

    /// PERMISSION_DENIED unless OPERATOR or ADMIN.
    pub fn require_staff(&self) -> Result<(), Status> {
        self.require(&[Role::Operator])
    }

    /// Internal RPCs: service identities and ADMIN.
    pub fn require_service(&self) -> Result<(), Status> {
        self.require(&[Role::Service])
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthnError {
    #[error("missing bearer token in the authorization header")]
    Missing,
    #[error("authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("access token expired")]
    Expired,
    #[error("invalid access token")]
    Invalid,
    #[error("access token signed by an unknown key")]
    UnknownKey,
    #[error("cannot fetch signing keys: {0}")]
    KeysUnavailable(String),
}

impl From<AuthnError> for Status {
    fn from(e: AuthnError) -> Self {
        match e {
            AuthnError::KeysUnavailable(_) => Status::unavailable(e.to_string()),
            _ => Status::unauthenticated(e.to_string()),
        }
    }
}

/// Where a verifier gets public keys when it meets an unknown `kid`.
pub trait KeySource: Send + Sync + 'static {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, Status>>;
}

/// Verifies access tokens. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// SHA-256 of a verified token → its caller, until the token expires.
    verified: Mutex<LruCache<[u8; 32], Caller>>,
    source: Option<Box<dyn KeySource>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Minimum time between two refetches.
    refetch_every: Duration,
    validation: Validation,
}

impl Verifier {
    /// A verifier that knows `keys` and never fetches (auth itself).
    pub fn with_keys(keys: &[Jwk]) -> Result<Self, AuthnError> {
        let v = Self::build(None, REFETCH_EVERY);
        v.insert(keys)?;
        Ok(v)
    }

    /// A verifier that fetches keys from `source` when it meets an unknown `kid`.
    pub fn remote(source: impl KeySource) -> Self {
        Self::remote_every(source, REFETCH_EVERY)
    }

    /// Like [`Verifier::remote`], refetching at most once per `min_interval` (tests use a
    /// short one to see a rotation without waiting).
    pub fn remote_every(source: impl KeySource, min_interval: Duration) -> Self {
        Self::build(Some(Box::new(source)), min_interval)
    }

    fn build(source: Option<Box<dyn KeySource>>, refetch_every: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        Self {
            inner: Arc::new(Inner {
                keys: RwLock::new(HashMap::new()),
                verified: Mutex::new(LruCache::new(
                    NonZeroUsize::new(VERIFIED_CACHE).unwrap_or(NonZeroUsize::MIN),
                )),
                source,
                last_fetch: tokio::sync::Mutex::new(None),
                refetch_every,
                validation,
            }),
        }
    }

    /// Adds public keys (from a JWKS).
    pub fn insert(&self, jwks: &[Jwk]) -> Result<(), AuthnError> {
        let mut parsed = Vec::with_capacity(jwks.len());
        for jwk in jwks {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" || jwk.kid.is_empty() {
                continue;
            }
            let key = DecodingKey::from_ed_components(&jwk.x).map_err(|_| AuthnError::Invalid)?;
            parsed.push((jwk.kid.clone(), key));
        }
        let mut keys = self.inner.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.extend(parsed);
        Ok(())
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.inner.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(kid).cloned()
    }

    /// Verifies a raw token (or finds it verified before and not yet expired).
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthnError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        {
            let mut verified = self
                .inner
                .verified
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match verified.get(&digest) {
                Some(caller) if u64::try_from(caller.expires_at).is_ok_and(|exp| exp >= now) => {
                    return Ok(caller.clone());
                }
                Some(_) => {
                    verified.pop(&digest);
                    return Err(AuthnError::Expired);
                }
                None => {}
            }
        }
        let caller = self.verify_fully(token).await?;
        self.inner
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(digest, caller.clone());
        Ok(caller)
    }

    /// Verifies a raw token: header, key, signature, claims.
    async fn verify_fully(&self, token: &str) -> Result<Caller, AuthnError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthnError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthnError::Invalid);
        }
        let kid = header.kid.ok_or(AuthnError::Invalid)?;
        let key = match self.key(&kid) {
            Some(k) => k,
            None => {
                self.refetch().await?;
                self.key(&kid).ok_or(AuthnError::UnknownKey)?
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthnError::Expired,
                _ => AuthnError::Invalid,
            },
        )?;
        let claims = data.claims;
        let role = Role::from_str_name(&claims.role)
            .filter(|r| *r != Role::Unspecified)
            .ok_or(AuthnError::Invalid)?;
        Ok(Caller {
            user_id: claims.sub,
            email: claims.email,
            role,
            expires_at: claims.exp,
        })
    }

    /// Fetches keys again, at most once per [`REFETCH_EVERY`] (or the verifier's own
    /// interval); concurrent callers wait for the one fetch in flight.
    async fn refetch(&self) -> Result<(), AuthnError> {
        let Some(source) = &self.inner.source else {
            return Err(AuthnError::UnknownKey);
        };
        let mut last = self.inner.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.inner.refetch_every) {
            return Ok(());
        }
        let jwks = source
            .fetch()
            .await
            .map_err(|s| AuthnError::KeysUnavailable(s.message().to_string()))?;
        *last = Some(Instant::now());
        self.insert(&jwks)
    }

    /// The authenticated caller of `req`; UNAUTHENTICATED when there is no valid token.
    pub async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let token = bearer(req.metadata())?.ok_or(AuthnError::Missing)?;
        Ok(self.verify(token).await?)
    }

    /// For public RPCs: `None` without a token, the caller with a valid one, and
    /// UNAUTHENTICATED for a token that is present but bad.
    pub async fn optional_caller<T>(&self, req: &Request<T>) -> Result<Option<Caller>, Status> {
        match bearer(req.metadata())? {
            None => Ok(None),
            Some(token) => Ok(Some(self.verify(token).await?)),
        }
    }
}

/// The token in `authorization: Bearer <token>`, if the header is present.
pub fn bearer(md: &tonic::metadata::MetadataMap) -> Result<Option<&str>, AuthnError> {
    let Some(value) = md.get("authorization") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthnError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthnError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthnError::Malformed);
    }
    Ok(Some(token.trim()))
}

/// Fetches the JWKS from the auth service over gRPC.
pub struct RemoteJwks {
    client: crate::proto::auth::v1::auth_service_client::AuthServiceClient<
        crate::client::UpstreamChannel,
    >,
}

impl RemoteJwks {
    pub fn new(channel: crate::client::UpstreamChannel) -> Self {
        Self {
            client: crate::proto::auth::v1::auth_service_client::AuthServiceClient::new(
                channel.clone(),
            )
            .max_decoding_message_size(channel.max_message_bytes()),
        }
    }
}

impl KeySource for RemoteJwks {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, Status>> {
        Box::pin(fetch_jwks(self.client.clone()))
    }
}

async fn fetch_jwks(
    mut client: crate::proto::auth::v1::auth_service_client::AuthServiceClient<
        crate::client::UpstreamChannel,
    >,
) -> Result<Vec<Jwk>, Status> {
    let resp = client
        .get_jwks(crate::proto::auth::v1::GetJwksRequest {})
        .await?;
    Ok(resp.into_inner().keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            user_id: "u".into(),
            email: "e@x".into(),
            role,
            expires_at: 0,
        }
    }

    #[test]
    fn admin_passes_every_check_and_others_only_their_own() {
        assert!(caller(Role::Admin).require(&[Role::Service]).is_ok());
        assert!(caller(Role::Operator).require_staff().is_ok());
        let err = caller(Role::Customer).require_staff().unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(caller(Role::Customer).require_service().is_err());
        assert!(caller(Role::Service).require_service().is_ok());
    }

    #[test]
    fn bearer_parsing() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer(&md), Ok(None));
        md.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&md), Ok(Some("abc")));
        md.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&md), Err(AuthnError::Malformed));
    }

    #[tokio::test]
    async fn garbage_and_alg_none_are_invalid() {
        let v = Verifier::with_keys(&[]).unwrap();
        assert_eq!(v.verify("nope").await, Err(AuthnError::Invalid));
        // {"alg":"none","typ":"JWT"} . {"sub":"x"} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.";
        assert_eq!(v.verify(none).await, Err(AuthnError::Invalid));
    }

    /// A key source whose JWKS a test changes, counting the fetches made of it.
    #[derive(Clone, Default)]
    struct FakeJwks {
        keys: Arc<Mutex<Vec<Jwk>>>,
        fetches: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl FakeJwks {
        fn publish(&self, key: &TestKey) {
            self.keys.lock().unwrap().push(key.jwk());
        }
        fn fetches(&self) -> usize {
            self.fetches.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl KeySource for FakeJwks {
        fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, Status>> {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let keys = self.keys.lock().unwrap().clone();
            Box::pin(async move { Ok(keys) })
        }
    }

    /// An Ed25519 key as auth would hold it.
    struct TestKey {
        kid: String,
        signing: ed25519_dalek::SigningKey,
    }

    impl TestKey {
        fn new(kid: &str, seed: u8) -> Self {
            Self {
                kid: kid.into(),
                signing: ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
            }
        }
        fn jwk(&self) -> Jwk {
            use base64::Engine;
            Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(self.signing.verifying_key().to_bytes()),
                kid: self.kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            }
        }
        /// A valid customer token signed by this key, under `kid`.
        fn token_as(&self, kid: &str) -> String {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let der = self.signing.to_pkcs8_der().unwrap();
            let now = jsonwebtoken::get_current_timestamp() as i64;
            let claims = Claims {
                sub: "u1".into(),
                email: "u1@example.com".into(),
                role: "ROLE_CUSTOMER".into(),
                exp: now + 600,
                iat: now,
                jti: uuid::Uuid::new_v4().to_string(),
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
            };
            let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
            header.kid = Some(kid.into());
            jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            )
            .unwrap()
        }
        fn token(&self) -> String {
            self.token_as(&self.kid)
        }
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_the_jwks_once_and_then_accepts_the_new_key() {
        let jwks = FakeJwks::default();
        let old = TestKey::new("k1", 1);
        jwks.publish(&old);
        let v = Verifier::remote_every(jwks.clone(), Duration::from_millis(200));
        assert_eq!(jwks.fetches(), 0, "keys are fetched lazily");
        assert!(v.verify(&old.token()).await.is_ok());
        assert_eq!(jwks.fetches(), 1);
        // Known kid: no fetch, whatever the token.
        assert!(v.verify(&old.token()).await.is_ok());
        assert_eq!(jwks.fetches(), 1);

        // Auth rotates: a new key is published and signs new tokens.
        let new = TestKey::new("k2", 2);
        jwks.publish(&new);
        let fresh = new.token();
        // Within the refetch interval the unknown kid costs no fetch and is refused...
        assert_eq!(v.verify(&fresh).await, Err(AuthnError::UnknownKey));
        assert_eq!(jwks.fetches(), 1, "rate-limited");
        // ...and once the interval has passed, the first such token refetches once.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match v.verify(&fresh).await {
                Ok(caller) => {
                    assert_eq!(caller.role, Role::Customer);
                    break;
                }
                Err(AuthnError::UnknownKey) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the new key was never fetched: {e}"),
            }
        }
        assert_eq!(jwks.fetches(), 2, "exactly one refetch for the new kid");
        // Both keys verify from now on without another fetch.
        assert!(v.verify(&old.token()).await.is_ok());
        assert!(v.verify(&new.token()).await.is_ok());
        assert_eq!(jwks.fetches(), 2);
    }

    #[tokio::test]
    async fn a_flood_of_forged_kids_costs_one_fetch() {
        let jwks = FakeJwks::default();
        let real = TestKey::new("real", 3);
        jwks.publish(&real);
        let v = Verifier::remote(jwks.clone());
        let forged: Vec<String> = (0..200)
            .map(|i| real.token_as(&format!("forged-{i}")))
            .collect();
        let results = futures::future::join_all(forged.iter().map(|t| v.verify(t))).await;
        assert!(results.iter().all(|r| *r == Err(AuthnError::UnknownKey)));
        assert_eq!(jwks.fetches(), 1, "concurrent unknown kids share one fetch");
        // The real key came with that fetch.
        assert!(v.verify(&real.token()).await.is_ok());
        assert_eq!(jwks.fetches(), 1);
    }

    #[tokio::test]
    async fn another_key_under_a_known_kid_is_refused() {
        let jwks = FakeJwks::default();
        let real = TestKey::new("real", 4);
        let attacker = TestKey::new("real", 5);
        jwks.publish(&real);
        let v = Verifier::remote(jwks.clone());
        assert_eq!(v.verify(&attacker.token()).await, Err(AuthnError::Invalid));
        assert!(v.verify(&real.token()).await.is_ok());
    }

    fn remember(v: &Verifier, token: &str, caller: Caller) {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        v.inner.verified.lock().unwrap().put(digest, caller);
    }

    #[tokio::test]
    async fn a_remembered_token_is_answered_until_it_expires_and_never_after() {
        let v = Verifier::with_keys(&[]).unwrap();
        let now = jsonwebtoken::get_current_timestamp() as i64;
        // Not a token a full check would pass: an answer proves the cache answered.
        let live = Caller {
            expires_at: now + 60,
            ..caller(Role::Customer)
        };
        remember(&v, "remembered", live.clone());
        assert_eq!(v.verify("remembered").await, Ok(live));
        remember(
            &v,
            "expired",
            Caller {
                expires_at: now - 1,
                ..caller(Role::Customer)
            },
        );
        assert_eq!(v.verify("expired").await, Err(AuthnError::Expired));
        // Forgotten once found expired; a failed check is never remembered.
        assert_eq!(v.verify("expired").await, Err(AuthnError::Invalid));
        assert_eq!(v.verify("nope").await, Err(AuthnError::Invalid));
        assert!(v.inner.verified.lock().unwrap().len() == 1);
    }
}
