//! Access tokens that must be refused: expired, tampered, `alg: none`, signed by another
//! key under the real `kid`, HMAC-with-the-public-key, wrong issuer or audience. And the
//! one that must be accepted: a correctly signed one, even after auth restarts.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sea_orm::{EntityTrait, QueryOrder};
use stockmesh::Target;
use stockmesh::authn::{AUDIENCE, Claims, ISSUER};
use stockmesh::proto::auth::v1::*;
use stockmesh::testing::{Backend, with_token};
use stockmesh_auth::entity::signing_key;
use tonic::Code;

use crate::support::{Auth, Client, expect_code, login, register};

/// The key auth signs with, read from its database as an attacker with a DB dump would.
async fn real_key(auth: &Auth) -> (String, EncodingKey) {
    let db = sea_orm::Database::connect(auth.mesh.database_url(Target::Auth))
        .await
        .unwrap();
    let row = signing_key::Entity::find()
        .order_by_desc(signing_key::Column::Kid)
        .one(&db)
        .await
        .unwrap()
        .expect("auth stored a signing key");
    db.close().await.unwrap();
    let der = STANDARD.decode(row.private_key).unwrap();
    (row.kid, EncodingKey::from_ed_der(&der))
}

fn claims_for(user: &User, exp_in: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: user.id.clone(),
        email: user.email.clone(),
        role: "ROLE_ADMIN".into(),
        exp: now + exp_in,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
    }
}

fn sign(kid: &str, key: &EncodingKey, claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

/// Refused by VerifyToken and, as a bearer token, by an authenticated RPC.
async fn assert_refused(client: &Client, token: &str, what: &str) {
    let verify = client
        .clone()
        .verify_token(VerifyTokenRequest {
            token: token.to_string(),
        })
        .await;
    assert_eq!(
        verify.as_ref().map_err(|s| s.code()).err(),
        Some(Code::Unauthenticated),
        "{what}: VerifyToken gave {verify:?}"
    );
    let profile = client
        .clone()
        .get_profile(with_token(GetProfileRequest {}, token))
        .await;
    assert_eq!(
        profile.as_ref().map_err(|s| s.code()).err(),
        Some(Code::Unauthenticated),
        "{what}: GetProfile gave {profile:?}"
    );
}

async fn forged_and_expired_tokens_are_refused(backend: Backend) {
    let auth = Auth::start(backend).await;
    let user = register(&auth.client, "mal@example.com", "password-123")
        .await
        .unwrap();
    let good = login(&auth.client, "mal@example.com", "password-123")
        .await
        .access_token;
    let (kid, key) = real_key(&auth).await;

    // Control: a token minted with the real key is accepted, so the refusals below are
    // about what was changed and not about minting.
    let minted = sign(&kid, &key, &claims_for(&user, 60));
    let ok = auth
        .client()
        .verify_token(VerifyTokenRequest { token: minted })
        .await
        .expect("a correctly minted token verifies");
    assert_eq!(ok.into_inner().role, Role::Admin as i32);

    let expired = sign(&kid, &key, &claims_for(&user, -5));
    assert_refused(&auth.client, &expired, "expired").await;
    let msg = expect_code(
        auth.client()
            .verify_token(VerifyTokenRequest { token: expired })
            .await,
        Code::Unauthenticated,
    );
    assert!(msg.contains("expired"), "{msg}");

    let parts: Vec<&str> = good.split('.').collect();
    // Signature bytes changed.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let tampered_sig = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    assert_refused(&auth.client, &tampered_sig, "tampered signature").await;
    // Payload changed (customer → admin), signature kept.
    let payload = b64(&serde_json::to_value(claims_for(&user, 600)).unwrap());
    let tampered_payload = format!("{}.{}.{}", parts[0], payload, parts[2]);
    assert_refused(&auth.client, &tampered_payload, "tampered payload").await;

    // alg: none, with and without the real kid.
    for header in [
        serde_json::json!({"alg": "none", "typ": "JWT"}),
        serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid}),
    ] {
        let none = format!("{}.{}.", b64(&header), payload);
        assert_refused(&auth.client, &none, "alg none").await;
    }

    // Another Ed25519 key claiming the real kid.
    let other = SigningKey::generate(&mut rand::rngs::OsRng);
    let other = EncodingKey::from_ed_der(other.to_pkcs8_der().unwrap().as_bytes());
    let impostor = sign(&kid, &other, &claims_for(&user, 600));
    assert_refused(&auth.client, &impostor, "other key, same kid").await;
    // And under an unknown kid.
    let unknown = sign("no-such-kid", &other, &claims_for(&user, 600));
    assert_refused(&auth.client, &unknown, "unknown kid").await;

    // HS256 keyed with the public key (algorithm confusion).
    let jwks = auth
        .client()
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let x = URL_SAFE_NO_PAD.decode(&jwks.keys[0].x).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let confused =
        jsonwebtoken::encode(&hs, &claims_for(&user, 600), &EncodingKey::from_secret(&x)).unwrap();
    assert_refused(&auth.client, &confused, "HS256 with the public key").await;

    // The real key, but for someone else.
    let mut wrong_iss = claims_for(&user, 600);
    wrong_iss.iss = "evil-auth".into();
    assert_refused(&auth.client, &sign(&kid, &key, &wrong_iss), "wrong issuer").await;
    let mut wrong_aud = claims_for(&user, 600);
    wrong_aud.aud = "another-mesh".into();
    assert_refused(
        &auth.client,
        &sign(&kid, &key, &wrong_aud),
        "wrong audience",
    )
    .await;
    let mut bad_role = claims_for(&user, 600);
    bad_role.role = "ROLE_GOD".into();
    assert_refused(&auth.client, &sign(&kid, &key, &bad_role), "unknown role").await;

    assert_refused(&auth.client, "garbage", "garbage").await;
    let empty = auth
        .client()
        .verify_token(VerifyTokenRequest {
            token: String::new(),
        })
        .await;
    assert!(expect_code(empty, Code::InvalidArgument).starts_with("token"));
}

async fn jwks_publishes_the_signing_key(backend: Backend) {
    let auth = Auth::start(backend).await;
    let jwks = auth
        .client()
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    let k = &jwks.keys[0];
    assert_eq!(
        (
            k.kty.as_str(),
            k.crv.as_str(),
            k.alg.as_str(),
            k.r#use.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA", "sig")
    );
    assert_eq!(URL_SAFE_NO_PAD.decode(&k.x).unwrap().len(), 32);
    let doc: serde_json::Value = serde_json::from_str(&jwks.jwks_json).unwrap();
    assert_eq!(doc["keys"][0]["kid"], k.kid.as_str());
    assert_eq!(doc["keys"][0]["x"], k.x.as_str());

    // Tokens carry that kid, and a verifier fed only the JWKS accepts them.
    let admin = auth.admin().await;
    let header = jsonwebtoken::decode_header(&admin.access_token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(k.kid.as_str()));
    let verifier = stockmesh::authn::Verifier::with_keys(&jwks.keys).unwrap();
    let caller = verifier.verify(&admin.access_token).await.unwrap();
    assert_eq!(caller.role, Role::Admin);
}

async fn tokens_survive_a_restart(backend: Backend) {
    let auth = Auth::start(backend).await;
    let before = auth.admin().await;
    let kid_before = auth
        .client()
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;

    let auth = auth.restart().await;
    let client = auth.client();

    let after = client
        .clone()
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(after, kid_before, "the same key after a restart");
    let claims = client
        .clone()
        .verify_token(VerifyTokenRequest {
            token: before.access_token.clone(),
        })
        .await
        .expect("a token issued before the restart still verifies")
        .into_inner();
    assert_eq!(claims.email, stockmesh::testing::TestMesh::ADMIN_EMAIL);
    client
        .clone()
        .get_profile(with_token(GetProfileRequest {}, &before.access_token))
        .await
        .expect("and still authenticates calls");
    client
        .clone()
        .refresh(RefreshRequest {
            refresh_token: before.refresh_token,
        })
        .await
        .expect("refresh tokens survive too");
    // The admin was not created twice, nor its password changed.
    login(
        &client,
        stockmesh::testing::TestMesh::ADMIN_EMAIL,
        stockmesh::testing::TestMesh::ADMIN_PASSWORD,
    )
    .await;
}

stockmesh::db_tests!(
    forged_and_expired_tokens_are_refused,
    jwks_publishes_the_signing_key,
    tokens_survive_a_restart,
);
