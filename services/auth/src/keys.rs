//! The Ed25519 keys that sign access tokens, and the JWKS that publishes them.
//!
//! Keys live in the `signing_keys` table: a restart, or another replica on the same
//! PostgreSQL database, signs and verifies with the same keys, so tokens stay valid. The
//! first start creates one. Every stored key is published and accepted; the newest signs.
//! If two replicas race to create the first key, both keys end up stored and published,
//! and this service's own verifier re-reads the table when it meets a `kid` it does not
//! know yet, so either replica accepts the other's tokens.

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
    kid: String,
    encoding: EncodingKey,
    verifier: Verifier,
    db: DatabaseConnection,
}

impl KeyRing {
    /// Loads the stored keys, creating the first one when there is none.
    pub async fn load_or_create(db: &DatabaseConnection) -> Result<Self> {
        let mut rows = stored(db).await?;
        if rows.is_empty() {
            let created = generate()?;
            tracing::info!(kid = %created.kid, "created the first token signing key");
            signing_key::ActiveModel {
                kid: Set(created.kid),
                private_key: Set(created.private_key),
                public_key: Set(created.public_key),
                created_at: Set(chrono::Utc::now()),
            }
            .insert(db)
            .await?;
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
            kid: newest.kid.clone(),
            encoding: EncodingKey::from_ed_der(&der),
            verifier,
            db: db.clone(),
        })
    }

    /// Signs `claims` as a JWT with `alg: EdDSA` and this ring's `kid`.
    pub fn sign(&self, claims: &stockmesh::authn::Claims) -> Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| Error::Crypto(format!("signing an access token: {e}")))
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
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: row.public_key.clone(),
        kid: row.kid.clone(),
        alg: "EdDSA".into(),
        r#use: "sig".into(),
    }
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
