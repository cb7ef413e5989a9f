//! Signing-key rotation: a second auth replica on the same database rotates; new tokens
//! carry the new `kid`, tokens signed before stay valid, the JWKS publishes both keys, the
//! other replica accepts the new tokens at once, a remote verifier (as every other service
//! has) refetches the JWKS on the new `kid`, and a restarted replica signs with the new key.

use std::time::Duration;

use stockmesh::Target;
use stockmesh::authn::{RemoteJwks, Verifier};
use stockmesh::proto::auth::v1::*;
use stockmesh::testing::{Backend, TestMesh, with_token};

use crate::support::Auth;

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("a kid")
}

async fn published_kids(auth: &Auth) -> Vec<String> {
    let keys = auth
        .client()
        .get_jwks(GetJwksRequest {})
        .await
        .expect("GetJwks")
        .into_inner()
        .keys;
    keys.into_iter().map(|k| k.kid).collect()
}

async fn rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(backend: Backend) {
    let auth = Auth::start(backend).await;
    let before = auth.admin().await.access_token;
    let old_kid = kid_of(&before);
    assert_eq!(published_kids(&auth).await, vec![old_kid.clone()]);

    // What products, inventory and orders hold; no rate limit, to see each refetch now.
    let channel = stockmesh::client::upstream(&auth.mesh.config, Target::Products, Target::Auth)
        .expect("channel to auth");
    let remote = Verifier::remote_every(RemoteJwks::new(channel), Duration::ZERO);
    remote.verify(&before).await.expect("old token, old JWKS");

    // Replica B on the same database rotates.
    let db = sea_orm::Database::connect(auth.mesh.database_url(Target::Auth))
        .await
        .expect("auth database");
    let b = stockmesh_auth::service::Auth::start(db, &auth.mesh.config)
        .await
        .expect("replica B");
    assert_eq!(b.signing_kid(), old_kid);
    let new_kid = b.rotate_signing_key().await.expect("rotate");
    assert_ne!(new_kid, old_kid);
    assert_eq!(b.signing_kid(), new_kid);
    let fresh = b
        .login(TestMesh::ADMIN_EMAIL, TestMesh::ADMIN_PASSWORD, None)
        .await
        .expect("login on B")
        .access_token;
    assert_eq!(kid_of(&fresh), new_kid, "new tokens use the new key");

    // Both keys are published, oldest first.
    assert_eq!(
        published_kids(&auth).await,
        vec![old_kid.clone(), new_kid.clone()]
    );
    // Replica A accepts B's new token (its verifier re-reads the table on the new kid)…
    let claims = auth
        .client()
        .verify_token(VerifyTokenRequest {
            token: fresh.clone(),
        })
        .await
        .expect("A verifies the new token")
        .into_inner();
    assert_eq!(claims.email, TestMesh::ADMIN_EMAIL);
    auth.client()
        .get_profile(with_token(GetProfileRequest {}, &fresh))
        .await
        .expect("and it authenticates calls on A");
    // …and the token signed before the rotation stays valid everywhere.
    b.verify(&before).await.expect("old token on B");
    auth.client()
        .get_profile(with_token(GetProfileRequest {}, &before))
        .await
        .expect("old token on A");
    // A remote verifier meets the unknown kid, refetches, and accepts.
    let caller = remote
        .verify(&fresh)
        .await
        .expect("new token, refetched JWKS");
    assert_eq!(caller.role, Role::Admin);
    remote.verify(&before).await.expect("old token still");

    // A restarted replica signs with the newest key; the old token still verifies.
    let auth = auth.restart().await;
    let after = auth.admin().await.access_token;
    assert_eq!(kid_of(&after), new_kid);
    auth.client()
        .verify_token(VerifyTokenRequest { token: before })
        .await
        .expect("old token after the restart");
    b.db().clone().close().await.expect("close B's pool");
}

stockmesh::db_tests!(rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key);
