//! Register, login, refresh rotation, reuse detection, logout, throttling.

use stockmesh::proto::auth::v1::*;
use stockmesh::testing::{Backend, TestMesh, with_token};
use tonic::Code;

use crate::support::{Auth, expect_code, login, register};

async fn register_login_and_use_the_token(backend: Backend) {
    let auth = Auth::start(backend).await;
    let user = register(&auth.client, "  Ann@Example.COM ", "password-123")
        .await
        .unwrap();
    assert_eq!(user.email, "ann@example.com", "emails are normalised");
    assert_eq!(user.role, Role::Customer as i32);
    assert_eq!(user.display_name, "Customer");
    assert!(uuid::Uuid::parse_str(&user.id).is_ok());

    // Any spelling of the email signs in.
    let pair = login(&auth.client, "ANN@example.com", "password-123").await;
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.expires_in, 900);
    assert_eq!(
        pair.user.as_ref().map(|u| u.id.as_str()),
        Some(user.id.as_str())
    );
    assert_eq!(pair.access_token.split('.').count(), 3, "a JWT");

    let claims = auth
        .client()
        .verify_token(VerifyTokenRequest {
            token: pair.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claims.user_id, user.id);
    assert_eq!(claims.email, "ann@example.com");
    assert_eq!(claims.role, Role::Customer as i32);
    let exp = claims.expires_at.unwrap().seconds;
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now + 890..=now + 901).contains(&exp),
        "exp {exp} now {now}"
    );

    let profile = auth
        .client()
        .get_profile(with_token(GetProfileRequest {}, &pair.access_token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(profile, user);

    // Duplicate email, in any spelling.
    let err = register(&auth.client, "ann@example.com ", "password-456").await;
    expect_code(err, Code::AlreadyExists);
}

async fn wrong_credentials_get_one_generic_message(backend: Backend) {
    let auth = Auth::start(backend).await;
    register(&auth.client, "bob@example.com", "password-123")
        .await
        .unwrap();
    let mut client = auth.client();
    let wrong_password = client
        .login(LoginRequest {
            email: "bob@example.com".into(),
            password: "password-124".into(),
        })
        .await;
    let unknown_email = client
        .login(LoginRequest {
            email: "nobody@example.com".into(),
            password: "password-123".into(),
        })
        .await;
    let a = expect_code(wrong_password, Code::Unauthenticated);
    let b = expect_code(unknown_email, Code::Unauthenticated);
    assert_eq!(a, "invalid email or password");
    assert_eq!(a, b, "the message must not reveal which emails exist");
}

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) {
    let auth = Auth::start(backend).await;
    register(&auth.client, "cat@example.com", "password-123")
        .await
        .unwrap();
    let first = login(&auth.client, "cat@example.com", "password-123").await;
    let mut client = auth.client();

    let second = client
        .refresh(RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(second.token_type, "Bearer");
    assert_eq!(second.user.unwrap().email, "cat@example.com");

    let third = client
        .refresh(RefreshRequest {
            refresh_token: second.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    // A second, independent session of the same user is not affected by what follows.
    let other_session = login(&auth.client, "cat@example.com", "password-123").await;

    // Replaying the first (rotated) token: refused, and the whole family is revoked.
    let replay = client
        .refresh(RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await;
    expect_code(replay, Code::Unauthenticated);
    let latest = client
        .refresh(RefreshRequest {
            refresh_token: third.refresh_token.clone(),
        })
        .await;
    expect_code(latest, Code::Unauthenticated);

    client
        .refresh(RefreshRequest {
            refresh_token: other_session.refresh_token,
        })
        .await
        .expect("another session survives");

    let garbage = client
        .refresh(RefreshRequest {
            refresh_token: "not-a-token".into(),
        })
        .await;
    expect_code(garbage, Code::Unauthenticated);
    let empty = client
        .refresh(RefreshRequest {
            refresh_token: String::new(),
        })
        .await;
    assert!(expect_code(empty, Code::InvalidArgument).starts_with("refresh_token"));
}

async fn concurrent_refreshes_of_one_token_cannot_both_succeed(backend: Backend) {
    let auth = Auth::start(backend).await;
    register(&auth.client, "dan@example.com", "password-123")
        .await
        .unwrap();
    for _ in 0..3 {
        let pair = login(&auth.client, "dan@example.com", "password-123").await;
        let calls = (0..4).map(|_| {
            let mut client = auth.client();
            let token = pair.refresh_token.clone();
            async move {
                client
                    .refresh(RefreshRequest {
                        refresh_token: token,
                    })
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "exactly one concurrent refresh of a token wins");
        for r in results.into_iter().filter_map(Result::err) {
            assert_eq!(r.code(), Code::Unauthenticated, "{r:?}");
        }
    }
}

async fn logout_revokes_and_is_idempotent(backend: Backend) {
    let auth = Auth::start(backend).await;
    register(&auth.client, "eve@example.com", "password-123")
        .await
        .unwrap();
    let pair = login(&auth.client, "eve@example.com", "password-123").await;
    let mut client = auth.client();
    for _ in 0..2 {
        client
            .logout(LogoutRequest {
                refresh_token: pair.refresh_token.clone(),
            })
            .await
            .expect("logout (twice) succeeds");
    }
    client
        .logout(LogoutRequest {
            refresh_token: "never-issued".into(),
        })
        .await
        .expect("unknown tokens log out fine");
    let after = client
        .refresh(RefreshRequest {
            refresh_token: pair.refresh_token.clone(),
        })
        .await;
    expect_code(after, Code::Unauthenticated);
}

async fn failed_logins_are_throttled_per_email(backend: Backend) {
    let mut mesh = TestMesh::new(backend).await;
    mesh.config.auth.login_burst = 3;
    mesh.config.auth.login_per_minute = 1;
    let auth = Auth::start_with(mesh).await;
    register(&auth.client, "fay@example.com", "password-123")
        .await
        .unwrap();
    let mut client = auth.client();
    let attempt = |email: &str, password: &str| {
        let mut client = client.clone();
        let req = LoginRequest {
            email: email.into(),
            password: password.into(),
        };
        async move { client.login(req).await }
    };
    for _ in 0..3 {
        expect_code(
            attempt("fay@example.com", "wrong-pass").await,
            Code::Unauthenticated,
        );
    }
    let msg = expect_code(
        attempt("fay@example.com", "wrong-pass").await,
        Code::ResourceExhausted,
    );
    assert_eq!(msg, "too many failed logins for this email; retry later");
    // Locked: even the right password is refused, so guessing learns nothing.
    expect_code(
        attempt("FAY@example.com", "password-123").await,
        Code::ResourceExhausted,
    );
    // Other emails are unaffected, and unknown emails are throttled the same way.
    attempt(TestMesh::ADMIN_EMAIL, TestMesh::ADMIN_PASSWORD)
        .await
        .expect("another email still signs in");
    for _ in 0..3 {
        expect_code(
            attempt("ghost@example.com", "whatever-1").await,
            Code::Unauthenticated,
        );
    }
    expect_code(
        attempt("ghost@example.com", "whatever-1").await,
        Code::ResourceExhausted,
    );
    let _ = client.get_jwks(GetJwksRequest {}).await.unwrap();
}

stockmesh::db_tests!(
    register_login_and_use_the_token,
    wrong_credentials_get_one_generic_message,
    refresh_rotates_and_reuse_revokes_the_family,
    concurrent_refreshes_of_one_token_cannot_both_succeed,
    logout_revokes_and_is_idempotent,
    failed_logins_are_throttled_per_email,
);
