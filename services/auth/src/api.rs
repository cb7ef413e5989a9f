//! gRPC handlers of `stockmesh.auth.v1.AuthService`: decode, authorise, call the domain
//! ([`crate::service::Auth`]), encode. Nothing else lives here.
//!
//! The server accepts connections while auth is still starting (so health can say
//! NOT_SERVING); until start-up finishes every RPC answers UNAVAILABLE.

use std::sync::{Arc, OnceLock};

use stockmesh::authn::{Caller, Role};
use stockmesh::error::invalid_field;
use stockmesh::pagination::Page;
use stockmesh::proto::auth::v1::auth_service_server::AuthService;
use stockmesh::proto::auth::v1::*;
use tonic::{Request, Response, Status};

use crate::accounts::to_proto;
use crate::error::Error;
use crate::service::{Auth, TokenPair};

/// Filled once start-up (migrations, keys, bootstrap) is done.
pub type Ready = Arc<OnceLock<Arc<Auth>>>;

pub struct AuthApi {
    ready: Ready,
}

impl AuthApi {
    pub fn new(ready: Ready) -> Self {
        Self { ready }
    }

    fn auth(&self) -> Result<&Auth, Status> {
        self.ready
            .get()
            .map(|a| a.as_ref())
            .ok_or_else(|| Error::NotReady.into())
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<(&Auth, Caller), Status> {
        let auth = self.auth()?;
        let caller = auth.verifier().caller(req).await?;
        Ok((auth, caller))
    }
}

fn role_field(raw: i32) -> Result<Role, Status> {
    match Role::try_from(raw) {
        Ok(Role::Unspecified) => Err(invalid_field("role", "must be set")),
        Ok(role) => Ok(role),
        Err(_) => Err(invalid_field("role", format!("{raw} is not a known role"))),
    }
}

const BEARER: &str = "Bearer";

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = request.into_inner();
        let user = self
            .auth()?
            .register(&r.email, &r.password, &r.display_name)
            .await?;
        Ok(Response::new(RegisterResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let auth = self.auth()?;
        let client = auth.client_of(&request);
        let r = request.into_inner();
        let TokenPair {
            access_token,
            refresh_token,
            expires_in,
            user,
        } = auth.login(&r.email, &r.password, client).await?;
        Ok(Response::new(LoginResponse {
            access_token,
            refresh_token,
            expires_in,
            token_type: BEARER.into(),
            user: Some(to_proto(&user)),
        }))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let r = request.into_inner();
        let TokenPair {
            access_token,
            refresh_token,
            expires_in,
            user,
        } = self.auth()?.refresh(&r.refresh_token).await?;
        Ok(Response::new(RefreshResponse {
            access_token,
            refresh_token,
            expires_in,
            token_type: BEARER.into(),
            user: Some(to_proto(&user)),
        }))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let r = request.into_inner();
        self.auth()?.logout(&r.refresh_token).await?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn verify_token(
        &self,
        request: Request<VerifyTokenRequest>,
    ) -> Result<Response<VerifyTokenResponse>, Status> {
        let r = request.into_inner();
        let claims = self.auth()?.verify(&r.token).await?;
        Ok(Response::new(VerifyTokenResponse {
            user_id: claims.user_id,
            email: claims.email,
            role: claims.role as i32,
            expires_at: Some(prost_types::Timestamp {
                seconds: claims.expires_at,
                nanos: 0,
            }),
        }))
    }

    async fn get_profile(
        &self,
        request: Request<GetProfileRequest>,
    ) -> Result<Response<GetProfileResponse>, Status> {
        let (auth, caller) = self.caller(&request).await?;
        let user = auth.user(&caller.user_id).await.map_err(|e| match e {
            // A valid token whose user is gone: the session is meaningless.
            Error::UserNotFound(_) => Error::UnknownSubject,
            e => e,
        })?;
        Ok(Response::new(GetProfileResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let (auth, caller) = self.caller(&request).await?;
        let id = &request.get_ref().id;
        // Authorise before looking up, so the answer does not reveal which ids exist.
        if caller.user_id != *id {
            caller.require(&[Role::Service])?;
        }
        let user = auth.user(id).await?;
        Ok(Response::new(GetUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let (auth, caller) = self.caller(&request).await?;
        caller.require(&[])?;
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token, &[])?;
        let (users, next_page_token) = auth.list_users(&page).await?;
        Ok(Response::new(ListUsersResponse {
            users: users.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let (auth, caller) = self.caller(&request).await?;
        caller.require(&[])?;
        let r = request.into_inner();
        let role = role_field(r.role)?;
        let user = auth
            .create_user(&r.email, &r.password, &r.display_name, role)
            .await?;
        tracing::info!(admin = %caller.user_id, user = %user.id, role = role.as_str_name(), "user created");
        Ok(Response::new(CreateUserResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn update_user_role(
        &self,
        request: Request<UpdateUserRoleRequest>,
    ) -> Result<Response<UpdateUserRoleResponse>, Status> {
        let (auth, caller) = self.caller(&request).await?;
        caller.require(&[])?;
        let r = request.into_inner();
        let role = role_field(r.role)?;
        let user = auth.set_role(&r.id, role).await?;
        tracing::info!(admin = %caller.user_id, user = %user.id, role = role.as_str_name(), "role changed");
        Ok(Response::new(UpdateUserRoleResponse {
            user: Some(to_proto(&user)),
        }))
    }

    async fn issue_service_token(
        &self,
        request: Request<IssueServiceTokenRequest>,
    ) -> Result<Response<IssueServiceTokenResponse>, Status> {
        let (access_token, expires_in) =
            self.auth()?.issue_service_token(request.get_ref()).await?;
        Ok(Response::new(IssueServiceTokenResponse {
            access_token,
            expires_in,
            token_type: BEARER.into(),
        }))
    }

    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let keys = self.auth()?.jwks().await?;
        let jwks_json = crate::keys::jwks_json(&keys);
        Ok(Response::new(GetJwksResponse { keys, jwks_json }))
    }
}
