//! gRPC (h2c) and gRPC-web (binary and text) through the gateway.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::Method;
use prost::Message;
use stockmesh::proto::products::v1 as pb;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::testing::{Backend, with_token};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{Env, decode_grpc_web_text, frame, grpc_web_frames, unique};

/// A generated tonic client pointed at the gateway reaches every service; the gateway
/// answers its own health; deadlines and unknown services behave.
pub async fn grpc_through_the_gateway(backend: Backend) {
    let env = Env::start(backend).await;
    let channel = env.channel().await;
    let mut products = ProductServiceClient::new(channel.clone());
    let created = products
        .create_product(with_token(
            pb::CreateProductRequest {
                sku: unique("SKU"),
                name: unique("Kettle"),
                price_cents: 3000,
                ..Default::default()
            },
            &env.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let got = products
        .get_product(pb::GetProductRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(got, created);
    let err = products
        .get_product(pb::GetProductRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Role checks stay with the service: a customer token passes the edge, then is refused.
    let customer = env.user("ROLE_CUSTOMER").await;
    let err = products
        .delete_product(with_token(
            pb::DeleteProductRequest {
                id: created.id.clone(),
            },
            &customer,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "stockmesh.gateway.v1.Gateway"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    // The caller's deadline reaches the upstream stack: 1 ns cannot be met.
    let resp = env
        .h2c(
            "/stockmesh.products.v1.ProductService/GetProduct",
            &[("grpc-timeout", "1n")],
            frame(&pb::GetProductRequest {
                id: created.id.clone(),
            }),
        )
        .await;
    assert_eq!(resp.header("grpc-status"), Some("4"), "{resp:?}");

    let resp = env
        .h2c(
            "/no.such.v1.Service/Method",
            &[],
            frame(&pb::GetProductRequest::default()),
        )
        .await;
    assert_eq!(resp.header("grpc-status"), Some("12"), "{resp:?}");
}

/// gRPC-web in binary and text (base64) mode, success and error.
pub async fn grpc_web_binary_and_text(backend: Backend) {
    let env = Env::start(backend).await;
    let product = env.product("Teapot", 1800).await;
    let id = product["id"].as_str().unwrap().to_string();
    let path = "/stockmesh.products.v1.ProductService/GetProduct";
    let request = frame(&pb::GetProductRequest { id: id.clone() });

    let resp = env
        .send(
            Method::POST,
            path,
            &[
                ("content-type", "application/grpc-web+proto"),
                ("x-grpc-web", "1"),
            ],
            request.clone(),
        )
        .await;
    assert!(resp.status.is_success(), "{resp:?}");
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("application/grpc-web"),
        "{resp:?}"
    );
    let (messages, trailers) = grpc_web_frames(resp.body.clone());
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(messages.len(), 1);
    let reply = pb::GetProductResponse::decode(messages[0].clone()).unwrap();
    assert_eq!(reply.product.unwrap().id, id);

    let resp = env
        .send(
            Method::POST,
            path,
            &[
                ("content-type", "application/grpc-web-text"),
                ("accept", "application/grpc-web-text"),
            ],
            STANDARD.encode(&request),
        )
        .await;
    assert!(resp.status.is_success(), "{resp:?}");
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("application/grpc-web-text"),
        "{resp:?}"
    );
    let decoded = decode_grpc_web_text(&resp.body);
    let (messages, trailers) = grpc_web_frames(Bytes::from(decoded));
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    let reply = pb::GetProductResponse::decode(messages[0].clone()).unwrap();
    assert_eq!(
        reply.product.unwrap().name,
        product["name"].as_str().unwrap()
    );

    // An error comes back as a grpc-status, in the headers or in the trailer frame.
    let resp = env
        .send(
            Method::POST,
            path,
            &[("content-type", "application/grpc-web+proto")],
            frame(&pb::GetProductRequest { id: "nope".into() }),
        )
        .await;
    let (_, trailers) = grpc_web_frames(resp.body.clone());
    let status = resp.header("grpc-status").map(str::to_string).or_else(|| {
        trailers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    });
    assert_eq!(status.as_deref(), Some("5"), "{resp:?}");
}
