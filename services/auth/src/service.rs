//! The auth domain: what each RPC does once its request is decoded and its caller
//! authorised. Holds the database, the signing keys and the login throttle.

use chrono::Utc;
use sea_orm::DatabaseConnection;
use stockmesh::Config;
use stockmesh::authn::{AUDIENCE, Caller, Claims, ISSUER, Jwk, Role, Verifier};
use stockmesh::pagination::Page;

use crate::accounts;
use crate::entity::user;
use crate::error::{Error, Result};
use crate::keys::KeyRing;
use crate::password;
use crate::service_tokens::ServiceProofs;
use crate::sessions;
use crate::throttle::LoginThrottle;
use crate::validate;

/// What Login and Refresh hand out.
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Access token lifetime, seconds.
    pub expires_in: i64,
    pub user: user::Model,
}

/// The auth service's state.
pub struct Auth {
    db: DatabaseConnection,
    keys: KeyRing,
    throttle: LoginThrottle,
    service_proofs: ServiceProofs,
    /// Vouches for the client address the gateway forwards.
    attestor: stockmesh::identity::ClientAttestor,
    /// Verified against on unknown emails so that "no such user" takes as long as "wrong
    /// password" and timing does not reveal which emails exist.
    dummy_hash: String,
    access_ttl_secs: i64,
    refresh_ttl: chrono::Duration,
}

impl Auth {
    /// Loads (or creates) the signing keys and makes sure the admin and the service
    /// accounts exist. `db` must be migrated.
    pub async fn start(db: DatabaseConnection, config: &Config) -> Result<Self> {
        let keys = KeyRing::load_or_create(&db).await?;
        crate::bootstrap::ensure_admin(&db, config).await?;
        crate::bootstrap::ensure_service_accounts(&db, config).await?;
        let secret = stockmesh::identity::resolve_secret(config)
            .map_err(|e| Error::Config(format!("cannot read the service secret: {e}")))?;
        let dummy_hash = password::hash(uuid::Uuid::new_v4().to_string()).await?;
        let secs = |s: u64, name: &str| {
            i64::try_from(s)
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| Error::Config(format!("{name} must be between 1 and 2^63 seconds")))
        };
        Ok(Self {
            keys,
            throttle: LoginThrottle::new(
                config.auth.login_burst,
                config.auth.login_per_minute,
                config.auth.login_throttle_max_keys,
            ),
            service_proofs: ServiceProofs::new(&secret),
            attestor: stockmesh::identity::ClientAttestor::new(&secret),
            dummy_hash,
            access_ttl_secs: secs(config.auth.access_token_ttl_secs, "access_token_ttl_secs")?,
            refresh_ttl: chrono::Duration::seconds(secs(
                config.auth.refresh_token_ttl_secs,
                "refresh_token_ttl_secs",
            )?),
            db,
        })
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Verifies this service's access tokens.
    pub fn verifier(&self) -> &Verifier {
        self.keys.verifier()
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<user::Model> {
        accounts::create(&self.db, email, password, display_name, Role::Customer).await
    }

    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
        role: Role,
    ) -> Result<user::Model> {
        accounts::create(&self.db, email, password, display_name, role).await
    }

    /// The client a request came from: the address the gateway attests, else the peer.
    pub fn client_of<T>(&self, req: &tonic::Request<T>) -> Option<std::net::IpAddr> {
        self.attestor
            .verified_client(req.metadata().as_ref())
            .or_else(|| req.remote_addr().map(|a| a.ip()))
    }

    /// Checks credentials and starts a session. Unknown email and wrong password give the
    /// same error after the same amount of work. The attempt is counted against (email,
    /// client) before anything is checked ([`crate::throttle`]).
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<TokenPair> {
        counted("login", self.login_inner(email, password, client).await)
    }

    async fn login_inner(
        &self,
        email: &str,
        password: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<TokenPair> {
        // Validated and capped first: nothing unbounded reaches the throttle.
        let email = validate::email(email)?;
        if password.is_empty() {
            return Err(Error::invalid("password", "is required"));
        }
        if validate::is_service_email(&email) {
            return Err(Error::ServiceLogin);
        }
        if !self.throttle.attempt(&email, client) {
            tracing::warn!(%email, ?client, "login attempts over the limit");
            return Err(Error::TooManyFailedLogins);
        }
        let user = if password.len() > validate::MAX_PASSWORD_LEN {
            // No stored password is this long; skip hashing megabytes.
            None
        } else {
            match accounts::by_email(&self.db, &email).await? {
                Some(user) => password::verify(password.to_string(), user.password_hash.clone())
                    .await?
                    .then_some(user),
                None => {
                    password::verify(password.to_string(), self.dummy_hash.clone()).await?;
                    None
                }
            }
        };
        let Some(user) = user else {
            return Err(Error::InvalidCredentials);
        };
        self.throttle.succeeded(&email, client);
        let refresh_token = sessions::start(&self.db, &user.id, self.refresh_ttl).await?;
        self.pair(user, refresh_token)
    }

    /// An access token for the mesh service whose proof `req` carries.
    pub async fn issue_service_token(
        &self,
        req: &stockmesh::proto::auth::v1::IssueServiceTokenRequest,
    ) -> Result<(String, i64)> {
        counted("service", self.issue_service_token_inner(req).await)
    }

    async fn issue_service_token_inner(
        &self,
        req: &stockmesh::proto::auth::v1::IssueServiceTokenRequest,
    ) -> Result<(String, i64)> {
        let target = self.service_proofs.check(req, Utc::now().timestamp())?;
        let email = stockmesh::identity::service_email(target);
        let user = accounts::by_email(&self.db, &email)
            .await?
            .filter(|u| accounts::role_of(u) == Role::Service)
            .ok_or_else(|| {
                Error::ServiceCredentialRefused(format!("no service account for {target}"))
            })?;
        let pair = self.pair(user, String::new())?;
        Ok((pair.access_token, pair.expires_in))
    }

    /// Forgets login-throttle entries that no longer hold anything back.
    pub fn prune_throttle(&self) {
        self.throttle.prune();
    }

    /// Rotates a refresh token into a new pair.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        let rotated = sessions::rotate(&self.db, refresh_token, self.refresh_ttl).await;
        counted(
            "refresh",
            rotated.and_then(|(user, next)| self.pair(user, next)),
        )
    }

    pub async fn logout(&self, refresh_token: &str) -> Result<()> {
        sessions::revoke(&self.db, refresh_token).await
    }

    fn pair(&self, user: user::Model, refresh_token: String) -> Result<TokenPair> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.id.clone(),
            email: user.email.clone(),
            role: accounts::role_of(&user).as_str_name().to_string(),
            exp: now.saturating_add(self.access_ttl_secs),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            iss: ISSUER.to_string(),
            aud: AUDIENCE.to_string(),
        };
        Ok(TokenPair {
            access_token: self.keys.sign(&claims)?,
            refresh_token,
            expires_in: self.access_ttl_secs,
            user,
        })
    }

    /// The claims of a valid access token.
    pub async fn verify(&self, token: &str) -> std::result::Result<Caller, tonic::Status> {
        if token.trim().is_empty() {
            return Err(stockmesh::error::invalid_field("token", "is required"));
        }
        Ok(self.verifier().verify(token.trim()).await?)
    }

    pub async fn user(&self, id: &str) -> Result<user::Model> {
        accounts::by_id(&self.db, id).await
    }

    pub async fn list_users(&self, page: &Page) -> Result<(Vec<user::Model>, String)> {
        accounts::list(&self.db, page).await
    }

    pub async fn set_role(&self, id: &str, role: Role) -> Result<user::Model> {
        accounts::set_role(&self.db, id, role).await
    }

    pub async fn jwks(&self) -> Result<Vec<Jwk>> {
        self.keys.jwks().await
    }

    /// Rotates the token signing key: new tokens carry a new `kid`; tokens signed before
    /// stay valid until they expire (see [`crate::keys`]). Returns the new `kid`.
    pub async fn rotate_signing_key(&self) -> Result<String> {
        self.keys.rotate().await
    }

    /// The `kid` of the key new tokens are signed with.
    pub fn signing_kid(&self) -> String {
        self.keys.current_kid()
    }
}

/// Counts a token request: `stockmesh_auth_tokens_issued_total{kind}` when it succeeded,
/// `stockmesh_auth_tokens_refused_total{kind,reason}` when it was refused (a bounded set
/// of reasons; server faults are not refusals and are not counted here).
fn counted<T>(kind: &'static str, result: Result<T>) -> Result<T> {
    match &result {
        Ok(_) => {
            metrics::counter!("stockmesh_auth_tokens_issued_total", "kind" => kind).increment(1)
        }
        Err(e) => {
            let reason = match e {
                Error::InvalidField { .. } => Some("invalid_request"),
                Error::InvalidCredentials => Some("invalid_credentials"),
                Error::TooManyFailedLogins => Some("throttled"),
                Error::ServiceLogin => Some("service_identity_on_login"),
                Error::ServiceCredentialRefused(_) => Some("service_proof_refused"),
                Error::InvalidRefreshToken => Some("invalid_refresh_token"),
                Error::RefreshTokenReused => Some("refresh_token_reused"),
                Error::UnknownSubject => Some("unknown_subject"),
                _ => None,
            };
            if let Some(reason) = reason {
                metrics::counter!(
                    "stockmesh_auth_tokens_refused_total",
                    "kind" => kind,
                    "reason" => reason
                )
                .increment(1);
            }
        }
    }
    result
}
