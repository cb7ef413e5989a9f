//! Starts auth + products for one test and signs in one user per role.

use std::sync::atomic::{AtomicU64, Ordering};

use stockmesh::Target;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::auth::v1::{CreateUserRequest, LoginRequest, Role};
use stockmesh::proto::products::v1 as pb;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::testing::{Backend, Running, TestMesh, with_token};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Who makes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// No authorization header.
    Anonymous,
    /// A bearer token that is not a valid access token.
    BadToken,
    Customer,
    Operator,
    Admin,
    /// The orders service's identity (`ROLE_SERVICE`).
    Service,
}

impl Who {
    pub const ALL: [Who; 6] = [
        Who::Anonymous,
        Who::BadToken,
        Who::Customer,
        Who::Operator,
        Who::Admin,
        Who::Service,
    ];
}

/// A running auth + products pair with a token per role.
pub struct Env {
    pub mesh: TestMesh,
    pub auth: Running,
    pub products: Running,
    pub client: ProductServiceClient<Channel>,
    customer: String,
    operator: String,
    admin: String,
    service: String,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A string unique within this test binary, for skus and names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", UNIQUE.fetch_add(1, Ordering::Relaxed))
}

async fn login(auth: &mut AuthServiceClient<Channel>, email: &str, password: &str) -> String {
    auth.login(LoginRequest {
        email: email.into(),
        password: password.into(),
    })
    .await
    .unwrap_or_else(|s| panic!("login as {email}: {s:?}"))
    .into_inner()
    .access_token
}

async fn user_token(
    auth: &mut AuthServiceClient<Channel>,
    admin: &str,
    role: Role,
    email: &str,
) -> String {
    let password = "correct-horse-battery";
    auth.create_user(with_token(
        CreateUserRequest {
            email: email.into(),
            password: password.into(),
            display_name: format!("{role:?}"),
            role: role as i32,
        },
        admin,
    ))
    .await
    .unwrap_or_else(|s| panic!("create {role:?} user: {s:?}"));
    login(auth, email, password).await
}

impl Env {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`Env::start`], with the configuration changed by `configure` first.
    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(&mut stockmesh::Config),
    ) -> Self {
        let mut mesh = TestMesh::new(backend).await;
        configure(&mut mesh.config);
        let auth = mesh.start(Target::Auth, stockmesh_auth::serve).await;
        let products = mesh
            .start(Target::Products, stockmesh_products::serve)
            .await;
        let mut auth_client = AuthServiceClient::new(TestMesh::channel(auth.addr).await);
        let admin = login(
            &mut auth_client,
            TestMesh::ADMIN_EMAIL,
            TestMesh::ADMIN_PASSWORD,
        )
        .await;
        let customer = user_token(
            &mut auth_client,
            &admin,
            Role::Customer,
            "customer@example.com",
        )
        .await;
        let operator = user_token(
            &mut auth_client,
            &admin,
            Role::Operator,
            "operator@example.com",
        )
        .await;
        let service = mesh.service_token(auth.addr, Target::Orders).await;
        let client = ProductServiceClient::new(TestMesh::channel(products.addr).await);
        Self {
            mesh,
            auth,
            products,
            client,
            customer,
            operator,
            admin,
            service,
        }
    }

    /// `msg` as `who` sends it.
    pub fn req<T>(&self, who: Who, msg: T) -> Request<T> {
        match who {
            Who::Anonymous => Request::new(msg),
            Who::BadToken => with_token(msg, "not-a-jwt"),
            Who::Customer => with_token(msg, &self.customer),
            Who::Operator => with_token(msg, &self.operator),
            Who::Admin => with_token(msg, &self.admin),
            Who::Service => with_token(msg, &self.service),
        }
    }

    /// `msg` as the admin sends it.
    pub fn admin<T>(&self, msg: T) -> Request<T> {
        self.req(Who::Admin, msg)
    }

    pub fn client(&self) -> ProductServiceClient<Channel> {
        self.client.clone()
    }

    /// Creates a product as admin, with a unique sku and name starting with `name`.
    pub async fn product(&self, name: &str, supplier_id: Option<&str>) -> pb::Product {
        self.client()
            .create_product(self.admin(pb::CreateProductRequest {
                sku: unique("SKU"),
                name: unique(name),
                description: "a thing".into(),
                price_cents: 1250,
                currency: String::new(),
                supplier_id: supplier_id.map(str::to_string),
            }))
            .await
            .unwrap_or_else(|s| panic!("create product: {s:?}"))
            .into_inner()
            .product
            .expect("product in response")
    }

    /// Creates a supplier as admin.
    pub async fn supplier(&self, name: &str) -> pb::Supplier {
        self.client()
            .create_supplier(self.admin(pb::CreateSupplierRequest {
                name: unique(name),
                contact_email: "sales@acme.example".into(),
                phone: "+1 555 0100".into(),
            }))
            .await
            .unwrap_or_else(|s| panic!("create supplier: {s:?}"))
            .into_inner()
            .supplier
            .expect("supplier in response")
    }

    /// Creates a variable as admin.
    pub async fn variable(&self, name: &str) -> pb::Variable {
        self.client()
            .create_variable(self.admin(pb::CreateVariableRequest {
                name: unique(name),
                unit: "°C".into(),
            }))
            .await
            .unwrap_or_else(|s| panic!("create variable: {s:?}"))
            .into_inner()
            .variable
            .expect("variable in response")
    }

    pub async fn stop(self) {
        self.products.stop().await;
        self.auth.stop().await;
    }
}

/// The status of a call that must fail, with its code checked and its message returned.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(res: Result<T, Status>, code: Code) -> String {
    match res {
        Ok(v) => panic!("expected {code:?}, got OK: {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s.message().to_string()
        }
    }
}

/// Asserts an INVALID_ARGUMENT whose message starts with `field: `.
#[track_caller]
pub fn expect_invalid<T: std::fmt::Debug>(res: Result<T, Status>, field: &str) {
    let msg = expect_err(res, Code::InvalidArgument);
    assert!(
        msg.starts_with(&format!("{field}: ")),
        "message {msg:?} should name {field}"
    );
}
