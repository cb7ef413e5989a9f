//! A controllable upstream for the fault drills: a real gRPC `ProductService` on loopback
//! whose `GetProduct` (a read, safe to retry) and `CreateProduct` (a write without an
//! idempotency key, never retried) answer as the test scripts them — OK, a given status,
//! or after a delay — and count every call that reaches them. Stopping and restarting it
//! on the same port plays "the upstream died and came back". A script made with
//! [`Script::with_health`] also serves `grpc.health.v1` with a status the test sets (the
//! default fake has none, as an upstream without health checking).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use stockmesh::proto::products::v1 as pb;
use stockmesh::proto::products::v1::product_service_server::ProductServiceServer;
use stockmesh::resilience::deadline::parse_grpc_timeout;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Fail(Code),
    Delay(Duration),
}

#[derive(Debug)]
struct Inner {
    mode: Mutex<Mode>,
    /// Calls that fail with UNAVAILABLE before `mode` applies.
    fail_next: AtomicU32,
    gets: AtomicUsize,
    creates: AtomicUsize,
    last_timeout: Mutex<Option<Duration>>,
    /// Health reported for the products service, when the fake serves health at all.
    health: Option<tonic_health::server::HealthReporter>,
}

/// The fake's behaviour and counters, shared by the test and every incarnation of the
/// server.
#[derive(Debug, Clone)]
pub struct Script {
    inner: Arc<Inner>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                mode: Mutex::new(Mode::Ok),
                fail_next: AtomicU32::new(0),
                gets: AtomicUsize::new(0),
                creates: AtomicUsize::new(0),
                last_timeout: Mutex::new(None),
                health: None,
            }),
        }
    }
}

/// The service name whose health the fake reports (the client watches this one).
pub const HEALTH_NAME: &str = "stockmesh.products.v1.ProductService";

impl Script {
    /// A script whose servers also serve `grpc.health.v1`, SERVING to begin with.
    pub async fn with_health() -> Self {
        let reporter = tonic_health::server::HealthReporter::new();
        reporter
            .set_service_status(HEALTH_NAME, tonic_health::ServingStatus::Serving)
            .await;
        Self {
            inner: Arc::new(Inner {
                health: Some(reporter),
                mode: Mutex::new(Mode::Ok),
                fail_next: AtomicU32::new(0),
                gets: AtomicUsize::new(0),
                creates: AtomicUsize::new(0),
                last_timeout: Mutex::new(None),
            }),
        }
    }

    /// Sets the health the fake reports (a script made with [`Script::with_health`]).
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        let reporter = self.inner.health.as_ref().unwrap();
        reporter.set_service_status(HEALTH_NAME, status).await;
    }

    pub fn set(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    /// The next `n` calls fail with UNAVAILABLE, then `mode` applies again.
    pub fn fail_next(&self, n: u32) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }

    /// `GetProduct` calls that reached the server.
    pub fn gets(&self) -> usize {
        self.inner.gets.load(Ordering::SeqCst)
    }

    /// `CreateProduct` calls that reached the server.
    pub fn creates(&self) -> usize {
        self.inner.creates.load(Ordering::SeqCst)
    }

    /// The `grpc-timeout` of the last call, as the server received it.
    pub fn last_timeout(&self) -> Option<Duration> {
        *self.inner.last_timeout.lock().unwrap()
    }

    async fn answer<Q, T>(
        &self,
        request: &Request<Q>,
        ok: impl FnOnce() -> T,
    ) -> Result<Response<T>, Status> {
        *self.inner.last_timeout.lock().unwrap() = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let take = self
            .inner
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            return Err(Status::unavailable("scripted: unavailable"));
        }
        let mode = *self.inner.mode.lock().unwrap();
        match mode {
            Mode::Ok => Ok(Response::new(ok())),
            Mode::Fail(code) => Err(Status::new(code, format!("scripted: {code:?}"))),
            Mode::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(Response::new(ok()))
            }
        }
    }
}

/// The fake `ProductService`.
#[derive(Debug, Clone)]
pub struct FakeProducts {
    script: Script,
}

fn product(id: &str) -> pb::Product {
    pb::Product {
        id: id.to_string(),
        name: format!("product {id}"),
        ..Default::default()
    }
}

/// Implements `ProductService` for a type from its `get_product` and `create_product`;
/// every other RPC answers UNIMPLEMENTED.
#[macro_export]
macro_rules! product_service {
    ($ty:ty { $($methods:item)* }) => {
        #[tonic::async_trait]
        impl $crate::fake::pb::product_service_server::ProductService for $ty {
            $($methods)*

            async fn get_product_by_name(&self, _: tonic::Request<$crate::fake::pb::GetProductByNameRequest>) -> Result<tonic::Response<$crate::fake::pb::GetProductByNameResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn list_products(&self, _: tonic::Request<$crate::fake::pb::ListProductsRequest>) -> Result<tonic::Response<$crate::fake::pb::ListProductsResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn update_product(&self, _: tonic::Request<$crate::fake::pb::UpdateProductRequest>) -> Result<tonic::Response<$crate::fake::pb::UpdateProductResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn delete_product(&self, _: tonic::Request<$crate::fake::pb::DeleteProductRequest>) -> Result<tonic::Response<$crate::fake::pb::DeleteProductResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn batch_get_products(&self, _: tonic::Request<$crate::fake::pb::BatchGetProductsRequest>) -> Result<tonic::Response<$crate::fake::pb::BatchGetProductsResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn create_supplier(&self, _: tonic::Request<$crate::fake::pb::CreateSupplierRequest>) -> Result<tonic::Response<$crate::fake::pb::CreateSupplierResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn get_supplier(&self, _: tonic::Request<$crate::fake::pb::GetSupplierRequest>) -> Result<tonic::Response<$crate::fake::pb::GetSupplierResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn list_suppliers(&self, _: tonic::Request<$crate::fake::pb::ListSuppliersRequest>) -> Result<tonic::Response<$crate::fake::pb::ListSuppliersResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn update_supplier(&self, _: tonic::Request<$crate::fake::pb::UpdateSupplierRequest>) -> Result<tonic::Response<$crate::fake::pb::UpdateSupplierResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn delete_supplier(&self, _: tonic::Request<$crate::fake::pb::DeleteSupplierRequest>) -> Result<tonic::Response<$crate::fake::pb::DeleteSupplierResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn create_variable(&self, _: tonic::Request<$crate::fake::pb::CreateVariableRequest>) -> Result<tonic::Response<$crate::fake::pb::CreateVariableResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn get_variable(&self, _: tonic::Request<$crate::fake::pb::GetVariableRequest>) -> Result<tonic::Response<$crate::fake::pb::GetVariableResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
            async fn list_variables(&self, _: tonic::Request<$crate::fake::pb::ListVariablesRequest>) -> Result<tonic::Response<$crate::fake::pb::ListVariablesResponse>, tonic::Status> { Err(tonic::Status::unimplemented("fake")) }
        }
    };
}

crate::product_service!(FakeProducts {
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        self.script.inner.gets.fetch_add(1, Ordering::SeqCst);
        let id = request.get_ref().id.clone();
        self.script
            .answer(&request, || pb::GetProductResponse {
                product: Some(product(&id)),
            })
            .await
    }

    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        self.script.inner.creates.fetch_add(1, Ordering::SeqCst);
        let name = request.get_ref().name.clone();
        self.script
            .answer(&request, || pb::CreateProductResponse {
                product: Some(product(&name)),
            })
            .await
    }
});

/// A [`FakeProducts`] server on loopback that can be stopped and started again on the
/// same address.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub script: Script,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl FakeServer {
    /// Starts a fake on an ephemeral port. The listener is bound before this returns, so
    /// callers can connect at once.
    pub async fn start(script: Script) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), script).await
    }

    /// Starts a fake on `addr` (e.g. another loopback address with a port chosen by the
    /// test, for several replicas behind one DNS name).
    pub async fn start_at(addr: SocketAddr, script: Script) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = Self {
            addr,
            script,
            running: None,
        };
        server.serve(listener);
        server
    }

    /// `http://<addr>`, as the client builder takes it.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let svc = ProductServiceServer::new(FakeProducts {
            script: self.script.clone(),
        });
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        // Health Watch streams end with this incarnation, or a graceful stop would wait
        // for them.
        let watches_end = tokio_util::sync::CancellationToken::new();
        let health = self
            .script
            .inner
            .health
            .clone()
            .map(|reporter| stockmesh::health::ending_watches(reporter, watches_end.clone()));
        let task = tokio::spawn(async move {
            let _ = Server::builder()
                .add_optional_service(health)
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                    watches_end.cancel();
                })
                .await;
        });
        self.running = Some((tx, task));
    }

    /// Stops the server: it closes its connections and refuses new ones until
    /// [`FakeServer::restart`].
    pub async fn stop(&mut self) {
        if let Some((tx, mut task)) = self.running.take() {
            let _ = tx.send(());
            // Graceful stop waits for calls in flight; a scripted delay must not hang it.
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Serves again on the same address.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}
