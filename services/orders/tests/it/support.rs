//! The whole mesh orders needs (auth, products, inventory, orders) started in-process for
//! one test, a signed-in token per kind of caller, and short helpers for the calls every
//! test makes, including the stock bookkeeping check.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::auth::v1::{CreateUserRequest, LoginRequest, Role};
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::orders::v1 as pb;
use stockmesh::proto::orders::v1::order_service_client::OrderServiceClient;
use stockmesh::proto::products::v1::CreateProductRequest;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::testing::{Backend, Running, TestMesh, with_token};
use stockmesh::{Shutdown, Target};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub type Orders = OrderServiceClient<Channel>;

/// Puts something between orders and inventory: given inventory's address and a shutdown
/// signal (the mesh's), starts it and returns the address orders should call instead.
pub type InventoryRoute = Box<
    dyn FnOnce(SocketAddr, Shutdown) -> Pin<Box<dyn Future<Output = SocketAddr> + Send>> + Send,
>;

/// Who makes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// No authorization header.
    Anonymous,
    Customer,
    Operator,
    Admin,
    /// A service identity (inventory's; orders itself would do as well).
    Service,
}

impl Who {
    pub const ALL: [Who; 5] = [
        Who::Anonymous,
        Who::Customer,
        Who::Operator,
        Who::Admin,
        Who::Service,
    ];
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub token: String,
}

pub struct Env {
    pub mesh: TestMesh,
    // The servers run until the mesh shuts down; their handles are kept for tests that
    // stop one (inventory) and for debugging.
    #[allow(dead_code)]
    pub auth: Running,
    #[allow(dead_code)]
    pub products: Running,
    /// `None` while a test has it stopped.
    pub inventory: Option<Running>,
    #[allow(dead_code)]
    pub orders: Running,
    pub admin: User,
    pub operator: User,
    pub customer: User,
    /// A second customer, for ownership rules.
    pub other: User,
    pub service: User,
    pub client: Orders,
    inv: InventoryServiceClient<Channel>,
    catalog: ProductServiceClient<Channel>,
    /// Units restocked per product, for [`Env::assert_books_balance`].
    restocked: std::sync::Mutex<HashMap<String, i64>>,
}

async fn login(auth: &mut AuthServiceClient<Channel>, email: &str, password: &str) -> User {
    let resp = auth
        .login(LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("login as {email}: {s:?}"))
        .into_inner();
    User {
        id: resp.user.map(|u| u.id).unwrap_or_default(),
        token: resp.access_token,
    }
}

async fn user(auth: &mut AuthServiceClient<Channel>, admin: &str, role: Role, email: &str) -> User {
    let password = "correct-horse-battery";
    let created = auth
        .create_user(with_token(
            CreateUserRequest {
                email: email.into(),
                password: password.into(),
                display_name: format!("{role:?}"),
                role: role as i32,
            },
            admin,
        ))
        .await
        .unwrap_or_else(|s| panic!("create {role:?} user: {s:?}"))
        .into_inner();
    let mut signed_in = login(auth, email, password).await;
    if signed_in.id.is_empty() {
        signed_in.id = created.user.map(|u| u.id).unwrap_or_default();
    }
    assert!(!signed_in.id.is_empty(), "no user id for {email}");
    signed_in
}

impl Env {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts the mesh after `configure` adjusted the configuration (e.g. reconciler
    /// timing).
    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(&mut stockmesh::Config),
    ) -> Self {
        Self::start_routed(backend, configure, None).await
    }

    /// Like [`Env::start_with`], with orders reaching inventory through `route` when given
    /// (the test's own client still talks to inventory directly).
    pub async fn start_routed(
        backend: Backend,
        configure: impl FnOnce(&mut stockmesh::Config),
        route: Option<InventoryRoute>,
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
        if let Some(route) = route {
            let via = route(inventory.addr, mesh.shutdown.child()).await;
            mesh.config
                .set_upstream_addrs(Target::Inventory, vec![format!("http://{via}")]);
        }
        let orders = mesh.start(Target::Orders, stockmesh_orders::serve).await;

        let mut a = AuthServiceClient::new(TestMesh::channel(auth.addr).await);
        let admin = login(&mut a, TestMesh::ADMIN_EMAIL, TestMesh::ADMIN_PASSWORD).await;
        let operator = user(&mut a, &admin.token, Role::Operator, "operator@orders.test").await;
        let customer = user(&mut a, &admin.token, Role::Customer, "customer@orders.test").await;
        let other = user(&mut a, &admin.token, Role::Customer, "other@orders.test").await;
        let service = User {
            id: String::new(),
            token: mesh.service_token(auth.addr, Target::Inventory).await,
        };

        Self {
            client: OrderServiceClient::new(TestMesh::channel(orders.addr).await),
            inv: InventoryServiceClient::new(TestMesh::channel(inventory.addr).await),
            catalog: ProductServiceClient::new(TestMesh::channel(products.addr).await),
            mesh,
            auth,
            products,
            inventory: Some(inventory),
            orders,
            admin,
            operator,
            customer,
            other,
            service,
            restocked: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The token of `who` (`None` for anonymous).
    pub fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::Customer => Some(&self.customer.token),
            Who::Operator => Some(&self.operator.token),
            Who::Admin => Some(&self.admin.token),
            Who::Service => Some(&self.service.token),
        }
    }

    pub fn orders(&self) -> Orders {
        self.client.clone()
    }

    /// Stops the inventory server (as SIGTERM would).
    pub async fn stop_inventory(&mut self) {
        let running = self
            .inventory
            .take()
            .unwrap_or_else(|| panic!("inventory is not running"));
        running.stop().await;
    }

    /// Starts inventory again on the address the other services know.
    pub async fn restart_inventory(&mut self) {
        let addr = self.mesh.config.listen_addr(Target::Inventory);
        let running = self
            .mesh
            .restart_on(Target::Inventory, addr, stockmesh_inventory::serve)
            .await;
        self.inv = InventoryServiceClient::new(TestMesh::channel(running.addr).await);
        self.inventory = Some(running);
    }

    /// A new product priced `price_cents` in `currency`; returns its id.
    pub async fn product(&self, name: &str, price_cents: i64, currency: &str) -> String {
        self.catalog
            .clone()
            .create_product(with_token(
                CreateProductRequest {
                    sku: format!("SKU-{name}"),
                    name: name.to_string(),
                    description: String::new(),
                    price_cents,
                    currency: currency.into(),
                    supplier_id: None,
                },
                &self.operator.token,
            ))
            .await
            .unwrap_or_else(|s| panic!("create product {name}: {s:?}"))
            .into_inner()
            .product
            .unwrap_or_else(|| panic!("no product in response"))
            .id
    }

    /// A new warehouse at (lat, lon); returns its id.
    pub async fn warehouse(&self, name: &str, lat: f64, lon: f64) -> String {
        self.inv
            .clone()
            .create_warehouse(with_token(
                inv::CreateWarehouseRequest {
                    name: name.to_string(),
                    address: format!("{name} address"),
                    latitude: lat,
                    longitude: lon,
                    capacity: 0,
                },
                &self.operator.token,
            ))
            .await
            .unwrap_or_else(|s| panic!("create warehouse {name}: {s:?}"))
            .into_inner()
            .warehouse
            .unwrap_or_else(|| panic!("no warehouse in response"))
            .id
    }

    pub async fn restock(&self, product: &str, warehouse: &str, quantity: i64) {
        self.inv
            .clone()
            .restock(with_token(
                inv::RestockRequest {
                    product_id: product.to_string(),
                    warehouse_id: warehouse.to_string(),
                    quantity,
                    request_id: uuid::Uuid::new_v4().to_string(),
                },
                &self.operator.token,
            ))
            .await
            .unwrap_or_else(|s| panic!("restock: {s:?}"));
        let mut restocked = self.restocked.lock().unwrap_or_else(|p| p.into_inner());
        *restocked.entry(product.to_string()).or_default() += quantity;
    }

    pub async fn stock(&self, product: &str) -> inv::Stock {
        self.inv
            .clone()
            .get_stock(inv::GetStockRequest {
                product_id: product.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("get stock: {s:?}"))
            .into_inner()
            .stock
            .unwrap_or_default()
    }

    /// A reservation as inventory sees it (`None` when it has none by that id).
    pub async fn reservation(&self, id: &str) -> Option<inv::Reservation> {
        match self
            .inv
            .clone()
            .get_reservation(with_token(
                inv::GetReservationRequest {
                    reservation_id: id.to_string(),
                },
                &self.admin.token,
            ))
            .await
        {
            Ok(resp) => resp.into_inner().reservation,
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => panic!("get reservation {id}: {s:?}"),
        }
    }

    /// Reserves directly in inventory as a service (to stage what a saga would have done).
    pub async fn reserve(&self, id: &str, product: &str, quantity: i64) -> inv::Reservation {
        self.inv
            .clone()
            .reserve(with_token(
                inv::ReserveRequest {
                    reservation_id: id.to_string(),
                    product_id: product.to_string(),
                    quantity,
                    warehouse_id: None,
                    latitude: None,
                    longitude: None,
                },
                &self.service.token,
            ))
            .await
            .unwrap_or_else(|s| panic!("reserve {id}: {s:?}"))
            .into_inner()
            .reservation
            .unwrap_or_default()
    }

    pub async fn create(
        &self,
        token: &str,
        request_id: &str,
        items: &[(&str, i64)],
    ) -> Result<pb::Order, Status> {
        self.create_req(token, order_req(request_id, items)).await
    }

    pub async fn create_req(
        &self,
        token: &str,
        req: pb::CreateOrderRequest,
    ) -> Result<pb::Order, Status> {
        Ok(self
            .orders()
            .create_order(with_token(req, token))
            .await?
            .into_inner()
            .order
            .unwrap_or_default())
    }

    pub async fn get(&self, token: &str, id: &str) -> Result<pb::Order, Status> {
        Ok(self
            .orders()
            .get_order(with_token(pb::GetOrderRequest { id: id.into() }, token))
            .await?
            .into_inner()
            .order
            .unwrap_or_default())
    }

    pub async fn complete(&self, token: &str, id: &str) -> Result<pb::Order, Status> {
        Ok(self
            .orders()
            .complete_order(with_token(
                pb::CompleteOrderRequest { id: id.into() },
                token,
            ))
            .await?
            .into_inner()
            .order
            .unwrap_or_default())
    }

    pub async fn cancel(&self, token: &str, id: &str, reason: &str) -> Result<pb::Order, Status> {
        Ok(self
            .orders()
            .cancel_order(with_token(
                pb::CancelOrderRequest {
                    id: id.into(),
                    reason: reason.into(),
                },
                token,
            ))
            .await?
            .into_inner()
            .order
            .unwrap_or_default())
    }

    pub async fn list(
        &self,
        token: &str,
        req: pb::ListOrdersRequest,
    ) -> Result<pb::ListOrdersResponse, Status> {
        Ok(self
            .orders()
            .list_orders(with_token(req, token))
            .await?
            .into_inner())
    }

    /// Every order visible to staff, all pages.
    pub async fn all_orders(&self) -> Vec<pb::Order> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .list(
                    &self.admin.token,
                    pb::ListOrdersRequest {
                        page_size: 500,
                        page_token: page_token.clone(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|s| panic!("list orders: {s:?}"));
            all.extend(page.orders);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    /// The stock books balance: for every product restocked in this test, inventory's
    /// reserved units are exactly the units of its PENDING order lines, its on-hand units
    /// are what was restocked minus the units of its COMPLETED order lines, and no
    /// warehouse is negative or over-reserved.
    pub async fn assert_books_balance(&self) {
        let orders = self.all_orders().await;
        let restocked = self
            .restocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (product, restocked) in restocked {
            let units = |status: pb::OrderStatus| -> i64 {
                orders
                    .iter()
                    .filter(|o| o.status == status as i32)
                    .flat_map(|o| o.items.iter())
                    .filter(|i| i.product_id == product)
                    .map(|i| i.quantity)
                    .sum()
            };
            let stock = self.stock(&product).await;
            assert_eq!(
                stock.total_reserved,
                units(pb::OrderStatus::Pending),
                "reserved units of {product} = units of its pending order lines"
            );
            assert_eq!(
                stock.total_on_hand,
                restocked - units(pb::OrderStatus::Completed),
                "on-hand units of {product} = restocked - completed"
            );
            assert_eq!(
                stock.total_available,
                stock.total_on_hand - stock.total_reserved
            );
            for w in &stock.warehouses {
                assert!(
                    w.on_hand >= w.reserved && w.reserved >= 0,
                    "warehouse {} of {product}: on_hand {} reserved {}",
                    w.warehouse_id,
                    w.on_hand,
                    w.reserved
                );
            }
        }
    }
}

/// A CreateOrder request with no delivery point or preference.
pub fn order_req(request_id: &str, items: &[(&str, i64)]) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        request_id: request_id.to_string(),
        items: items
            .iter()
            .map(|(product_id, quantity)| pb::CreateOrderItem {
                product_id: product_id.to_string(),
                quantity: *quantity,
            })
            .collect(),
        ..Default::default()
    }
}

/// `msg` with `who`'s token, if any.
pub fn as_who<T>(env: &Env, who: Who, msg: T) -> Request<T> {
    match env.token(who) {
        Some(token) => with_token(msg, token),
        None => Request::new(msg),
    }
}

pub fn status_of(order: &pb::Order) -> pb::OrderStatus {
    pb::OrderStatus::try_from(order.status).unwrap_or(pb::OrderStatus::Unspecified)
}

/// Asserts that `result` failed with `code`, and returns the message.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> String {
    match result {
        Err(s) if s.code() == code => s.message().to_string(),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// Polls `check` until it returns `Some`, for at most `limit`. For outcomes of background
/// work (the reconciler) that have no readiness signal to wait on.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
