//! Service identity: how orders, inventory and the gateway call other services *as
//! themselves*, not as the end user.
//!
//! Every service shares one secret (`STOCKMESH_SERVICE_SECRET`, at least 32 bytes; on one
//! machine it defaults to `<data-dir>/service-secret`, created atomically on first start).
//! Auth keeps one account per service, role `ROLE_SERVICE`; a service obtains its
//! short-lived access token with `IssueServiceToken`, sending an HMAC proof made with a
//! key derived from that secret (never the secret, never through the public Login, so no
//! anonymous caller can throttle a service account), and renews it shortly before expiry. Internal RPCs (Reserve, Commit, Release, GetReservation,
//! BatchGetProducts…) accept `ROLE_SERVICE` and ADMIN and refuse customers.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::client::UpstreamChannel;
use crate::proto::auth::v1::IssueServiceTokenRequest;
use crate::proto::auth::v1::auth_service_client::AuthServiceClient;
use crate::{Config, Target};

type HmacSha256 = Hmac<Sha256>;

/// The services that have an identity.
pub const SERVICE_ACCOUNTS: [Target; 3] = [Target::Inventory, Target::Orders, Target::Gateway];

/// Renew the token when less than this is left.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// A shorter service secret is refused: it must resist offline guessing.
pub const MIN_SECRET_BYTES: usize = 32;

/// How far a proof's `issued_at` may be from auth's clock, seconds.
pub const PROOF_WINDOW_SECS: i64 = 60;

/// Domain separator of service-token proofs.
const PROOF_CONTEXT: &[u8] = b"stockmesh-service-token/v1";

/// Metadata the gateway sets on every proxied call: the client's address as the gateway
/// resolved it, and an HMAC over it that only holders of the service secret can make.
pub const CLIENT_IP_HEADER: &str = "x-stockmesh-client-ip";
pub const CLIENT_PROOF_HEADER: &str = "x-stockmesh-client-proof";

/// Login email of a service's account.
pub fn service_email(target: Target) -> String {
    format!("{}@services.stockmesh.internal", target.name())
}

/// The key a service proves itself with, derived from the shared secret.
pub fn service_key(secret: &str, target: Target) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"stockmesh-service-account\0");
    h.update(target.name().as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// The HMAC of an IssueServiceToken request (see the proto for the layout).
pub fn service_proof(key: &[u8; 32], service: &str, issued_at: i64, nonce: &[u8]) -> Vec<u8> {
    proof_mac(key, service, issued_at, nonce)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Whether `proof` is the HMAC of the other fields, compared in constant time.
pub fn verify_service_proof(
    key: &[u8; 32],
    service: &str,
    issued_at: i64,
    nonce: &[u8],
    proof: &[u8],
) -> bool {
    proof_mac(key, service, issued_at, nonce)
        .verify_slice(proof)
        .is_ok()
}

fn proof_mac(key: &[u8; 32], service: &str, issued_at: i64, nonce: &[u8]) -> HmacSha256 {
    // A 32-byte key is always accepted by HMAC.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(PROOF_CONTEXT);
    mac.update(b"\0");
    mac.update(service.as_bytes());
    mac.update(b"\0");
    mac.update(issued_at.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(nonce);
    mac
}

/// A fresh IssueServiceToken request for `target`.
pub fn service_token_request(secret: &str, target: Target) -> IssueServiceTokenRequest {
    let mut nonce = vec![0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    let issued_at = chrono::Utc::now().timestamp();
    let service = target.name().to_string();
    let proof = service_proof(&service_key(secret, target), &service, issued_at, &nonce);
    IssueServiceTokenRequest {
        service,
        issued_at,
        nonce,
        proof,
    }
}

/// The shared service secret: the configured one, else the one in the data directory
/// (created, readable by the owner only, on first use). Refused when shorter than
/// [`MIN_SECRET_BYTES`].
pub fn resolve_secret(config: &Config) -> crate::Result<String> {
    if let Some(s) = config.auth.service_secret.as_ref() {
        return check_secret(s.trim(), "STOCKMESH_SERVICE_SECRET").map(str::to_string);
    }
    let path = config.data_dir.join("service-secret");
    read_or_create_secret(&path)
}

fn check_secret<'a>(secret: &'a str, origin: &str) -> crate::Result<&'a str> {
    if secret.len() < MIN_SECRET_BYTES {
        let what = if secret.is_empty() {
            "is empty".to_string()
        } else {
            format!("is {} bytes", secret.len())
        };
        return Err(crate::Error::Config(format!(
            "the service secret ({origin}) {what}; it must be at least {MIN_SECRET_BYTES} bytes \
             (e.g. `openssl rand -hex 32`)"
        )));
    }
    Ok(secret)
}

fn read_or_create_secret(path: &Path) -> crate::Result<String> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(s) => return check_secret(s.trim(), &origin).map(str::to_string),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    // Written whole to a temporary file, then linked into place: a crash leaves either no
    // secret or a complete one, never an empty file. A link (unlike a rename) fails when
    // another process of the mesh created the secret first, whose secret then wins.
    let tmp = path.with_file_name(format!(
        ".service-secret.{}.{}",
        std::process::id(),
        hex::encode(&bytes[..4])
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        std::io::Write::write_all(&mut f, secret.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let theirs = std::fs::read_to_string(path)?;
            check_secret(theirs.trim(), &origin).map(str::to_string)
        }
        Err(e) => Err(e.into()),
    }
}

/// Vouches for the client address the gateway forwards to services, so that auth can
/// throttle logins per (email, client) behind the gateway without trusting a header any
/// caller could set.
#[derive(Clone)]
pub struct ClientAttestor {
    key: [u8; 32],
}

impl ClientAttestor {
    pub fn new(secret: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"stockmesh-client-attestation\0");
        h.update(secret.as_bytes());
        Self {
            key: h.finalize().into(),
        }
    }

    fn proof(&self, ip: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(ip.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Replaces any client-supplied attestation in `headers` with one for `ip`.
    pub fn stamp(&self, ip: IpAddr, headers: &mut http::HeaderMap) {
        headers.remove(CLIENT_IP_HEADER);
        headers.remove(CLIENT_PROOF_HEADER);
        let ip = ip.to_string();
        let proof = self.proof(&ip);
        if let (Ok(ip), Ok(proof)) = (ip.parse(), proof.parse()) {
            headers.insert(CLIENT_IP_HEADER, ip);
            headers.insert(CLIENT_PROOF_HEADER, proof);
        }
    }

    /// The attested client address, when both headers are present and the proof holds.
    pub fn verified_client(&self, headers: &http::HeaderMap) -> Option<IpAddr> {
        let ip = headers.get(CLIENT_IP_HEADER)?.to_str().ok()?;
        let proof = headers.get(CLIENT_PROOF_HEADER)?.to_str().ok()?;
        let expected = self.proof(ip);
        // Constant-time comparison through the MAC's own verify would need raw bytes;
        // both are fixed-length hex, so compare every byte.
        let same = expected.len() == proof.len()
            && expected
                .bytes()
                .zip(proof.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same { ip.parse().ok() } else { None }
    }
}

/// A service's credential: obtains its access token from auth with a proof of the
/// shared secret (IssueServiceToken, never the public Login) and caches it.
pub struct ServiceIdentity {
    target: Target,
    secret: String,
    auth: AuthServiceClient<UpstreamChannel>,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl ServiceIdentity {
    pub fn new(target: Target, secret: &str, auth: UpstreamChannel) -> Self {
        Self {
            target,
            secret: secret.to_string(),
            auth: AuthServiceClient::new(auth.clone())
                .max_decoding_message_size(auth.max_message_bytes()),
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
            .issue_service_token(service_token_request(&self.secret, self.target))
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
    fn keys_differ_per_service_and_secret() {
        let a = service_key("s", Target::Orders);
        assert_eq!(a, service_key("s", Target::Orders));
        assert_ne!(a, service_key("s", Target::Inventory));
        assert_ne!(a, service_key("t", Target::Orders));
    }

    #[test]
    fn proofs_verify_only_unchanged() {
        let key = service_key("s", Target::Orders);
        let p = service_proof(&key, "orders", 100, b"nonce-nonce-nonce");
        assert!(verify_service_proof(
            &key,
            "orders",
            100,
            b"nonce-nonce-nonce",
            &p
        ));
        assert!(!verify_service_proof(
            &key,
            "orders",
            101,
            b"nonce-nonce-nonce",
            &p
        ));
        assert!(!verify_service_proof(
            &key,
            "gateway",
            100,
            b"nonce-nonce-nonce",
            &p
        ));
        assert!(!verify_service_proof(
            &key,
            "orders",
            100,
            b"nonce-nonce-noncf",
            &p
        ));
        let other = service_key("t", Target::Orders);
        assert!(!verify_service_proof(
            &other,
            "orders",
            100,
            b"nonce-nonce-nonce",
            &p
        ));
    }

    #[test]
    fn attestations_cannot_be_forged() {
        let a = ClientAttestor::new("secret");
        let mut h = http::HeaderMap::new();
        h.insert(CLIENT_IP_HEADER, "10.0.0.9".parse().unwrap());
        h.insert(CLIENT_PROOF_HEADER, "00".parse().unwrap());
        assert_eq!(a.verified_client(&h), None, "forged proof");
        a.stamp(IpAddr::from([10, 0, 0, 1]), &mut h);
        assert_eq!(a.verified_client(&h), Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(ClientAttestor::new("other").verified_client(&h), None);
        h.insert(CLIENT_IP_HEADER, "10.0.0.2".parse().unwrap());
        assert_eq!(
            a.verified_client(&h),
            None,
            "address changed after stamping"
        );
    }

    #[test]
    fn short_or_empty_secret_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("stockmesh-secret-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("service-secret");
        std::fs::write(&path, "").unwrap();
        let err = read_or_create_secret(&path).unwrap_err().to_string();
        assert!(
            err.contains("is empty") && err.contains("32 bytes"),
            "{err}"
        );
        std::fs::write(&path, "short").unwrap();
        let err = read_or_create_secret(&path).unwrap_err().to_string();
        assert!(err.contains("is 5 bytes"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
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
