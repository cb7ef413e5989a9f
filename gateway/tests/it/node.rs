//! The Node test in `tests/node`: generated protobuf-es code and connect-web's gRPC-web
//! transport against a real gateway, plus OpenAPI validation with swagger-parser.
//!
//! Without node/npm the test is skipped with a message — except under `CI=true`, where
//! a missing toolchain is a failure.

use std::path::PathBuf;
use std::process::Command;

use stockmesh::testing::{Backend, TestMesh, in_ci};

use crate::support::Env;

fn npm_available() -> bool {
    Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Both backends' runs share `tests/node` (node_modules, generated code): one at a time.
static NODE_DIR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn node_client(backend: Backend) {
    if !npm_available() {
        assert!(
            !in_ci(),
            "CI=true but node/npm are not installed: the Node test cannot run"
        );
        eprintln!("node/npm not found: skipping the Node gateway test");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/node");
    let _one_at_a_time = NODE_DIR.lock().await;
    let env = Env::start(backend).await;
    let base = env.base.clone();
    let status = tokio::task::spawn_blocking(move || {
        if !dir.join("node_modules").exists() {
            let ci = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .unwrap_or_else(|e| panic!("npm ci: {e}"));
            assert!(ci.success(), "npm ci failed in {}", dir.display());
        }
        Command::new("npm")
            .arg("test")
            .current_dir(&dir)
            .env("STOCKMESH_GATEWAY_URL", base)
            .env("STOCKMESH_TEST_ADMIN_EMAIL", TestMesh::ADMIN_EMAIL)
            .env("STOCKMESH_TEST_ADMIN_PASSWORD", TestMesh::ADMIN_PASSWORD)
            .status()
            .unwrap_or_else(|e| panic!("npm test: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("npm task: {e}"));
    assert!(status.success(), "npm test failed: {status}");
    drop(env);
}
