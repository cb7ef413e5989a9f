//! Starting auth and signing in.

use std::time::Duration;

use stockmesh::Target;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::auth::v1::*;
use stockmesh::testing::{Backend, Running, TestMesh, with_token};
use tonic::transport::Channel;

pub type Client = AuthServiceClient<Channel>;

/// A mesh with only auth running.
pub struct Auth {
    pub mesh: TestMesh,
    pub running: Running,
    pub client: Client,
}

impl Auth {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(TestMesh::new(backend).await).await
    }

    /// Starts auth in `mesh` (whose config a test may have tuned).
    pub async fn start_with(mut mesh: TestMesh) -> Self {
        let running = mesh.start(Target::Auth, stockmesh_auth::serve).await;
        let client = client(&running).await;
        Self {
            mesh,
            running,
            client,
        }
    }

    /// Stops auth and starts it again on the same address and database.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Stops auth, lets `change` edit the configuration, and starts it again on the same
    /// address and database.
    pub async fn restart_with(self, change: impl FnOnce(&mut stockmesh::Config)) -> Self {
        let Auth {
            mut mesh, running, ..
        } = self;
        let addr = running.addr;
        running.stop().await;
        change(&mut mesh.config);
        let running = mesh
            .restart_on(Target::Auth, addr, stockmesh_auth::serve)
            .await;
        let client = client(&running).await;
        Self {
            mesh,
            running,
            client,
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub async fn login(&self, email: &str, password: &str) -> LoginResponse {
        login(&self.client, email, password).await
    }

    pub async fn admin(&self) -> LoginResponse {
        self.login(TestMesh::ADMIN_EMAIL, TestMesh::ADMIN_PASSWORD)
            .await
    }

    /// Creates a user with `role` (as the admin) and signs it in.
    pub async fn user_with_role(&self, role: Role) -> LoginResponse {
        let admin = self.admin().await;
        let email = format!(
            "{}-{}@example.com",
            role.as_str_name().to_lowercase(),
            uuid::Uuid::new_v4().simple()
        );
        self.client()
            .create_user(with_token(
                CreateUserRequest {
                    email: email.clone(),
                    password: "password-123".into(),
                    display_name: "Someone".into(),
                    role: role as i32,
                },
                &admin.access_token,
            ))
            .await
            .unwrap_or_else(|e| panic!("create {role:?} user: {e}"));
        self.login(&email, "password-123").await
    }

    /// Signs in as the orders service identity (IssueServiceToken), shaped like a login.
    pub async fn service(&self) -> LoginResponse {
        let access_token = self
            .mesh
            .service_token(self.running.addr, Target::Orders)
            .await;
        let user = self
            .client()
            .get_profile(with_token(
                stockmesh::proto::auth::v1::GetProfileRequest {},
                &access_token,
            ))
            .await
            .unwrap_or_else(|e| panic!("service profile: {e}"))
            .into_inner()
            .user;
        LoginResponse {
            access_token,
            user,
            token_type: "Bearer".into(),
            ..Default::default()
        }
    }
}

pub async fn client(running: &Running) -> Client {
    AuthServiceClient::new(TestMesh::channel(running.addr).await)
}

pub async fn login(client: &Client, email: &str, password: &str) -> LoginResponse {
    client
        .clone()
        .login(LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("login {email}: {e}"))
        .into_inner()
}

pub async fn register(client: &Client, email: &str, password: &str) -> Result<User, tonic::Status> {
    client
        .clone()
        .register(RegisterRequest {
            email: email.into(),
            password: password.into(),
            display_name: "Customer".into(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user in RegisterResponse"))
}

/// Asserts `result` failed with `code`, returning the message.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
) -> String {
    match result {
        Err(s) if s.code() == code => s.message().to_string(),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// The bound on waiting for something a test caused.
pub const PATIENCE: Duration = Duration::from_secs(30);
