use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

/// The server's view of a handshake: the peer's mesh identity check and its leaf.
type ServerView = Result<(Result<String, Status>, Option<Vec<u8>>), std::io::Error>;

/// One handshake over an in-memory pipe; the server's view (or the handshake error), and
/// the leaf certificate the client saw.
async fn handshake(
    server: Arc<ServerConfig>,
    client: ClientConfig,
) -> (ServerView, Option<Vec<u8>>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let connector = TlsConnector::from(Arc::new(client));
    let srv = tokio::spawn(async move {
        let mut s = acceptor.accept(a).await?;
        let peer = s.get_ref().1.peer_certificates();
        let check = require_mesh_peer(peer);
        let leaf = peer.and_then(|p| p.first()).map(|c| c.as_ref().to_vec());
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).await?;
        s.write_all(&buf).await?;
        s.flush().await?;
        Ok::<_, std::io::Error>((check, leaf))
    });
    let name = ServerName::try_from("localhost").unwrap();
    let mut seen = None;
    if let Ok(mut c) = connector.connect(name, b).await {
        seen = c
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|p| p.first())
            .map(|c| c.as_ref().to_vec());
        let _ = c.write_all(b"x").await;
        let _ = c.flush().await;
        let mut buf = [0u8; 1];
        let _ = c.read_exact(&mut buf).await;
    }
    (srv.await.unwrap(), seen)
}

#[tokio::test]
async fn only_mesh_certificates_from_the_ca_pass() {
    let tmp = std::env::temp_dir().join(format!("stockmesh-tls-{}", uuid::Uuid::new_v4()));
    let other = tmp.join("other");
    let dir = tmp.join("mesh");
    let issuer = generate(&dir, &MESH_IDENTITIES).unwrap();
    issue(&dir, &issuer, "alice").unwrap();
    generate(&other, &["orders"]).unwrap();
    let server = Arc::new(server_config(&dir, "inventory").unwrap());

    // A mesh service with its certificate: accepted, identity `orders`.
    let (res, seen) = handshake(
        server.clone(),
        client_config(&dir, Some("orders"), "inventory").unwrap(),
    )
    .await;
    assert_eq!(res.unwrap().0.unwrap(), "orders");
    assert_eq!(mesh_identity(&seen.unwrap()).as_deref(), Some("inventory"));

    // No client certificate: the handshake is refused.
    let (res, _) = handshake(
        server.clone(),
        client_config(&dir, None, "inventory").unwrap(),
    )
    .await;
    assert!(res.is_err(), "no client certificate must be refused");

    // A certificate from another CA (client trusting our CA, presenting the other's cert).
    let (crt, key) = identity_paths(&other, "orders");
    let roots = super::roots(&dir).unwrap();
    let foreign = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&crt).unwrap(), load_key(&key).unwrap())
        .unwrap();
    let (res, _) = handshake(server.clone(), foreign).await;
    assert!(
        res.is_err(),
        "a certificate from another CA must be refused"
    );

    // Right CA, but not a mesh identity: the transport is up, internal RPCs are denied.
    let (res, _) = handshake(
        server.clone(),
        client_config(&dir, Some("alice"), "inventory").unwrap(),
    )
    .await;
    let status = res.unwrap().0.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("alice"), "{status:?}");
    std::fs::remove_dir_all(&tmp).ok();
}

#[tokio::test]
async fn a_rotated_server_certificate_is_served_within_5s() {
    let dir = std::env::temp_dir().join(format!("stockmesh-tls-{}", uuid::Uuid::new_v4()));
    let issuer = generate(&dir, &["inventory", "orders"]).unwrap();
    let server = Arc::new(server_config(&dir, "inventory").unwrap());
    let client = || client_config(&dir, Some("orders"), "inventory").unwrap();
    let (res, before) = handshake(server.clone(), client()).await;
    res.unwrap().0.unwrap();
    let before = before.unwrap();

    issue(&dir, &issuer, "inventory").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (res, seen) = handshake(server.clone(), client()).await;
        res.unwrap().0.unwrap();
        if seen.unwrap() != before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotated certificate not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mesh_identity_reads_the_spiffe_san() {
    let dir = std::env::temp_dir().join(format!("stockmesh-tls-{}", uuid::Uuid::new_v4()));
    generate(&dir, &["gateway"]).unwrap();
    let (crt, _) = identity_paths(&dir, "gateway");
    let leaf = load_certs(&crt).unwrap();
    assert_eq!(mesh_identity(leaf[0].as_ref()).as_deref(), Some("gateway"));
    assert_eq!(require_mesh_peer(Some(&leaf)).unwrap(), "gateway");
    assert_eq!(
        require_mesh_peer(None).unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let ca = load_certs(&ca_path(&dir)).unwrap();
    assert_eq!(mesh_identity(ca[0].as_ref()), None);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_client_refuses_a_server_naming_another_identity() {
    let dir = std::env::temp_dir().join(format!("stockmesh-tls-{}", uuid::Uuid::new_v4()));
    generate(&dir, &["inventory", "orders"]).unwrap();
    let server = Arc::new(server_config(&dir, "inventory").unwrap());
    // Orders meant to reach products; inventory's certificate (same CA) must not do.
    let (res, seen) = handshake(
        server,
        client_config(&dir, Some("orders"), "products").unwrap(),
    )
    .await;
    assert!(res.is_err(), "the handshake must fail");
    assert!(seen.is_none(), "the client must not complete the handshake");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_rotated_client_certificate_is_presented_on_new_connections() {
    let dir = std::env::temp_dir().join(format!("stockmesh-tls-{}", uuid::Uuid::new_v4()));
    let issuer = generate(&dir, &["inventory", "orders"]).unwrap();
    let server = Arc::new(server_config(&dir, "inventory").unwrap());
    // One client configuration for good, as an upstream channel keeps it.
    let client = client_config(&dir, Some("orders"), "inventory").unwrap();
    let (res, _) = handshake(server.clone(), client.clone()).await;
    let before = res.unwrap().1.unwrap();

    issue(&dir, &issuer, "orders").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (res, _) = handshake(server.clone(), client.clone()).await;
        let (check, leaf) = res.unwrap();
        assert_eq!(check.unwrap(), "orders");
        if leaf.unwrap() != before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotated client certificate not presented within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_mismatched_pair_on_disk_keeps_the_previous_certificate() {
    let dir = std::env::temp_dir().join(format!("stockmesh-tls-{}", uuid::Uuid::new_v4()));
    generate(&dir, &["orders", "products"]).unwrap();
    let cert = ReloadingCert::new(&dir, "orders").unwrap();
    let first = cert.current();
    // Another identity's key next to orders' certificate: not a pair.
    let (_, other_key) = identity_paths(&dir, "products");
    let (_, key) = identity_paths(&dir, "orders");
    std::fs::copy(&other_key, &key).unwrap();
    std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
    assert!(
        Arc::ptr_eq(&first, &cert.current()),
        "kept the last good pair"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn keys_are_written_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("stockmesh-tls-{}", uuid::Uuid::new_v4()));
    generate(&dir, &["auth"]).unwrap();
    let (crt, key) = identity_paths(&dir, "auth");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_ne!(mode(&crt) & 0o044, 0, "the certificate stays readable");
    std::fs::remove_dir_all(&dir).ok();
}

/// A flood of connections that never start their handshake is capped: past
/// [`crate::server::MAX_PENDING_HANDSHAKES`] the port closes new connections at once
/// instead of holding a task for each until the handshake timeout.
#[tokio::test]
async fn handshakes_in_progress_are_capped() {
    use crate::server::{MAX_PENDING_HANDSHAKES, tls_incoming};
    let dir = std::env::temp_dir().join(format!("stockmesh-tls-{}", uuid::Uuid::new_v4()));
    generate(&dir, &MESH_IDENTITIES).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&dir, "inventory").unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _incoming = tls_incoming(listener, acceptor);
    let mut silent = Vec::new();
    for _ in 0..MAX_PENDING_HANDSHAKES {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Accepted in order: this one finds every place taken and is closed.
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection over the cap must be closed at once, got {read:?}"
    );
    // The ones within the cap are still waiting for their handshake.
    let first = tokio::time::timeout(Duration::from_millis(200), silent[0].read(&mut buf)).await;
    assert!(first.is_err(), "a pending handshake was closed: {first:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
