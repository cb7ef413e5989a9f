//! IssueServiceToken: how the mesh's own services (orders, inventory, gateway) get their
//! access tokens.
//!
//! A service proves that it holds the shared service secret with an HMAC over its name, a
//! timestamp and a nonce ([`stockmesh::identity::service_proof`]). The secret never
//! travels, a proof is accepted once (nonces are remembered for the proof window) and only
//! within [`PROOF_WINDOW_SECS`] of this clock. Nothing here is throttled: an online guess
//! at a 256-bit HMAC key is hopeless, and nothing an anonymous caller sends can change
//! whether the real service's next proof is accepted. That is the point: the public Login
//! refuses service emails, so the login throttle can never lock a service out.
//!
//! The replay memory holds only nonces of *valid* proofs, so it grows with the services'
//! own renewals (a few per token lifetime), never with what an attacker sends.

use std::collections::HashMap;
use std::sync::Mutex;

use stockmesh::Target;
use stockmesh::identity::{PROOF_WINDOW_SECS, SERVICE_ACCOUNTS, service_key, verify_service_proof};
use stockmesh::proto::auth::v1::IssueServiceTokenRequest;

use crate::error::{Error, Result};

/// Nonce lengths accepted.
const NONCE_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// Verifies service proofs.
pub struct ServiceProofs {
    keys: Vec<(Target, [u8; 32])>,
    /// Nonces of accepted proofs → their `issued_at`, forgotten once outside the window.
    seen: Mutex<HashMap<Vec<u8>, i64>>,
}

impl ServiceProofs {
    pub fn new(secret: &str) -> Self {
        Self {
            keys: SERVICE_ACCOUNTS
                .iter()
                .map(|t| (*t, service_key(secret, *t)))
                .collect(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The service a valid, fresh, unused proof speaks for.
    pub fn check(&self, req: &IssueServiceTokenRequest, now: i64) -> Result<Target> {
        let Some((target, key)) = self.keys.iter().find(|(t, _)| t.name() == req.service) else {
            let names: Vec<&str> = SERVICE_ACCOUNTS.iter().map(|t| t.name()).collect();
            return Err(Error::invalid(
                "service",
                format!("must be one of {}", names.join(", ")),
            ));
        };
        if !NONCE_BYTES.contains(&req.nonce.len()) {
            return Err(Error::invalid("nonce", "must be 16 to 64 bytes"));
        }
        if req.proof.is_empty() {
            return Err(Error::invalid("proof", "is required"));
        }
        if (req.issued_at - now).abs() > PROOF_WINDOW_SECS {
            return Err(Error::ServiceCredentialRefused(format!(
                "issued_at is more than {PROOF_WINDOW_SECS} s from auth's clock (clock skew?)"
            )));
        }
        if !verify_service_proof(key, &req.service, req.issued_at, &req.nonce, &req.proof) {
            tracing::warn!(service = %req.service, "service proof refused: is STOCKMESH_SERVICE_SECRET the same everywhere?");
            return Err(Error::ServiceCredentialRefused(
                "proof does not match (is STOCKMESH_SERVICE_SECRET the same everywhere?)".into(),
            ));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| (*at - now).abs() <= PROOF_WINDOW_SECS);
        if seen.insert(req.nonce.clone(), req.issued_at).is_some() {
            return Err(Error::ServiceCredentialRefused(
                "this proof was already used".into(),
            ));
        }
        Ok(*target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockmesh::identity::service_token_request;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_proof_is_accepted_once_and_only_fresh() {
        let proofs = ServiceProofs::new(SECRET);
        let req = service_token_request(SECRET, Target::Orders);
        let now = req.issued_at;
        assert_eq!(proofs.check(&req, now).unwrap(), Target::Orders);
        assert!(matches!(
            proofs.check(&req, now),
            Err(Error::ServiceCredentialRefused(_))
        ));
        let late = service_token_request(SECRET, Target::Orders);
        assert!(matches!(
            proofs.check(&late, late.issued_at + PROOF_WINDOW_SECS + 1),
            Err(Error::ServiceCredentialRefused(_))
        ));
        let wrong = service_token_request("another-secret-of-32-bytes-or-more!", Target::Orders);
        assert!(matches!(
            proofs.check(&wrong, wrong.issued_at),
            Err(Error::ServiceCredentialRefused(_))
        ));
        let mut renamed = service_token_request(SECRET, Target::Orders);
        renamed.service = "gateway".into();
        assert!(proofs.check(&renamed, renamed.issued_at).is_err());
        renamed.service = "products".into();
        assert!(matches!(
            proofs.check(&renamed, renamed.issued_at),
            Err(Error::InvalidField {
                field: "service",
                ..
            })
        ));
    }
}
