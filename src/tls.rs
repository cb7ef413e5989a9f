//! Mutual TLS between mesh services (issue 14 item 6) — the kernel's building blocks.
//!
//! * [`generate`]: a development CA and one certificate + key per mesh identity, written in
//!   the cert-manager layout (`<dir>/ca.crt`, `<dir>/<name>/tls.crt`, `<dir>/<name>/tls.key`)
//!   so that a Kubernetes Secret made by cert-manager can be mounted in its place. Each
//!   certificate names its identity as a SPIFFE URI SAN (`spiffe://stockmesh/<name>`) and
//!   carries DNS/IP SANs for local runs and the k8s service names.
//! * [`server_config`]: rustls configuration that presents the service's own certificate and
//!   requires a client certificate chaining to the CA (WebPKI client verifier). The served
//!   certificate comes from [`ReloadingCert`], which re-reads the files when their mtime
//!   changes (checked at most every [`RELOAD_CHECK`]), so rotation needs no restart.
//! * [`client_config`]: the CA as the only trust root, the server's certificate checked
//!   for the SPIFFE identity of the upstream the caller meant to reach (not for a
//!   hostname: endpoints found by DNS discovery are pod IPs no certificate names), and the
//!   caller's own certificate from a [`ReloadingCert`], so a rotated one is presented on
//!   the next new connection.
//! * [`mesh_identity`] / [`require_mesh_peer`]: the identity in a peer certificate, and the
//!   check internal RPCs make on top of the bearer token — a customer's token is not enough
//!   without a mesh certificate.
//!
//! Everything here is opt-in (`STOCKMESH_TLS_DIR`); with it unset nothing uses this module.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tonic::Status;

/// The identities `stockmesh certs` issues certificates for.
pub const MESH_IDENTITIES: [&str; 5] = ["auth", "products", "inventory", "orders", "gateway"];

/// Prefix of the URI SAN naming a mesh identity.
pub const SPIFFE_PREFIX: &str = "spiffe://stockmesh/";

/// How often, at most, the served certificate's files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why TLS material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `<dir>/ca.crt`.
pub fn ca_path(dir: &Path) -> PathBuf {
    dir.join("ca.crt")
}

/// `<dir>/<name>/tls.crt` and `<dir>/<name>/tls.key`.
pub fn identity_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(name);
    (d.join("tls.crt"), d.join("tls.key"))
}

/// A development CA able to issue more certificates (what [`generate`] returns).
pub type DevCa = Issuer<'static, KeyPair>;

/// A development CA in `dir` plus one certificate per name of `identities` (usually
/// [`MESH_IDENTITIES`]). Overwrites what is there. Returns the CA as an issuer (its key is
/// not written: a development CA issues once, or in tests, again for rotation).
pub fn generate(dir: &Path, identities: &[&str]) -> Result<DevCa, TlsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // A name of its own per CA: a certificate of another development CA is then
    // refused as from an unknown CA, not as a bad signature under a namesake.
    let serial = uuid::Uuid::new_v4().simple().to_string();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("stockmesh development CA {}", &serial[..8]),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_file = ca_path(dir);
    std::fs::write(&ca_file, ca_cert.pem()).map_err(io_err(&ca_file))?;
    let issuer = Issuer::new(ca, ca_key);
    for name in identities {
        issue(dir, &issuer, name)?;
    }
    Ok(issuer)
}

/// Issues (or re-issues: rotation) `name`'s certificate under the CA at `dir`, whose key is
/// not kept on disk — so this is for [`generate`] and tests holding the issuer.
pub fn issue(dir: &Path, issuer: &Issuer<'_, KeyPair>, name: &str) -> Result<(), TlsError> {
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        name.to_string(),
        format!("{name}-headless.stockmesh.svc.cluster.local"),
        format!("{name}.stockmesh.svc.cluster.local"),
    ])?;
    params.distinguished_name.push(DnType::CommonName, name);
    for ip in [
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ] {
        params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    params.subject_alt_names.push(SanType::URI(
        format!("{SPIFFE_PREFIX}{name}").as_str().try_into()?,
    ));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let (crt, key_file) = identity_paths(dir, name);
    if let Some(parent) = crt.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    // Each file replaced atomically (a reader sees the old file or the new one, never a
    // half-written one), the key readable by its owner only. A reader that picks up the new
    // key with the old certificate gets a mismatched pair, which [`CertifiedKey::from_der`]
    // refuses, so [`ReloadingCert`] keeps the old pair and tries again at its next check.
    write_atomic(&key_file, key.serialize_pem().as_bytes(), true)?;
    write_atomic(&crt, cert.pem().as_bytes(), false)?;
    Ok(())
}

/// Writes `path` through a temporary file in the same directory and a rename; `private`
/// makes it mode 0600 (on Unix) from the start.
fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no certificate".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn roots(dir: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(&ca_path(dir))? {
        store.add(cert)?;
    }
    Ok(Arc::new(store))
}

fn certified_key(crt: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    Ok(CertifiedKey::from_der(
        load_certs(crt)?,
        load_key(key)?,
        &provider(),
    )?)
}

/// What tells a changed file: mtime, length and (on Unix) inode — an atomic replace or a
/// Kubernetes Secret update (a symlink swap) changes the inode even when a coarse mtime
/// does not move.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// The certificate a server or client presents, re-read from disk when `tls.crt` or
/// `tls.key` changes (checked at most every [`RELOAD_CHECK`], on a handshake). A broken or
/// mismatched new pair keeps the last good one in service (and is retried at the next
/// check).
#[derive(Debug)]
pub struct ReloadingCert {
    crt: PathBuf,
    key: PathBuf,
    name: String,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Stamp, Stamp),
    checked: Instant,
}

impl ReloadingCert {
    /// Loads `name`'s pair from `dir`; fails when it cannot be loaded now.
    pub fn new(dir: &Path, name: &str) -> Result<Self, TlsError> {
        let (crt, key) = identity_paths(dir, name);
        Self::from_files(&crt, &key, name)
    }

    /// Loads the pair at `crt` and `key` (PEM; `name` is for logs).
    pub fn from_files(crt: &Path, key: &Path, name: &str) -> Result<Self, TlsError> {
        let stamp = (stamp(crt), stamp(key));
        let loaded = Loaded {
            key: Arc::new(certified_key(crt, key)?),
            stamp,
            checked: Instant::now(),
        };
        Ok(Self {
            crt: crt.to_path_buf(),
            key: key.to_path_buf(),
            name: name.to_string(),
            state: Mutex::new(loaded),
        })
    }

    /// The pair to present now (reloading it first when due and changed).
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamp = (stamp(&self.crt), stamp(&self.key));
            if stamp != state.stamp {
                match certified_key(&self.crt, &self.key) {
                    Ok(k) => {
                        tracing::info!(identity = %self.name, "TLS certificate reloaded");
                        state.key = Arc::new(k);
                        state.stamp = stamp;
                    }
                    Err(e) => {
                        tracing::warn!(identity = %self.name, error = %e, "TLS certificate reload failed; keeping the previous one")
                    }
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Server side: presents `name`'s (reloading) certificate and requires a client
/// certificate that chains to `<dir>/ca.crt`. ALPN h2 (gRPC).
pub fn server_config(dir: &Path, name: &str) -> Result<ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(dir)?, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ReloadingCert::new(dir, name)?));
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No session resumption: a resumed session skips the certificates, so the peer would
    // keep the identity (and certificate) of its first connection past a rotation. Mesh
    // connections are long-lived HTTP/2, so a full handshake per connection costs little.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Client side: trusts only `<dir>/ca.crt`, accepts only a server certificate naming
/// `server` (`spiffe://stockmesh/<server>`), and presents `name`'s certificate, re-read
/// when it changes on disk (new connections present the rotated one). `name = None`
/// presents none.
pub fn client_config(
    dir: &Path,
    name: Option<&str>,
    server: &str,
) -> Result<ClientConfig, TlsError> {
    let verifier = Arc::new(ServerVerifier {
        rule: ServerRule::Mesh {
            roots: roots(dir)?,
            expected: server.to_string(),
        },
        provider: provider(),
    });
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match name {
        Some(name) => builder.with_client_cert_resolver(Arc::new(ReloadingCert::new(dir, name)?)),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    // See `server_config`: every connection presents the current certificate.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// How a client judges the server's certificate (signatures are checked the same way for
/// both rules, by the provider's algorithms).
#[derive(Debug)]
struct ServerVerifier {
    rule: ServerRule,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum ServerRule {
    /// A mesh server: the chain ends at the CA (WebPKI, server-auth usage, validity) and
    /// the leaf names the expected identity. The hostname is not checked: the identity is
    /// what the caller means to reach, and an endpoint's address (a pod IP from discovery,
    /// 127.0.0.1 under `up`) says nothing about who answers there.
    Mesh {
        roots: Arc<RootCertStore>,
        expected: String,
    },
    /// Exactly this leaf and nothing else (see [`pinned_client_config`]).
    Pinned(CertificateDer<'static>),
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused =
            || rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        match &self.rule {
            ServerRule::Mesh { roots, expected } => {
                let cert = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    roots,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )?;
                match mesh_identity(end_entity.as_ref()) {
                    Some(id) if id == *expected => Ok(ServerCertVerified::assertion()),
                    _ => Err(refused()),
                }
            }
            ServerRule::Pinned(leaf) if end_entity.as_ref() == leaf.as_ref() => {
                Ok(ServerCertVerified::assertion())
            }
            ServerRule::Pinned(_) => Err(refused()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The gateway's browser TLS (`STOCKMESH_GATEWAY_TLS_CERT` / `_KEY`): presents that
/// pair, re-read when it changes, asks for no client certificate, ALPN h2 and http/1.1.
pub fn edge_server_config(crt: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ReloadingCert::from_files(
            crt,
            key,
            "gateway-edge",
        )?));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client that accepts exactly the leaf certificate in `crt` (PEM) and nothing else:
/// `stockmesh up` waiting for its own gateway's HTTPS port, whose certificate (a browser
/// one) need not chain to anything this process trusts nor name 127.0.0.1. ALPN h2.
pub fn pinned_client_config(crt: &Path) -> Result<ClientConfig, TlsError> {
    let leaf = load_certs(crt)?.swap_remove(0);
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier {
            rule: ServerRule::Pinned(leaf),
            provider,
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The mesh identity (`<name>` of a `spiffe://stockmesh/<name>` URI SAN) of a DER
/// certificate, if it has one.
pub fn mesh_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => {
            uri.strip_prefix(SPIFFE_PREFIX).map(str::to_string)
        }
        _ => None,
    })
}

/// For internal RPCs with mTLS on: PERMISSION_DENIED unless the peer's leaf certificate
/// names a mesh service. `peer` is the peer's chain (leaf first), `None` without one.
pub fn require_mesh_peer(peer: Option<&[CertificateDer<'_>]>) -> Result<String, Status> {
    let leaf = peer
        .and_then(|chain| chain.first())
        .ok_or_else(|| Status::permission_denied("internal RPC: no mesh client certificate"))?;
    match mesh_identity(leaf.as_ref()) {
        Some(id) if MESH_IDENTITIES.contains(&id.as_str()) => Ok(id),
        Some(id) => Err(Status::permission_denied(format!(
            "internal RPC: certificate identity {id:?} is not a mesh service"
        ))),
        None => Err(Status::permission_denied(
            "internal RPC: client certificate has no mesh identity (spiffe://stockmesh/<service>)",
        )),
    }
}

/// What a service's server needs with mTLS on (from [`crate::Config::mesh_tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTls {
    /// `STOCKMESH_TLS_DIR`.
    pub dir: PathBuf,
    /// Address the plaintext health ports bind to (`STOCKMESH_BIND`).
    pub bind: std::net::IpAddr,
    /// Plaintext health ports (`STOCKMESH_<SVC>_HEALTH_PORT`) of the services that have one.
    pub health_ports: Vec<(crate::Target, u16)>,
}

impl MeshTls {
    pub fn health_port(&self, target: crate::Target) -> Option<u16> {
        self.health_ports
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, p)| *p)
    }
}

/// Request extension put on every request by a server running mTLS
/// ([`crate::server::GrpcServer`]): internal RPCs must see a mesh client certificate.
#[derive(Debug, Clone, Copy)]
pub struct MeshPeerRequired;

/// The check internal RPCs make after the caller's token: with mTLS on (the server marked
/// the request [`MeshPeerRequired`]), PERMISSION_DENIED unless the connection's client
/// certificate names a mesh service; with mTLS off, `Ok` — the token alone decides, as
/// before. Fails closed: a marked request without peer certificates is refused.
pub fn require_mesh_caller<T>(request: &tonic::Request<T>) -> Result<(), Status> {
    if request.extensions().get::<MeshPeerRequired>().is_none() {
        return Ok(());
    }
    let certs = request.peer_certs();
    require_mesh_peer(certs.as_deref().map(Vec::as_slice)).map(|_| ())
}

#[cfg(test)]
mod tests;
