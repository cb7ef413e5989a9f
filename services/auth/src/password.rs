//! Argon2id password hashing, off the async runtime.
//!
//! One hash costs tens of milliseconds of CPU and 19 MiB of memory (the OWASP baseline,
//! argon2's defaults: m=19 MiB, t=2, p=1), so every hash and verify runs in
//! `spawn_blocking`: a burst of logins must not stall the reactor that serves every other
//! call. A semaphore caps hashes in flight at twice the core count: more would not finish
//! sooner, and a login flood would otherwise fan out to hundreds of blocking threads with
//! 19 MiB each.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::{Error, Result};

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

fn in_flight() -> &'static Semaphore {
    static HASHES: OnceLock<Semaphore> = OnceLock::new();
    HASHES.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Semaphore::new(cores * 2)
    })
}

async fn permit() -> Result<SemaphorePermit<'static>> {
    in_flight()
        .acquire()
        .await
        .map_err(|e| Error::Crypto(format!("hashing semaphore: {e}")))
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of `password`.
pub async fn hash(password: String) -> Result<String> {
    let permit = permit().await?;
    // The permit moves into the task: it is held until hashing ends, even if the caller
    // gives up first.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Crypto(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| Error::Crypto(format!("hashing task: {e}")))?
}

/// True when `password` matches the PHC string `hash`. A malformed stored hash never
/// matches (and is logged), so a corrupt row cannot be logged into.
pub async fn verify(password: String, hash: String) -> Result<bool> {
    let permit = permit().await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        match PasswordHash::new(&hash) {
            Ok(parsed) => argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "stored password hash is malformed");
                false
            }
        }
    })
    .await
    .map_err(|e| Error::Crypto(format!("verifying task: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("correct horse".into()).await.unwrap();
        let b = hash("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salts must differ");
        assert!(verify("correct horse".into(), a.clone()).await.unwrap());
        assert!(!verify("wrong horse".into(), a).await.unwrap());
        assert!(!verify("x".into(), "not a hash".into()).await.unwrap());
    }
}
