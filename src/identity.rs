//! Service identity: how orders, inventory and the gateway call other services *as
//! themselves*, not as the end user.
//!
//! Every service shares one secret (`STOCKMESH_SERVICE_SECRET`; on one machine it defaults
//! to `<data-dir>/service-secret`, created on first start). Auth keeps one account per
//! service, role `ROLE_SERVICE`, whose password is derived from that secret; a service
//! logs in with it and caches the short-lived access token, logging in again shortly
//! before expiry. Internal RPCs (Reserve, Commit, Release, GetReservation,
//! BatchGetProducts…) accept `ROLE_SERVICE` and ADMIN and refuse customers.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::client::UpstreamChannel;
use crate::proto::auth::v1::LoginRequest;
use crate::proto::auth::v1::auth_service_client::AuthServiceClient;
use crate::{Config, Target};

/// The services that have an identity.
pub const SERVICE_ACCOUNTS: [Target; 3] = [Target::Inventory, Target::Orders, Target::Gateway];

/// Renew the token when less than this is left.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Login email of a service's account.
pub fn service_email(target: Target) -> String {
    format!("{}@services.stockmesh.internal", target.name())
}

/// Password of a service's account, derived from the shared secret.
pub fn service_password(secret: &str, target: Target) -> String {
    let mut h = Sha256::new();
    h.update(b"stockmesh-service-account\0");
    h.update(target.name().as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The shared service secret: the configured one, else the one in the data directory
/// (created, readable by the owner only, on first use).
pub fn resolve_secret(config: &Config) -> crate::Result<String> {
    if let Some(s) = config
        .auth
        .service_secret
        .as_ref()
        .filter(|s| !s.is_empty())
    {
        return Ok(s.clone());
    }
    let path = config.data_dir.join("service-secret");
    read_or_create_secret(&path)
}

fn read_or_create_secret(path: &Path) -> crate::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            std::io::Write::write_all(&mut f, secret.as_bytes())?;
            Ok(secret)
        }
        // Another process of the mesh created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(path)?.trim().to_string())
        }
        Err(e) => Err(e.into()),
    }
}

/// A service's credential: logs in to auth and caches the access token.
pub struct ServiceIdentity {
    target: Target,
    password: String,
    auth: AuthServiceClient<UpstreamChannel>,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl ServiceIdentity {
    pub fn new(target: Target, secret: &str, auth: UpstreamChannel) -> Self {
        Self {
            target,
            password: service_password(secret, target),
            auth: AuthServiceClient::new(auth),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A valid access token for this service (UNAVAILABLE when auth cannot be reached).
    pub async fn token(&self) -> Result<String, Status> {
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let resp = self
            .auth
            .clone()
            .login(LoginRequest {
                email: service_email(self.target),
                password: self.password.clone(),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unauthenticated => {
                    tracing::error!(service = %self.target, "auth refused this service's credential: is STOCKMESH_SERVICE_SECRET the same everywhere?");
                    Status::unavailable("service credential refused by auth")
                }
                _ => s,
            })?
            .into_inner();
        let ttl = Duration::from_secs(u64::try_from(resp.expires_in).unwrap_or(0));
        let renew_at = Instant::now() + ttl.saturating_sub(RENEW_BEFORE).max(ttl / 2);
        *cached = Some((resp.access_token.clone(), renew_at));
        Ok(resp.access_token)
    }

    /// Wraps `msg` in a request carrying this service's bearer token.
    pub async fn request<T>(&self, msg: T) -> Result<Request<T>, Status> {
        let token = self.token().await?;
        let mut req = Request::new(msg);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("access token is not a valid header value"))?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_differ_per_service_and_secret() {
        let a = service_password("s", Target::Orders);
        assert_eq!(a, service_password("s", Target::Orders));
        assert_ne!(a, service_password("s", Target::Inventory));
        assert_ne!(a, service_password("t", Target::Orders));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn secret_file_is_created_once() {
        let dir = std::env::temp_dir().join(format!("stockmesh-secret-{}", uuid::Uuid::now_v7()));
        let path = dir.join("service-secret");
        let first = read_or_create_secret(&path).unwrap();
        assert_eq!(first, read_or_create_secret(&path).unwrap());
        assert_eq!(first.len(), 64);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
