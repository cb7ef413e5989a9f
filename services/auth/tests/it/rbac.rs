//! Who may call the user-admin RPCs: no token, customer, operator, service, admin.

use stockmesh::proto::auth::v1::*;
use stockmesh::testing::{Backend, with_token};
use tonic::{Code, Request};

use crate::support::{Auth, Client};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Nobody,
    Customer,
    Operator,
    Service,
    Admin,
}

fn req<T>(msg: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(t) => with_token(msg, t),
        None => Request::new(msg),
    }
}

/// The code each RPC gives a caller (`Code::Ok` on success).
async fn codes(
    client: &Client,
    token: Option<&str>,
    self_id: &str,
    other_id: &str,
) -> Vec<(&'static str, Code)> {
    let mut c = client.clone();
    let n = uuid::Uuid::new_v4().simple().to_string();
    vec![
        (
            "ListUsers",
            code(c.list_users(req(ListUsersRequest::default(), token)).await),
        ),
        (
            "CreateUser",
            code(
                c.create_user(req(
                    CreateUserRequest {
                        email: format!("new-{n}@example.com"),
                        password: "password-123".into(),
                        display_name: "New".into(),
                        role: Role::Operator as i32,
                    },
                    token,
                ))
                .await,
            ),
        ),
        (
            "UpdateUserRole",
            code(
                c.update_user_role(req(
                    UpdateUserRoleRequest {
                        id: other_id.into(),
                        role: Role::Customer as i32,
                    },
                    token,
                ))
                .await,
            ),
        ),
        (
            "GetUser(other)",
            code(
                c.get_user(req(
                    GetUserRequest {
                        id: other_id.into(),
                    },
                    token,
                ))
                .await,
            ),
        ),
        (
            "GetUser(self)",
            code(
                c.get_user(req(GetUserRequest { id: self_id.into() }, token))
                    .await,
            ),
        ),
        (
            "GetProfile",
            code(c.get_profile(req(GetProfileRequest {}, token)).await),
        ),
    ]
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
}

fn expected(who: Who, rpc: &str) -> Code {
    use Who::*;
    match (who, rpc) {
        (Nobody, _) => Code::Unauthenticated,
        (Admin, _) => Code::Ok,
        (_, "GetUser(self)" | "GetProfile") => Code::Ok,
        (Service, "GetUser(other)") => Code::Ok,
        _ => Code::PermissionDenied,
    }
}

async fn user_admin_rpcs_enforce_roles(backend: Backend) {
    let auth = Auth::start(backend).await;
    // The user everybody tries to look at and re-role (to its current role, so the
    // admin's successful call changes nothing for the others).
    let victim = auth.user_with_role(Role::Customer).await.user.unwrap();
    let callers = [
        (Who::Nobody, None),
        (
            Who::Customer,
            Some(auth.user_with_role(Role::Customer).await),
        ),
        (
            Who::Operator,
            Some(auth.user_with_role(Role::Operator).await),
        ),
        (Who::Service, Some(auth.service().await)),
        (Who::Admin, Some(auth.admin().await)),
    ];
    let mut failures = Vec::new();
    for (who, login) in &callers {
        let token = login.as_ref().map(|l| l.access_token.as_str());
        let self_id = login
            .as_ref()
            .and_then(|l| l.user.as_ref())
            .map(|u| u.id.clone())
            .unwrap_or_default();
        for (rpc, got) in codes(&auth.client, token, &self_id, &victim.id).await {
            let want = expected(*who, rpc);
            if got != want {
                failures.push(format!("{who:?} {rpc}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "RBAC mismatches:\n{}",
        failures.join("\n")
    );

    // The service identity really is ROLE_SERVICE, and Login refuses its email outright
    // (no password check, nothing counted), whatever the password.
    let service = auth.service().await;
    assert_eq!(service.user.unwrap().role, Role::Service as i32);
    let email = stockmesh::identity::service_email(stockmesh::Target::Orders);
    let wrong = auth
        .client()
        .login(LoginRequest {
            email,
            password: "password-123".into(),
        })
        .await;
    let err = wrong.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("IssueServiceToken"), "{err:?}");
}

stockmesh::db_tests!(user_admin_rpcs_enforce_roles);
