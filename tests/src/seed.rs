//! Catalog seeding shared by the whole-mesh drills and benches: a product, a warehouse and
//! stock of the one in the other, made over gRPC by a caller allowed to (the admin), so
//! that every drill starts from the same kind of stocked product.

use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::products::v1::CreateProductRequest;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::testing::with_token;
use tonic::transport::Channel;

/// What [`stocked_product`] made.
#[derive(Debug, Clone)]
pub struct Stocked {
    pub product: String,
    pub warehouse: String,
}

/// A name no earlier call of this process (or an earlier run) used: SKUs and request ids.
pub fn unique(prefix: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{nanos:x}-{seq}")
}

/// A new product (a unique SKU, 2.50 USD) and a new warehouse at (10, 10) holding
/// `quantity` units of it, made through `products` and `inventory` (the services, or a
/// gateway serving both) as the holder of `token`.
pub async fn stocked_product(
    products: Channel,
    inventory: Channel,
    token: &str,
    quantity: i64,
) -> Stocked {
    let product = ProductServiceClient::new(products)
        .create_product(with_token(
            CreateProductRequest {
                sku: unique("SKU"),
                name: "widget".into(),
                price_cents: 250,
                currency: "USD".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("CreateProduct")
        .into_inner()
        .product
        .expect("CreateProduct answers the product")
        .id;
    let mut inventory = InventoryServiceClient::new(inventory);
    let warehouse = inventory
        .create_warehouse(with_token(
            inv::CreateWarehouseRequest {
                name: "north".into(),
                address: "1 North Road".into(),
                latitude: 10.0,
                longitude: 10.0,
                capacity: 0,
            },
            token,
        ))
        .await
        .expect("CreateWarehouse")
        .into_inner()
        .warehouse
        .expect("CreateWarehouse answers the warehouse")
        .id;
    inventory
        .restock(with_token(
            inv::RestockRequest {
                product_id: product.clone(),
                warehouse_id: warehouse.clone(),
                quantity,
                request_id: unique("restock"),
            },
            token,
        ))
        .await
        .expect("Restock");
    Stocked { product, warehouse }
}
