//! The Ed25519 keys that sign access tokens, and the JWKS that publishes them.
//!
//! Keys live in the `signing_keys` table: a restart, or another replica on the same
//! PostgreSQL database, signs and verifies with the same keys, so tokens stay valid. The
//! first start creates one. Every stored key is published and accepted; the newest signs.
//! If two replicas race to create the first key, both keys end up stored and published,
//! and this service's own verifier re-reads the table when it meets a `kid` it does not
//! know yet, so either replica accepts the other's tokens.
//!
//! Rotation ([`KeyRing::rotate`], [`crate::service::Auth::rotate_signing_key`]) stores a
//! new key and signs with it from then on; the old keys stay stored and published, so a
//! token signed before the rotation verifies until it expires. Other services meet the
//! new `kid` on the first new token and refetch the JWKS ([`stockmesh::authn`]); other
//! auth replicas accept it at once (their verifier re-reads the table) and sign with it
//! after their next start. Old keys are never deleted (retiring them is not built yet).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::OsRng;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection, EntityTrait, QueryOrder};
use stockmesh::authn::{Jwk, KeySource, Verifier};
use tonic::Status;

use crate::entity::signing_key;
use crate::error::{Error, Result};

/// Signs access tokens with the newest stored key and verifies them with any stored key.
pub struct KeyRing {
    signer: std::sync::RwLock<Signer>,
    verifier: Verifier,
    db: DatabaseConnection,
}

/// The key new tokens are signed with.
struct Signer {
    kid: String,
    encoding: EncodingKey,
}

impl KeyRing {
    /// Loads the stored keys, creating the first one when there is none.
    pub async fn load_or_create(db: &DatabaseConnection) -> Result<Self> {
        let mut rows = stored(db).await?;
        if rows.is_empty() {
            let created = store_new(db).await?;
            tracing::info!(kid = %created.kid, "created the first token signing key");
            rows = stored(db).await?;
        }
        // Rows are sorted by kid, and kids are UUIDv7: the last one is the newest.
        let newest = rows
            .last()
            .ok_or_else(|| Error::Crypto("no signing key after creating one".into()))?;
        let der = STANDARD
            .decode(&newest.private_key)
            .map_err(|e| Error::Crypto(format!("stored key {} is not base64: {e}", newest.kid)))?;
        let signing = SigningKey::from_pkcs8_der(&der)
            .map_err(|e| Error::Crypto(format!("stored key {} is not PKCS#8: {e}", newest.kid)))?;
        if URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes()) != newest.public_key {
            return Err(Error::Crypto(format!(
                "stored key {}: public key does not match the private key",
                newest.kid
            )));
        }
        let verifier = Verifier::remote(DbKeys { db: db.clone() });
        verifier
            .insert(&rows.iter().map(jwk).collect::<Vec<_>>())
            .map_err(|e| Error::Crypto(format!("stored public key unusable: {e}")))?;
        Ok(Self {
            signer: std::sync::RwLock::new(Signer {
                kid: newest.kid.clone(),
                encoding: EncodingKey::from_ed_der(&der),
            }),
            verifier,
            db: db.clone(),
        })
    }

    /// Signs `claims` as a JWT with `alg: EdDSA` and the current key's `kid`.
    pub fn sign(&self, claims: &stockmesh::authn::Claims) -> Result<String> {
        let signer = self.signer.read().unwrap_or_else(|p| p.into_inner());
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.encoding)
            .map_err(|e| Error::Crypto(format!("signing an access token: {e}")))
    }

    /// The `kid` new tokens carry.
    pub fn current_kid(&self) -> String {
        self.signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .kid
            .clone()
    }

    /// Stores a new key and signs with it from now on; every older key stays stored,
    /// published and accepted (see the module docs). Returns the new `kid`.
    pub async fn rotate(&self) -> Result<String> {
        let created = store_new(&self.db).await?;
        let der = STANDARD
            .decode(&created.private_key)
            .map_err(|e| Error::Crypto(format!("new key is not base64: {e}")))?;
        self.verifier
            .insert(&[jwk_of(&created.kid, &created.public_key)])
            .map_err(|e| Error::Crypto(format!("new public key unusable: {e}")))?;
        let mut signer = self.signer.write().unwrap_or_else(|p| p.into_inner());
        *signer = Signer {
            kid: created.kid.clone(),
            encoding: EncodingKey::from_ed_der(&der),
        };
        tracing::info!(kid = %created.kid, "rotated the token signing key");
        Ok(created.kid)
    }

    /// Verifies access tokens issued by this service (or a replica sharing its database).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Every stored public key, as JWKs.
    pub async fn jwks(&self) -> Result<Vec<Jwk>> {
        Ok(stored(&self.db).await?.iter().map(jwk).collect())
    }
}

/// The JWKS JSON document (`{"keys": [...]}`, RFC 7517) for `keys`.
pub fn jwks_json(keys: &[Jwk]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": k.r#use,
            })
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

async fn stored(db: &DatabaseConnection) -> Result<Vec<signing_key::Model>> {
    Ok(signing_key::Entity::find()
        .order_by_asc(signing_key::Column::Kid)
        .all(db)
        .await?)
}

fn jwk(row: &signing_key::Model) -> Jwk {
    jwk_of(&row.kid, &row.public_key)
}

fn jwk_of(kid: &str, public_key: &str) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: public_key.to_string(),
        kid: kid.to_string(),
        alg: "EdDSA".into(),
        r#use: "sig".into(),
    }
}

/// Generates a key pair and stores it.
async fn store_new(db: &DatabaseConnection) -> Result<NewKey> {
    let created = generate()?;
    signing_key::ActiveModel {
        kid: Set(created.kid.clone()),
        private_key: Set(created.private_key.clone()),
        public_key: Set(created.public_key.clone()),
        created_at: Set(chrono::Utc::now()),
    }
    .insert(db)
    .await?;
    Ok(created)
}

/// A new key pair, encoded for storage.
struct NewKey {
    kid: String,
    private_key: String,
    public_key: String,
}

fn generate() -> Result<NewKey> {
    let signing = SigningKey::generate(&mut OsRng);
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| Error::Crypto(format!("encoding a new signing key: {e}")))?;
    Ok(NewKey {
        kid: uuid::Uuid::now_v7().to_string(),
        private_key: STANDARD.encode(der.as_bytes()),
        public_key: URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes()),
    })
}

/// Lets this service's verifier pick up keys another replica stored.
struct DbKeys {
    db: DatabaseConnection,
}

impl KeySource for DbKeys {
    fn fetch(&self) -> BoxFuture<'_, std::result::Result<Vec<Jwk>, Status>> {
        Box::pin(async move {
            let rows = stored(&self.db).await.map_err(Status::from)?;
            Ok(rows.iter().map(jwk).collect())
        })
    }
}
