//! The web console in a real browser: `web/e2e/` (playwright-core driving Debian's
//! chromium) against a real `stockmesh up` (the `stockmesh-drill` binary, which embeds the
//! console) on ephemeral ports with a temporary data directory, stopped by its pid when the
//! test ends. Screenshots land in `target/console-e2e/<backend>/`.
//!
//! Without node/npm or `/usr/bin/chromium` the test is skipped with a message — except
//! under `CI=true`, where a missing toolchain is a failure (`.ci/run` installs both).

use std::path::{Path, PathBuf};
use std::process::Command;

use stockmesh::Target;
use stockmesh::testing::{Backend, TestMesh, in_ci};

use super::process::Mesh;

const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN_TTL_SECS: u64 = 12;

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Both backends' runs share `web/` (node_modules): one at a time.
static WEB_DIR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn console_e2e(backend: Backend) {
    if !(tool("node") && tool("npm") && Path::new(CHROMIUM).exists()) {
        assert!(
            !in_ci(),
            "CI=true but node/npm or {CHROMIUM} is missing: the console's browser test cannot run"
        );
        eprintln!("node/npm or {CHROMIUM} not found: skipping the console browser test");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let web = root.join("web");
    let out = root
        .join("target/console-e2e")
        .join(format!("{backend:?}").to_lowercase());
    let _one_at_a_time = WEB_DIR.lock().await;
    let mut mesh = Mesh::new(backend).await;
    // Short-lived access tokens: the browser's sessions must refresh (and reopen their
    // streams) during the run.
    mesh.set_env(
        "STOCKMESH_ACCESS_TOKEN_TTL_SECS",
        TOKEN_TTL_SECS.to_string(),
    );
    mesh.start_up().await;
    let base = format!("http://{}", mesh.addr(Target::Gateway));
    let status = tokio::task::spawn_blocking(move || {
        if !web.join("node_modules").exists() {
            let ci = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&web)
                .status()
                .unwrap_or_else(|e| panic!("npm ci: {e}"));
            assert!(ci.success(), "npm ci failed in {}", web.display());
        }
        Command::new("node")
            .args(["--test", "--test-concurrency=1", "e2e/"])
            .current_dir(&web)
            .env("STOCKMESH_CONSOLE_URL", base)
            .env("STOCKMESH_TEST_ADMIN_EMAIL", TestMesh::ADMIN_EMAIL)
            .env("STOCKMESH_TEST_ADMIN_PASSWORD", TestMesh::ADMIN_PASSWORD)
            .env("STOCKMESH_E2E_OUT", &out)
            .env("CHROMIUM", CHROMIUM)
            .env("STOCKMESH_E2E_TOKEN_TTL_SECS", TOKEN_TTL_SECS.to_string())
            .status()
            .unwrap_or_else(|e| panic!("node --test e2e/: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("e2e task: {e}"));
    assert!(
        status.success(),
        "the console's browser test failed ({status}); screenshots in target/console-e2e/; gateway log:\n{}",
        mesh.logs(Target::Gateway)
    );
}

stockmesh::db_tests!(console_e2e);
