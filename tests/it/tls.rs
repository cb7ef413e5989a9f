//! Mutual TLS between services (issue 14 item 6), against the whole mesh started the way
//! `stockmesh up` starts it (`stockmesh_cli::mesh::start`, in this process) with
//! `STOCKMESH_TLS_DIR` pointing at a fresh development CA: an order through the gateway
//! crosses every internal hop over mTLS; clients without a certificate or with one from
//! another CA are refused during the handshake; a valid certificate that names no mesh
//! service cannot call internal RPCs whatever its token; a certificate rotated on disk is
//! served to new connections within 5 s; the plaintext health port answers while the TLS
//! port refuses plaintext.
//!
//! Every refusal is paired with the same call by a mesh client succeeding, so a mesh
//! without mTLS fails these tests rather than passing them vacuously.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockmesh::client::ClientTls;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::auth::v1::{LoginRequest, RegisterRequest};
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::orders::v1 as ord;
use stockmesh::proto::orders::v1::order_service_client::OrderServiceClient;
use stockmesh::proto::products::v1::BatchGetProductsRequest;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::testing::{Backend, TestDb, TestMesh, with_token};
use stockmesh::tls::{self, DevCa};
use stockmesh::{Config, Shutdown, Target};
use stockmesh_cli::mesh::{self, Mesh};
use stockmesh_tests::seed::{stocked_product, unique};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The whole mesh over mTLS, with its CA kept to issue more certificates.
struct TlsMesh {
    mesh: Option<Mesh>,
    ca: DevCa,
    tls_dir: PathBuf,
    secret: String,
    health: BTreeMap<Target, SocketAddr>,
    root: PathBuf,
    _dbs: Vec<TestDb>,
}

impl TlsMesh {
    async fn start() -> Self {
        Self::start_with(|_, _, _| {}).await
    }

    /// With `tune` given the configuration, the certificate directory and its CA.
    async fn start_with(tune: impl FnOnce(&mut Config, &Path, &DevCa)) -> Self {
        let root = std::env::temp_dir().join(format!(
            "stockmesh_tls_{}_{}",
            std::process::id(),
            unique("tls")
        ));
        let tls_dir = root.join("tls");
        let ca = tls::generate(&tls_dir, &tls::MESH_IDENTITIES).unwrap();
        let mut config = Config::from_env().unwrap();
        config.data_dir = root.join("data");
        std::fs::create_dir_all(&config.data_dir).unwrap();
        config.drain_delay_ms = 0;
        config.auth.admin_email = TestMesh::ADMIN_EMAIL.into();
        config.auth.admin_password = Some(TestMesh::ADMIN_PASSWORD.into());
        let secret = format!("tls-{0}-{0}-secret", unique("tls"));
        config.auth.service_secret = Some(secret.clone());
        config.tls.tls_dir = Some(tls_dir.clone());
        let mut dbs = Vec::new();
        let mut health = BTreeMap::new();
        for target in Target::ALL {
            config.set_port(target, 0);
        }
        for target in Target::SERVICES {
            let db = TestDb::new(Backend::Sqlite).await;
            config.set_database_url(target, db.url.clone());
            dbs.push(db);
            let port = free_port();
            config.set_health_port(target, Some(port));
            health.insert(target, SocketAddr::from(([127, 0, 0, 1], port)));
        }
        tune(&mut config, &tls_dir, &ca);
        let mesh = mesh::start(config, &Target::ALL, Shutdown::new())
            .await
            .unwrap_or_else(|e| panic!("the mesh over mTLS did not start: {e}"));
        Self {
            mesh: Some(mesh),
            ca,
            tls_dir,
            secret,
            health,
            root,
            _dbs: dbs,
        }
    }

    fn mesh(&self) -> &Mesh {
        self.mesh.as_ref().unwrap()
    }

    fn addr(&self, target: Target) -> SocketAddr {
        self.mesh().addr(target).unwrap()
    }

    /// A channel to `target` over mTLS as mesh identity (or issued name) `as_identity`.
    async fn mtls(&self, target: Target, as_identity: &str) -> Result<Channel, String> {
        ClientTls::new(&self.tls_dir, as_identity, target.name())
            .map_err(|e| e.to_string())?
            .connect(&format!("http://{}", self.addr(target)))
            .await
    }

    /// An access token of service identity `target`, obtained as services do, over mTLS.
    async fn service_token(&self, target: Target) -> String {
        AuthServiceClient::new(self.mtls(Target::Auth, "orders").await.unwrap())
            .issue_service_token(stockmesh::identity::service_token_request(
                &self.secret,
                target,
            ))
            .await
            .unwrap()
            .into_inner()
            .access_token
    }

    /// The gateway (plaintext to its clients here): users sign in through it.
    async fn gateway(&self) -> Channel {
        TestMesh::channel(self.addr(Target::Gateway)).await
    }

    async fn login(&self, email: &str, password: &str) -> String {
        AuthServiceClient::new(self.gateway().await)
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("login {email}: {e}"))
            .into_inner()
            .access_token
    }

    async fn admin(&self) -> String {
        self.login(TestMesh::ADMIN_EMAIL, TestMesh::ADMIN_PASSWORD)
            .await
    }

    async fn customer(&self) -> String {
        let email = format!("c{}@example.com", unique("tls"));
        AuthServiceClient::new(self.gateway().await)
            .register(RegisterRequest {
                email: email.clone(),
                password: "customer-password".into(),
                display_name: "Customer".into(),
            })
            .await
            .unwrap();
        self.login(&email, "customer-password").await
    }

    /// A product with `quantity` in stock, made through the gateway as the admin.
    async fn stocked_product(&self, quantity: i64) -> String {
        let admin = self.admin().await;
        let gateway = self.gateway().await;
        stocked_product(gateway.clone(), gateway, &admin, quantity)
            .await
            .product
    }

    async fn stop(mut self) {
        if let Some(mesh) = self.mesh.take() {
            mesh.stop().await;
        }
    }
}

impl Drop for TlsMesh {
    fn drop(&mut self) {
        if let Some(mesh) = &self.mesh {
            mesh.shutdown.trigger();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A health Check on `channel`: the server's answer, or the failure as text.
async fn check(channel: Channel) -> Result<i32, String> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// What a client with `config` gets from inventory's port: the channel and one Check.
async fn check_with(mesh: &TlsMesh, config: rustls::ClientConfig) -> Result<i32, String> {
    let channel = ClientTls::from_config(config)
        .connect(&format!("http://{}", mesh.addr(Target::Inventory)))
        .await?;
    check(channel).await
}

/// A raw TLS connection to `addr` with `client`: `Ok` once the server has answered the
/// HTTP/2 preface over it, else the TLS error. (In TLS 1.3 the server judges the client's
/// certificate after the client's handshake is done; its verdict arrives as an alert on the
/// first read.)
async fn tls_outcome(addr: SocketAddr, client: rustls::ClientConfig) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 9];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed without a word".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// The leaf certificate a server presents to a new TLS connection from `client`.
async fn served_leaf(addr: SocketAddr, client: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let stream = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .unwrap();
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_through_the_gateway_crosses_every_hop_over_mtls() {
    let mesh = TlsMesh::start().await;
    let product = mesh.stocked_product(10).await;
    let customer = mesh.customer().await;
    // Gateway → orders → auth (JWKS), products (BatchGetProducts), inventory (Reserve):
    // every hop a service makes, over mTLS with its own certificate.
    let order = OrderServiceClient::new(mesh.gateway().await)
        .create_order(with_token(
            ord::CreateOrderRequest {
                request_id: "tls-order-1".into(),
                items: vec![ord::CreateOrderItem {
                    product_id: product.clone(),
                    quantity: 3,
                }],
                ..Default::default()
            },
            &customer,
        ))
        .await
        .unwrap_or_else(|e| panic!("CreateOrder over mTLS: {e}"))
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.status, ord::OrderStatus::Pending as i32, "{order:?}");
    assert_eq!(order.total_cents, 750);
    let stock = InventoryServiceClient::new(mesh.gateway().await)
        .get_stock(inv::GetStockRequest {
            product_id: product,
        })
        .await
        .unwrap()
        .into_inner()
        .stock
        .unwrap();
    assert_eq!((stock.total_reserved, stock.total_available), (3, 7));
    // Those hops can only have been mTLS: no service port answers plaintext, every one
    // answers a mesh client.
    for target in Target::SERVICES {
        let plain =
            tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.addr(target)))
                .unwrap()
                .timeout(Duration::from_secs(5))
                .connect_lazy();
        assert!(check(plain).await.is_err(), "{target} answered plaintext");
        let mtls = mesh.mtls(target, "gateway").await.unwrap();
        assert_eq!(
            check(mtls).await,
            Ok(ServingStatus::Serving as i32),
            "{target}"
        );
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let mesh = TlsMesh::start().await;
    let mesh_client = tls::client_config(&mesh.tls_dir, Some("orders"), "inventory").unwrap();
    assert_eq!(
        check_with(&mesh, mesh_client).await,
        Ok(ServingStatus::Serving as i32),
        "a mesh client passes"
    );
    let anonymous = || tls::client_config(&mesh.tls_dir, None, "inventory").unwrap();
    // The call fails (how tonic words a connection that died under it varies: transport
    // error, cancelled) …
    assert!(check_with(&mesh, anonymous()).await.is_err());
    // … in the TLS handshake, with the alert saying why.
    let mesh_client = tls::client_config(&mesh.tls_dir, Some("orders"), "inventory").unwrap();
    let addr = mesh.addr(Target::Inventory);
    assert_eq!(tls_outcome(addr, mesh_client).await, Ok(()));
    let alert = tls_outcome(addr, anonymous()).await.unwrap_err();
    assert!(alert.contains("CertificateRequired"), "{alert}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_certificate_from_another_ca_is_refused() {
    let mesh = TlsMesh::start().await;
    // Trusts our CA (so the server's certificate passes) but presents an `orders`
    // certificate another CA issued.
    let other = mesh.root.join("other");
    tls::generate(&other, &["orders"]).unwrap();
    let mixed = mesh.root.join("mixed");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    copy(&tls::ca_path(&mesh.tls_dir), &tls::ca_path(&mixed));
    let (crt, key) = tls::identity_paths(&other, "orders");
    let (mcrt, mkey) = tls::identity_paths(&mixed, "orders");
    copy(&crt, &mcrt);
    copy(&key, &mkey);

    let ours = tls::client_config(&mesh.tls_dir, Some("orders"), "inventory").unwrap();
    assert_eq!(
        check_with(&mesh, ours).await,
        Ok(ServingStatus::Serving as i32)
    );
    let foreign = || tls::client_config(&mixed, Some("orders"), "inventory").unwrap();
    assert!(check_with(&mesh, foreign()).await.is_err());
    // … refused in the handshake: the server does not know the certificate's CA.
    let alert = tls_outcome(mesh.addr(Target::Inventory), foreign())
        .await
        .unwrap_err();
    assert!(alert.contains("UnknownCA"), "{alert}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_rpcs_need_a_mesh_certificate_whatever_the_token() {
    let mesh = TlsMesh::start().await;
    let product = mesh.stocked_product(5).await;
    let customer = mesh.customer().await;
    let orders_token = mesh.service_token(Target::Orders).await;
    // A certificate from the mesh CA for someone who is not a mesh service.
    tls::issue(&mesh.tls_dir, &mesh.ca, "alice").unwrap();

    let batch = || BatchGetProductsRequest {
        ids: vec![product.clone()],
    };
    let reserve = |id: &str| inv::ReserveRequest {
        reservation_id: id.into(),
        product_id: product.clone(),
        quantity: 1,
        ..Default::default()
    };
    let mut products_alice =
        ProductServiceClient::new(mesh.mtls(Target::Products, "alice").await.unwrap());
    let mut inventory_alice =
        InventoryServiceClient::new(mesh.mtls(Target::Inventory, "alice").await.unwrap());
    for token in [&customer, &orders_token] {
        let denied = products_alice
            .batch_get_products(with_token(batch(), token))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let denied = inventory_alice
            .reserve(with_token(reserve("tls-alice-1"), token))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    }
    // With the service token, it is the certificate that is refused, and the message
    // says so.
    let denied = inventory_alice
        .reserve(with_token(reserve("tls-alice-2"), &orders_token))
        .await
        .unwrap_err();
    assert!(
        denied.message().contains("\"alice\" is not a mesh service"),
        "{denied:?}"
    );
    // Public reads stay open to any certificate of the CA.
    inventory_alice
        .get_stock(inv::GetStockRequest {
            product_id: product.clone(),
        })
        .await
        .unwrap();

    // A mesh certificate and a service token: both internal RPCs pass.
    let got = ProductServiceClient::new(mesh.mtls(Target::Products, "orders").await.unwrap())
        .batch_get_products(with_token(batch(), &orders_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.products.len(), 1);
    let reserved =
        InventoryServiceClient::new(mesh.mtls(Target::Inventory, "orders").await.unwrap())
            .reserve(with_token(reserve("tls-orders-1"), &orders_token))
            .await
            .unwrap()
            .into_inner()
            .reservation
            .unwrap();
    assert_eq!(reserved.quantity, 1);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_rotated_on_disk_is_served_to_new_connections_within_5s() {
    let mesh = TlsMesh::start().await;
    let addr = mesh.addr(Target::Inventory);
    let client = Arc::new(tls::client_config(&mesh.tls_dir, Some("orders"), "inventory").unwrap());
    let before = served_leaf(addr, client.clone()).await;

    tls::issue(&mesh.tls_dir, &mesh.ca, "inventory").unwrap();
    let rotated = Instant::now();
    let deadline = rotated + Duration::from_secs(5);
    loop {
        let leaf = served_leaf(addr, client.clone()).await;
        if leaf != before {
            assert_eq!(tls::mesh_identity(&leaf).as_deref(), Some("inventory"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "inventory still serves the old certificate 5 s after rotation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("rotation picked up after {:?}", rotated.elapsed());
    // And the mesh keeps working over new connections with the new certificate.
    let got = InventoryServiceClient::new(mesh.mtls(Target::Inventory, "orders").await.unwrap())
        .get_stock(inv::GetStockRequest {
            product_id: "0b0e2a5e-0000-4000-8000-000000000000".into(),
        })
        .await;
    assert!(
        !matches!(&got, Err(s) if s.code() == Code::Unavailable),
        "{got:?}"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plaintext_health_port_answers_while_the_tls_port_refuses_plaintext() {
    // A drain delay, so that NOT_SERVING can be seen on the health port during it.
    let mesh = TlsMesh::start_with(|c, _, _| c.drain_delay_ms = 3000).await;
    let health = mesh.health[&Target::Inventory];
    assert_eq!(
        check(TestMesh::channel(health).await).await,
        Ok(ServingStatus::Serving as i32)
    );
    // Only health there.
    let unimplemented = InventoryServiceClient::new(TestMesh::channel(health).await)
        .get_stock(inv::GetStockRequest {
            product_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unimplemented.code(), Code::Unimplemented);
    // Plaintext on the TLS port: no answer.
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.addr(Target::Inventory)))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
    assert!(
        check(plain).await.is_err(),
        "the TLS port answered plaintext"
    );

    // Draining: the health port says NOT_SERVING with the TLS port.
    mesh.mesh().instances[&Target::Inventory].shutdown.trigger();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let status = check(TestMesh::channel(health).await).await;
        if status == Ok(ServingStatus::NotServing as i32) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health port still says {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_terminates_browser_tls_and_calls_the_mesh_over_mtls() {
    // A browser certificate for the gateway: here one the test CA issues (it names
    // 127.0.0.1), any PEM pair would do.
    let mesh = TlsMesh::start_with(|c, dir, ca| {
        tls::issue(dir, ca, "web").unwrap();
        let (crt, key) = tls::identity_paths(dir, "web");
        c.tls.gateway_tls_cert = Some(crt);
        c.tls.gateway_tls_key = Some(key);
    })
    .await;
    let gateway = mesh.addr(Target::Gateway);
    let browser = |alpn: &[u8]| {
        let mut c = tls::client_config(&mesh.tls_dir, None, "web").unwrap();
        c.alpn_protocols = vec![alpn.to_vec()];
        c
    };

    // HTTP/1.1 over TLS: REST, through the gateway to products over mTLS.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let mut https = tokio_rustls::TlsConnector::from(Arc::new(browser(b"http/1.1")))
        .connect(rustls::pki_types::ServerName::from(gateway.ip()), tcp)
        .await
        .unwrap();
    https
        .write_all(b"GET /v1/products HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = https.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // … which products answered over mTLS: its port speaks nothing else.
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.addr(Target::Products)))
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect_lazy();
    assert!(check(plain).await.is_err(), "products answered plaintext");

    // h2 over TLS: gRPC.
    let channel = ClientTls::from_config(browser(b"h2"))
        .connect(&format!("http://{gateway}"))
        .await
        .unwrap();
    assert_eq!(check(channel).await, Ok(ServingStatus::Serving as i32));

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(gateway).await.unwrap();
    plain
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/"),
        "the HTTPS port answered plain HTTP"
    );
    mesh.stop().await;
}
