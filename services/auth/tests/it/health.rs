//! Health reports NOT_SERVING while auth is starting and SERVING once it is ready;
//! reflection lists the service.

use std::sync::Arc;

use futures::StreamExt;
use sea_orm::{ConnectionTrait, TransactionTrait};
use stockmesh::Target;
use stockmesh::proto::auth::v1::GetJwksRequest;
use stockmesh::proto::auth::v1::auth_service_client::AuthServiceClient;
use stockmesh::testing::{Backend, TestMesh};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::PATIENCE;

const SERVICE: &str = "stockmesh.auth.v1.AuthService";

async fn check(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("health check {service:?}: {e}"))
        .into_inner()
        .status
}

async fn health_goes_from_not_serving_to_serving(backend: Backend) {
    let mesh = TestMesh::new(backend).await;
    let url = mesh.database_url(Target::Auth);
    stockmesh_auth::migrate(&mesh.config).await.unwrap();

    // Hold a lock that start-up needs (the signing key table), so the server is
    // observably up but not ready, without any timing assumption.
    let db = sea_orm::Database::connect(&url).await.unwrap();
    let gate = db.begin().await.unwrap();
    let lock = match backend {
        // SQLite has one writer: taking the write lock makes the key insert wait.
        Backend::Sqlite => "CREATE TABLE start_gate (x INTEGER)",
        Backend::Postgres => "LOCK TABLE signing_keys IN ACCESS EXCLUSIVE MODE",
    };
    gate.execute_unprepared(lock).await.unwrap();

    let (listener, addr) = stockmesh::testing::bind().await;
    let shutdown = mesh.shutdown.child();
    let task = tokio::spawn(stockmesh_auth::serve(
        Arc::new(mesh.config.clone()),
        listener,
        shutdown.clone(),
    ));
    let channel = TestMesh::channel(addr).await;
    let mut health = HealthClient::new(channel.clone());
    let not_serving = ServingStatus::NotServing as i32;
    let serving = ServingStatus::Serving as i32;
    assert_eq!(check(&mut health, "").await, not_serving);
    assert_eq!(check(&mut health, SERVICE).await, not_serving);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status, not_serving);
    let early = AuthServiceClient::new(channel.clone())
        .get_jwks(GetJwksRequest {})
        .await;
    assert_eq!(
        early.unwrap_err().code(),
        Code::Unavailable,
        "RPCs wait for start-up"
    );

    gate.rollback().await.unwrap();
    db.close().await.unwrap();
    tokio::time::timeout(PATIENCE, async {
        while let Some(msg) = watch.message().await.unwrap() {
            if msg.status == serving {
                return;
            }
            assert_eq!(msg.status, not_serving);
        }
        panic!("health stream ended before SERVING");
    })
    .await
    .expect("SERVING once start-up can finish");
    assert_eq!(check(&mut health, "").await, serving);
    assert_eq!(check(&mut health, SERVICE).await, serving);
    let jwks = AuthServiceClient::new(channel.clone())
        .get_jwks(GetJwksRequest {})
        .await
        .expect("RPCs work once SERVING")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);

    // Reflection (v1) lists the auth service and health.
    let mut reflection = ServerReflectionClient::new(channel);
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    let response = responses
        .next()
        .await
        .expect("a reflection response")
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == SERVICE), "{names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );

    // Graceful stop: NOT_SERVING, then the server returns cleanly.
    shutdown.trigger();
    let stopped = tokio::time::timeout(PATIENCE, task)
        .await
        .expect("server stops within the grace period");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

async fn start_up_fails_cleanly_on_a_bad_database(backend: Backend) {
    let mut mesh = TestMesh::new(backend).await;
    let bad = match backend {
        Backend::Sqlite => "sqlite:///proc/definitely/not/here.db".to_string(),
        Backend::Postgres => "postgres://postgres@127.0.0.1:5432/stockmesh_no_such_db".to_string(),
    };
    mesh.config.set_database_url(Target::Auth, bad);
    let (listener, _) = stockmesh::testing::bind().await;
    let result = tokio::time::timeout(
        PATIENCE,
        stockmesh_auth::serve(
            Arc::new(mesh.config.clone()),
            listener,
            mesh.shutdown.child(),
        ),
    )
    .await
    .expect("serve gives up instead of hanging");
    assert!(result.is_err(), "serve must fail on an unusable database");
}

stockmesh::db_tests!(
    health_goes_from_not_serving_to_serving,
    start_up_fails_cleanly_on_a_bad_database,
);
