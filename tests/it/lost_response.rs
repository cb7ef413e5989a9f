//! Lost response: inventory performs a Reserve but the connection dies before the answer
//! reaches the caller. The outbound stack retries (Reserve carries its idempotency key,
//! `reservation_id`) and the stock moves exactly once. Runs the real auth, products and
//! inventory services, on SQLite and PostgreSQL.

use stockmesh::Target;
use stockmesh::client::ClientBuilder;
use stockmesh::proto::auth::v1::LoginRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::proto::inventory::v1 as pb;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::testing::{Backend, TestMesh, with_token};
use stockmesh_tests::drill_settings;
use stockmesh_tests::proxy::LossyProxy;
use stockmesh_tests::seed::{Stocked, stocked_product};

async fn reserve_response_lost_moves_stock_once(backend: Backend) {
    let mut mesh = TestMesh::new(backend).await;
    let auth = mesh.start(Target::Auth, stockmesh_auth::serve).await;
    let products = mesh
        .start(Target::Products, stockmesh_products::serve)
        .await;
    let inventory = mesh
        .start(Target::Inventory, stockmesh_inventory::serve)
        .await;

    let admin = AuthServiceClient::new(TestMesh::channel(auth.addr).await)
        .login(LoginRequest {
            email: TestMesh::ADMIN_EMAIL.into(),
            password: TestMesh::ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let Stocked { product, .. } = stocked_product(
        TestMesh::channel(products.addr).await,
        TestMesh::channel(inventory.addr).await,
        &admin,
        10,
    )
    .await;
    let mut direct = InventoryServiceClient::new(TestMesh::channel(inventory.addr).await);

    // The caller talks to inventory through the lossy proxy and the real outbound stack.
    let proxy = LossyProxy::start(inventory.addr, 1).await;
    let channel = ClientBuilder::new(Target::Inventory, vec![proxy.uri()], drill_settings())
        .build()
        .unwrap();
    let mut caller = InventoryServiceClient::new(channel);
    let reserve = pb::ReserveRequest {
        reservation_id: "order-1-line-1".into(),
        product_id: product.clone(),
        quantity: 3,
        ..Default::default()
    };
    let reservation = caller
        .reserve(with_token(reserve.clone(), &admin))
        .await
        .expect("the retry recovers the lost response")
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(proxy.dropped(), 1, "a response was really lost");
    assert_eq!(reservation.reservation_id, "order-1-line-1");
    assert_eq!(reservation.quantity, 3);

    let stock = direct
        .get_stock(pb::GetStockRequest {
            product_id: product.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stock
        .unwrap();
    assert_eq!(
        (
            stock.total_on_hand,
            stock.total_reserved,
            stock.total_available
        ),
        (10, 3, 7),
        "reserved exactly once"
    );

    // Without a key the same loss is not retried: the caller sees UNAVAILABLE and must
    // decide itself (nothing is reserved twice behind its back).
    proxy.arm(1);
    let keyless = pb::ReserveRequest {
        reservation_id: String::new(),
        ..reserve
    };
    let err = caller
        .reserve(with_token(keyless, &admin))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(proxy.dropped(), 2);
}

stockmesh::db_tests!(reserve_response_lost_moves_stock_once);
