//! Start-up refusals of the real binary: settings that would leave the mesh insecure stop
//! a process before it listens, with a message that names what is wrong.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// `stockmesh-drill serve <target>` with `env` and a fresh data directory: its exit status
/// and everything it printed. Bounded: a process that starts serving instead of refusing
/// is killed after 30 s and the test fails on its status.
async fn start_and_collect(
    target: &str,
    env: &[(&str, &str)],
    prepare: impl FnOnce(&std::path::Path),
) -> (Option<i32>, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "stockmesh_startup_{}_{target}_{nanos:x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    prepare(&dir);
    let child = Command::new(env!("CARGO_BIN_EXE_stockmesh-drill"))
        .args(["serve", target])
        .env_remove("STOCKMESH_SERVICE_SECRET")
        .env("STOCKMESH_DATA_DIR", &dir)
        .env("STOCKMESH_BIND", "127.0.0.1")
        // Port 0: should a refusal regress into a start, it binds nothing anyone uses.
        .env(format!("STOCKMESH_{}_PORT", target.to_uppercase()), "0")
        .env(
            format!("STOCKMESH_{}_METRICS_PORT", target.to_uppercase()),
            "0",
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await;
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(Ok(out)) => (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Ok(Err(e)) => panic!("waiting for {target}: {e}"),
        Err(_) => panic!("{target} did not refuse to start within 30 s"),
    }
}

/// An empty `service-secret` file (a crash between create and write, before writes were
/// atomic) would give every service identity a key derived from public constants.
#[tokio::test]
async fn an_empty_service_secret_file_stops_start_up() {
    for target in ["auth", "orders"] {
        let (code, out) = start_and_collect(target, &[], |dir| {
            std::fs::write(dir.join("service-secret"), "").unwrap();
        })
        .await;
        assert_ne!(
            code,
            Some(0),
            "{target} started with an empty secret: {out}"
        );
        assert!(
            out.contains("service secret") && out.contains("is empty"),
            "{target}: the message names the secret: {out}"
        );
    }
}

#[tokio::test]
async fn a_short_service_secret_setting_stops_start_up() {
    let (code, out) = start_and_collect(
        "auth",
        &[("STOCKMESH_SERVICE_SECRET", "only-20-bytes-secret")],
        |_| {},
    )
    .await;
    assert_ne!(code, Some(0), "auth started with a 20-byte secret: {out}");
    assert!(
        out.contains("STOCKMESH_SERVICE_SECRET") && out.contains("at least 32 bytes"),
        "the message names the variable and the minimum: {out}"
    );
}
