//! The message limit (`STOCKMESH_MAX_MESSAGE_BYTES`) over gRPC straight to the service: a
//! message one byte over it is RESOURCE_EXHAUSTED naming the limit, one exactly at it is
//! decoded and judged by the handler (here: refused by validation).

use prost::Message;
use stockmesh::proto::products::v1 as pb;
use stockmesh::testing::Backend;
use tonic::Code;

use crate::support::{Env, expect_err, expect_invalid, unique};

/// A CreateProduct whose encoding is exactly `size` bytes, padded in `field`.
fn create_of_size(size: usize, field: &str) -> pb::CreateProductRequest {
    let mut req = pb::CreateProductRequest {
        sku: unique("SKU"),
        name: unique("big"),
        description: String::new(),
        price_cents: 100,
        currency: String::new(),
        supplier_id: None,
    };
    // The padding's length prefix grows with it, so converge rather than compute.
    let mut pad = size.saturating_sub(req.encoded_len());
    loop {
        let text = "x".repeat(pad);
        match field {
            "name" => req.name = text,
            _ => req.description = text,
        }
        let len = req.encoded_len();
        if len == size {
            return req;
        }
        pad = if len > size {
            pad - (len - size)
        } else {
            pad + (size - len)
        };
    }
}

async fn over_the_default_limit_is_resource_exhausted(backend: Backend) {
    let env = Env::start(backend).await;
    let limit = stockmesh::message_limit::DEFAULT_MAX_MESSAGE_BYTES;

    // The finding of issue 14: 5 MiB used to be tonic's OUT_OF_RANGE.
    let res = env
        .client()
        .create_product(env.admin(create_of_size(5 << 20, "description")))
        .await;
    let msg = expect_err(res, Code::ResourceExhausted);
    assert!(msg.contains(&format!("limit of {limit} bytes")), "{msg}");

    let res = env
        .client()
        .create_product(env.admin(create_of_size(limit + 1, "description")))
        .await;
    let msg = expect_err(res, Code::ResourceExhausted);
    assert!(
        msg.contains(&format!("message of {} bytes", limit + 1)),
        "{msg}"
    );

    // Exactly at the limit: decoded, and judged by the handler.
    let res = env
        .client()
        .create_product(env.admin(create_of_size(limit, "description")))
        .await;
    expect_invalid(res, "description");
    env.stop().await;
}

async fn the_limit_is_configurable(backend: Backend) {
    const LIMIT: usize = 1024;
    let env = Env::start_with(backend, |c| c.max_message_bytes = LIMIT).await;

    let res = env
        .client()
        .create_product(env.admin(create_of_size(LIMIT + 1, "name")))
        .await;
    let msg = expect_err(res, Code::ResourceExhausted);
    assert!(msg.contains("limit of 1024 bytes"), "{msg}");
    assert!(msg.contains("STOCKMESH_MAX_MESSAGE_BYTES"), "{msg}");

    let res = env
        .client()
        .create_product(env.admin(create_of_size(LIMIT, "name")))
        .await;
    expect_invalid(res, "name");

    // The server still answers normally afterwards, on the same connection.
    let product = env.product("after", None).await;
    assert!(!product.id.is_empty());
    env.stop().await;
}

stockmesh::db_tests!(
    over_the_default_limit_is_resource_exhausted,
    the_limit_is_configurable
);
