//! Validation, user administration, pagination and the bootstrap accounts.

use std::collections::HashSet;

use stockmesh::Target;
use stockmesh::identity::{SERVICE_ACCOUNTS, service_email};
use stockmesh::proto::auth::v1::*;
use stockmesh::testing::{Backend, TestMesh, with_token};
use tonic::Code;

use crate::support::{Auth, expect_code, login};

async fn validation_errors_name_the_field(backend: Backend) {
    let auth = Auth::start(backend).await;
    let admin = auth.admin().await.access_token;
    let cases: &[(&str, &str, &str, &str)] = &[
        // (email, password, display_name, field)
        ("", "password-123", "Ann", "email"),
        ("ann", "password-123", "Ann", "email"),
        ("ann@", "password-123", "Ann", "email"),
        ("@example.com", "password-123", "Ann", "email"),
        ("ann@example", "password-123", "Ann", "email"),
        ("a@b@example.com", "password-123", "Ann", "email"),
        (
            "ann@services.stockmesh.internal",
            "password-123",
            "Ann",
            "email",
        ),
        ("ann@example.com", "short", "Ann", "password"),
        ("ann@example.com", "", "Ann", "password"),
        ("ann@example.com", "password-123", "", "display_name"),
        ("ann@example.com", "password-123", "   ", "display_name"),
    ];
    let long_email = format!("{}@example.com", "a".repeat(250));
    let long_name = "n".repeat(101);
    let long_password = "p".repeat(1025);
    let dynamic = [
        (long_email.as_str(), "password-123", "Ann", "email"),
        ("ann@example.com", long_password.as_str(), "Ann", "password"),
        (
            "ann@example.com",
            "password-123",
            long_name.as_str(),
            "display_name",
        ),
    ];
    for &(email, password, display_name, field) in cases.iter().chain(dynamic.iter()) {
        let registered = auth
            .client()
            .register(RegisterRequest {
                email: email.into(),
                password: password.into(),
                display_name: display_name.into(),
            })
            .await;
        let msg = expect_code(registered, Code::InvalidArgument);
        assert!(
            msg.starts_with(&format!("{field}: ")),
            "Register({email:?}): {msg}"
        );
        let created = auth
            .client()
            .create_user(with_token(
                CreateUserRequest {
                    email: email.into(),
                    password: password.into(),
                    display_name: display_name.into(),
                    role: Role::Operator as i32,
                },
                &admin,
            ))
            .await;
        let msg = expect_code(created, Code::InvalidArgument);
        assert!(
            msg.starts_with(&format!("{field}: ")),
            "CreateUser({email:?}): {msg}"
        );
    }
    for role in [Role::Unspecified as i32, 42] {
        let created = auth
            .client()
            .create_user(with_token(
                CreateUserRequest {
                    email: "ok@example.com".into(),
                    password: "password-123".into(),
                    display_name: "Ok".into(),
                    role,
                },
                &admin,
            ))
            .await;
        assert!(expect_code(created, Code::InvalidArgument).starts_with("role: "));
    }
    let page = auth
        .client()
        .list_users(with_token(
            ListUsersRequest {
                page_size: -1,
                page_token: String::new(),
            },
            &admin,
        ))
        .await;
    assert!(expect_code(page, Code::InvalidArgument).starts_with("page_size"));
    let page = auth
        .client()
        .list_users(with_token(
            ListUsersRequest {
                page_size: 5,
                page_token: "bogus".into(),
            },
            &admin,
        ))
        .await;
    assert!(expect_code(page, Code::InvalidArgument).starts_with("page_token"));
    // Nothing invalid was stored.
    let users = auth
        .client()
        .list_users(with_token(ListUsersRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.len(), 1 + SERVICE_ACCOUNTS.len());
}

async fn admin_manages_users_and_roles(backend: Backend) {
    let auth = Auth::start(backend).await;
    let admin_login = auth.admin().await;
    let admin = admin_login.access_token.clone();
    let admin_id = admin_login.user.unwrap().id;
    let mut c = auth.client();

    let op = c
        .create_user(with_token(
            CreateUserRequest {
                email: "Op@Example.com".into(),
                password: "password-123".into(),
                display_name: " Opal ".into(),
                role: Role::Operator as i32,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        (op.email.as_str(), op.display_name.as_str()),
        ("op@example.com", "Opal")
    );
    assert_eq!(op.role, Role::Operator as i32);
    let dup = c
        .create_user(with_token(
            CreateUserRequest {
                email: "op@example.com".into(),
                password: "password-123".into(),
                display_name: "Again".into(),
                role: Role::Customer as i32,
            },
            &admin,
        ))
        .await;
    expect_code(dup, Code::AlreadyExists);
    let op_token = login(&auth.client, "op@example.com", "password-123")
        .await
        .access_token;

    let fetched = c
        .get_user(with_token(GetUserRequest { id: op.id.clone() }, &admin))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(fetched, op);
    let missing = c
        .get_user(with_token(
            GetUserRequest {
                id: uuid::Uuid::now_v7().to_string(),
            },
            &admin,
        ))
        .await;
    expect_code(missing, Code::NotFound);

    // Promote the operator to admin; the new role shows in tokens issued afterwards.
    let promoted = c
        .update_user_role(with_token(
            UpdateUserRoleRequest {
                id: op.id.clone(),
                role: Role::Admin as i32,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(promoted.role, Role::Admin as i32);
    assert!(promoted.updated_at.unwrap().seconds >= op.updated_at.unwrap().seconds);
    let fresh = login(&auth.client, "op@example.com", "password-123").await;
    assert_eq!(fresh.user.unwrap().role, Role::Admin as i32);
    let claims = c
        .verify_token(VerifyTokenRequest {
            token: fresh.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claims.role, Role::Admin as i32);
    // The token issued before the promotion still says OPERATOR (roles are fixed at issue).
    let old = c
        .verify_token(VerifyTokenRequest { token: op_token })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.role, Role::Operator as i32);

    // Two admins: either may be demoted, but never the last one.
    c.update_user_role(with_token(
        UpdateUserRoleRequest {
            id: admin_id.clone(),
            role: Role::Customer as i32,
        },
        &fresh.access_token,
    ))
    .await
    .expect("demoting one of two admins is fine");
    let last = c
        .update_user_role(with_token(
            UpdateUserRoleRequest {
                id: op.id.clone(),
                role: Role::Operator as i32,
            },
            &fresh.access_token,
        ))
        .await;
    let msg = expect_code(last, Code::FailedPrecondition);
    assert!(msg.contains("last admin"), "{msg}");
    let missing = c
        .update_user_role(with_token(
            UpdateUserRoleRequest {
                id: "nope".into(),
                role: Role::Operator as i32,
            },
            &fresh.access_token,
        ))
        .await;
    expect_code(missing, Code::NotFound);
    let unspecified = c
        .update_user_role(with_token(
            UpdateUserRoleRequest {
                id: op.id.clone(),
                role: Role::Unspecified as i32,
            },
            &fresh.access_token,
        ))
        .await;
    assert!(expect_code(unspecified, Code::InvalidArgument).starts_with("role"));
}

async fn concurrent_demotions_keep_one_admin(backend: Backend) {
    let auth = Auth::start(backend).await;
    let first = auth.admin().await;
    let second = auth.user_with_role(Role::Admin).await;
    let demote = |token: String, id: String| {
        let mut c = auth.client();
        async move {
            c.update_user_role(with_token(
                UpdateUserRoleRequest {
                    id,
                    role: Role::Customer as i32,
                },
                &token,
            ))
            .await
        }
    };
    // Each admin demotes the other at the same time.
    let (a, b) = tokio::join!(
        demote(first.access_token.clone(), second.user.clone().unwrap().id),
        demote(second.access_token.clone(), first.user.clone().unwrap().id),
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one demotion must succeed: {a:?} / {b:?}"
    );
    for r in [a, b].into_iter().filter_map(Result::err) {
        assert_eq!(r.code(), Code::FailedPrecondition, "{r:?}");
    }
}

async fn list_users_walks_every_row_once(backend: Backend) {
    let auth = Auth::start(backend).await;
    let admin = auth.admin().await.access_token;
    let creates = (0..23).map(|i| {
        let mut c = auth.client();
        let admin = admin.clone();
        async move {
            c.create_user(with_token(
                CreateUserRequest {
                    email: format!("user{i:02}@example.com"),
                    password: "password-123".into(),
                    display_name: format!("User {i}"),
                    role: Role::Customer as i32,
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
            .id
        }
    });
    let created: HashSet<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .collect();
    let total = created.len() + 1 + SERVICE_ACCOUNTS.len();

    for page_size in [1, 4, 27, 500] {
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = auth
                .client()
                .list_users(with_token(
                    ListUsersRequest {
                        page_size,
                        page_token: token.clone(),
                    },
                    &admin,
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(page.users.len() <= page_size as usize);
            pages += 1;
            seen.extend(page.users.into_iter().map(|u| u.id));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
            assert!(pages <= total, "paging does not terminate");
        }
        assert_eq!(seen.len(), total, "page_size {page_size}");
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), total, "no row twice (page_size {page_size})");
        assert!(created.iter().all(|id| unique.contains(id)));
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, seen, "id order");
    }
}

async fn bootstrap_creates_admin_and_service_accounts_once(backend: Backend) {
    let auth = Auth::start(backend).await;
    let admin = auth.admin().await;
    let me = admin.user.unwrap();
    assert_eq!(me.email, TestMesh::ADMIN_EMAIL);
    assert_eq!(me.role, Role::Admin as i32);
    let users = auth
        .client()
        .list_users(with_token(ListUsersRequest::default(), &admin.access_token))
        .await
        .unwrap()
        .into_inner()
        .users;
    for target in SERVICE_ACCOUNTS {
        let account = users
            .iter()
            .find(|u| u.email == service_email(target))
            .unwrap_or_else(|| panic!("no account for {target}"));
        assert_eq!(account.role, Role::Service as i32);
    }
    let ids_before: Vec<String> = users.iter().map(|u| u.id.clone()).collect();

    // A restart with another admin password and another service secret: the admin is
    // kept as it is, the service accounts follow the new secret.
    let old_secret = auth.mesh.config.auth.service_secret.clone().unwrap();
    let auth = auth
        .restart_with(|config| {
            config.auth.admin_password = Some("a-different-password".into());
            config.auth.service_secret = Some("another-secret-at-least-32-bytes-long".into());
        })
        .await;
    let again = auth.admin().await;
    let after = auth
        .client()
        .list_users(with_token(ListUsersRequest::default(), &again.access_token))
        .await
        .unwrap()
        .into_inner()
        .users;
    let after_ids: Vec<String> = after.iter().map(|u| u.id.clone()).collect();
    assert_eq!(after_ids, ids_before, "no account created twice");
    let service = auth.service().await;
    assert_eq!(service.user.unwrap().role, Role::Service as i32);
    let with_old_secret = auth
        .client()
        .issue_service_token(stockmesh::identity::service_token_request(
            &old_secret,
            Target::Orders,
        ))
        .await;
    expect_code(with_old_secret, Code::Unauthenticated);
}

async fn bootstrap_without_password_generates_one(backend: Backend) {
    let mut mesh = TestMesh::new(backend).await;
    mesh.config.auth.admin_password = None;
    let auth = Auth::start_with(mesh).await;
    // The configured password does not exist; the generated one was printed, not stored
    // anywhere a test can read, so check there is exactly one admin and it is not the
    // TestMesh default.
    let attempt = auth
        .client()
        .login(LoginRequest {
            email: TestMesh::ADMIN_EMAIL.into(),
            password: TestMesh::ADMIN_PASSWORD.into(),
        })
        .await;
    expect_code(attempt, Code::Unauthenticated);
    let db = sea_orm::Database::connect(auth.mesh.database_url(Target::Auth))
        .await
        .unwrap();
    let admins = stockmesh_auth::accounts::count_admins(&db).await.unwrap();
    assert_eq!(admins, 1);
    let stored = stockmesh_auth::accounts::by_email(&db, TestMesh::ADMIN_EMAIL)
        .await
        .unwrap()
        .expect("admin row");
    assert!(stored.password_hash.starts_with("$argon2id$"));
    db.close().await.unwrap();
}

stockmesh::db_tests!(
    validation_errors_name_the_field,
    admin_manages_users_and_roles,
    concurrent_demotions_keep_one_admin,
    list_users_walks_every_row_once,
    bootstrap_creates_admin_and_service_accounts_once,
    bootstrap_without_password_generates_one,
);
