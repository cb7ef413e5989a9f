//! A mesh of auth + products + inventory with one token per kind of caller, and short
//! helpers for the calls every test makes.

use stockmesh::Target;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::auth::v1::{CreateUserRequest, LoginRequest, Role};
use stockmesh::proto::inventory::v1 as pb;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::proto::products::v1::{CreateProductRequest, CreateVariableRequest};
use stockmesh::testing::{Backend, Running, TestMesh, with_token};
use tonic::transport::Channel;
use tonic::{Code, Status};

pub type Inventory = InventoryServiceClient<Channel>;

pub struct Env {
    pub mesh: TestMesh,
    pub _auth: Running,
    pub products: Option<Running>,
    /// `None` once a test stopped it.
    pub inventory: Option<Running>,
    pub inventory_addr: std::net::SocketAddr,
    pub admin: String,
    pub operator: String,
    pub customer: String,
    /// A service identity's token (orders), as the orders service would use.
    pub service: String,
    pub inv: Inventory,
    pub catalog: ProductServiceClient<Channel>,
}

impl Env {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts the mesh after `configure` adjusted the configuration.
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
        let inventory = mesh
            .start(Target::Inventory, stockmesh_inventory::serve)
            .await;

        let mut auth_client = AuthServiceClient::new(TestMesh::channel(auth.addr).await);
        let admin = login(
            &mut auth_client,
            TestMesh::ADMIN_EMAIL,
            TestMesh::ADMIN_PASSWORD,
        )
        .await;
        let operator = user(
            &mut auth_client,
            &admin,
            "operator@inv.test",
            Role::Operator,
        )
        .await;
        let customer = user(
            &mut auth_client,
            &admin,
            "customer@inv.test",
            Role::Customer,
        )
        .await;
        let service = mesh.service_token(auth.addr, Target::Orders).await;

        let inv = InventoryServiceClient::new(TestMesh::channel(inventory.addr).await);
        let catalog = ProductServiceClient::new(TestMesh::channel(products.addr).await);
        Self {
            mesh,
            _auth: auth,
            products: Some(products),
            inventory_addr: inventory.addr,
            inventory: Some(inventory),
            admin,
            operator,
            customer,
            service,
            inv,
            catalog,
        }
    }

    pub fn inv(&self) -> Inventory {
        self.inv.clone()
    }

    /// A connection of the test's own to the inventory database.
    pub async fn inventory_db(&self) -> sea_orm::DatabaseConnection {
        stockmesh::db::connect(&self.mesh.database_url(Target::Inventory))
            .await
            .unwrap_or_else(|e| panic!("inventory db: {e}"))
    }

    /// A new product in the catalog; returns its id.
    pub async fn product(&self, name: &str) -> String {
        let resp = self
            .catalog
            .clone()
            .create_product(with_token(
                CreateProductRequest {
                    sku: format!("SKU-{name}"),
                    name: name.to_string(),
                    description: String::new(),
                    price_cents: 100,
                    currency: "USD".into(),
                    supplier_id: None,
                },
                &self.operator,
            ))
            .await
            .unwrap_or_else(|s| panic!("create product {name}: {s:?}"));
        resp.into_inner()
            .product
            .unwrap_or_else(|| panic!("no product in response"))
            .id
    }

    /// A new measurable variable; returns its id.
    pub async fn variable(&self, name: &str) -> String {
        let resp = self
            .catalog
            .clone()
            .create_variable(with_token(
                CreateVariableRequest {
                    name: name.to_string(),
                    unit: "°C".into(),
                },
                &self.operator,
            ))
            .await
            .unwrap_or_else(|s| panic!("create variable {name}: {s:?}"));
        resp.into_inner()
            .variable
            .unwrap_or_else(|| panic!("no variable in response"))
            .id
    }

    /// A new warehouse at (lat, lon); returns its id.
    pub async fn warehouse(&self, name: &str, lat: f64, lon: f64) -> String {
        self.inv()
            .create_warehouse(with_token(
                pb::CreateWarehouseRequest {
                    name: name.to_string(),
                    address: format!("{name} address"),
                    latitude: lat,
                    longitude: lon,
                    capacity: 0,
                },
                &self.operator,
            ))
            .await
            .unwrap_or_else(|s| panic!("create warehouse {name}: {s:?}"))
            .into_inner()
            .warehouse
            .unwrap_or_else(|| panic!("no warehouse in response"))
            .id
    }

    pub async fn restock(&self, product: &str, warehouse: &str, quantity: i64) -> pb::Stock {
        self.try_restock(
            product,
            warehouse,
            quantity,
            &uuid::Uuid::new_v4().to_string(),
        )
        .await
        .unwrap_or_else(|s| panic!("restock: {s:?}"))
    }

    pub async fn try_restock(
        &self,
        product: &str,
        warehouse: &str,
        quantity: i64,
        request_id: &str,
    ) -> Result<pb::Stock, Status> {
        let resp = self
            .inv()
            .restock(with_token(
                pb::RestockRequest {
                    product_id: product.to_string(),
                    warehouse_id: warehouse.to_string(),
                    quantity,
                    request_id: request_id.to_string(),
                },
                &self.operator,
            ))
            .await?;
        Ok(resp.into_inner().stock.unwrap_or_default())
    }

    pub async fn stock(&self, product: &str) -> pb::Stock {
        self.inv()
            .get_stock(pb::GetStockRequest {
                product_id: product.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("get stock: {s:?}"))
            .into_inner()
            .stock
            .unwrap_or_default()
    }

    /// Stock of `product` in `warehouse` as (on_hand, reserved).
    pub async fn stock_in(&self, product: &str, warehouse: &str) -> (i64, i64) {
        let stock = self.stock(product).await;
        stock
            .warehouses
            .iter()
            .find(|w| w.warehouse_id == warehouse)
            .map_or((0, 0), |w| (w.on_hand, w.reserved))
    }

    pub async fn reserve(&self, req: pb::ReserveRequest) -> Result<pb::Reservation, Status> {
        Ok(self
            .inv()
            .reserve(with_token(req, &self.service))
            .await?
            .into_inner()
            .reservation
            .unwrap_or_default())
    }

    pub async fn commit(&self, id: &str) -> Result<pb::Reservation, Status> {
        Ok(self
            .inv()
            .commit_reservation(with_token(
                pb::CommitReservationRequest {
                    reservation_id: id.to_string(),
                },
                &self.service,
            ))
            .await?
            .into_inner()
            .reservation
            .unwrap_or_default())
    }

    pub async fn release(&self, id: &str) -> Result<pb::Reservation, Status> {
        Ok(self
            .inv()
            .release_reservation(with_token(
                pb::ReleaseReservationRequest {
                    reservation_id: id.to_string(),
                },
                &self.service,
            ))
            .await?
            .into_inner()
            .reservation
            .unwrap_or_default())
    }

    pub async fn get_reservation(&self, id: &str) -> Result<pb::Reservation, Status> {
        Ok(self
            .inv()
            .get_reservation(with_token(
                pb::GetReservationRequest {
                    reservation_id: id.to_string(),
                },
                &self.service,
            ))
            .await?
            .into_inner()
            .reservation
            .unwrap_or_default())
    }
}

/// A Reserve request for `quantity` units of `product`, no preference.
pub fn reserve_req(id: &str, product: &str, quantity: i64) -> pb::ReserveRequest {
    pb::ReserveRequest {
        reservation_id: id.to_string(),
        product_id: product.to_string(),
        quantity,
        warehouse_id: None,
        latitude: None,
        longitude: None,
    }
}

pub fn status(r: &pb::Reservation) -> pb::ReservationStatus {
    pb::ReservationStatus::try_from(r.status).unwrap_or(pb::ReservationStatus::Unspecified)
}

/// Asserts that `result` failed with `code`, and returns the message.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> String {
    match result {
        Err(s) if s.code() == code => s.message().to_string(),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

async fn login(client: &mut AuthServiceClient<Channel>, email: &str, password: &str) -> String {
    client
        .login(LoginRequest {
            email: email.to_string(),
            password: password.to_string(),
        })
        .await
        .unwrap_or_else(|s| panic!("login {email}: {s:?}"))
        .into_inner()
        .access_token
}

async fn user(
    client: &mut AuthServiceClient<Channel>,
    admin: &str,
    email: &str,
    role: Role,
) -> String {
    let password = "password-123456";
    client
        .create_user(with_token(
            CreateUserRequest {
                email: email.to_string(),
                password: password.to_string(),
                display_name: email.to_string(),
                role: role as i32,
            },
            admin,
        ))
        .await
        .unwrap_or_else(|s| panic!("create user {email}: {s:?}"));
    login(client, email, password).await
}
