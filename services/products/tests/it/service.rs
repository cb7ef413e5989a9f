//! The server around the API: health, reflection, start-up and shutdown.

use stockmesh::Target;
use stockmesh::proto::products::v1 as pb;
use stockmesh::testing::Backend;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::Env;

async fn health_and_reflection(backend: Backend) {
    let env = Env::start(backend).await;
    let channel = stockmesh::testing::TestMesh::channel(env.products.addr).await;

    let mut health = HealthClient::new(channel.clone());
    for service in ["", Target::Products.grpc_service()] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("reflection response")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names
            .iter()
            .any(|n| n == "stockmesh.products.v1.ProductService"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
    env.stop().await;
}

/// Data survives a restart on the same database (migrations run again, harmlessly), and
/// stopping reports no error.
async fn restart_keeps_the_catalog(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("Durable", None).await;
    let Env {
        mut mesh,
        auth,
        products,
        ..
    } = env;
    let addr = products.addr;
    products.stop().await;
    let products = mesh
        .restart_on(Target::Products, addr, stockmesh_products::serve)
        .await;
    let mut c = pb::product_service_client::ProductServiceClient::new(
        stockmesh::testing::TestMesh::channel(addr).await,
    );
    let got = c
        .get_product(pb::GetProductRequest {
            id: product.id.clone(),
        })
        .await
        .expect("product after restart")
        .into_inner()
        .product;
    assert_eq!(got, Some(product));
    products.stop().await;
    auth.stop().await;
}

stockmesh::db_tests!(health_and_reflection, restart_keeps_the_catalog);
