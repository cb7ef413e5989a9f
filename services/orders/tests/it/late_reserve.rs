//! A Reserve that lands after its line was released: inventory answers with the RELEASED
//! tombstone, and the saga must take that as a failed line, not as a reservation.
//!
//! Orders reaches inventory through a proxy that, once, releases line 1's reservation id
//! right before forwarding its Reserve: exactly what inventory sees when a saga's Reserve
//! times out, the compensating Release arrives first, and the Reserve lands late.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::ReservationStatus;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use stockmesh::proto::orders::v1 as pb;
use stockmesh::server::GrpcServer;
use stockmesh::testing::{Backend, TestMesh, bind};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::support::{Env, InventoryRoute, expect_code, status_of};

/// Inventory as orders sees it, with line 1's Reserve overtaken by its Release once.
#[derive(Clone)]
struct LateReserveProxy {
    inner: InventoryServiceClient<Channel>,
    armed: Arc<AtomicBool>,
    /// Reservation ids of every Reserve that came through.
    seen: Arc<Mutex<Vec<String>>>,
}

/// `msg` with the caller's credentials (the orders service's token), nothing else.
fn with_auth<T>(msg: T, auth: Option<MetadataValue<tonic::metadata::Ascii>>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(auth) = auth {
        req.metadata_mut().insert("authorization", auth);
    }
    req
}

fn pass_on<T>(req: Request<T>) -> Request<T> {
    let auth = req.metadata().get("authorization").cloned();
    with_auth(req.into_inner(), auth)
}

impl LateReserveProxy {
    async fn late_reserve(
        &self,
        req: Request<inv::ReserveRequest>,
    ) -> Result<Response<inv::ReserveResponse>, Status> {
        let auth = req.metadata().get("authorization").cloned();
        let msg = req.into_inner();
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg.reservation_id.clone());
        if msg.reservation_id.ends_with("-1") && self.armed.swap(false, Ordering::SeqCst) {
            self.inner
                .clone()
                .release_reservation(with_auth(
                    inv::ReleaseReservationRequest {
                        reservation_id: msg.reservation_id.clone(),
                    },
                    auth.clone(),
                ))
                .await?;
        }
        self.inner.clone().reserve(with_auth(msg, auth)).await
    }
}

macro_rules! proxy {
    ($($method:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl InventoryService for LateReserveProxy {
            type WatchStockStream = tonic::codec::Streaming<inv::WatchStockResponse>;

            async fn watch_stock(
                &self,
                req: Request<inv::WatchStockRequest>,
            ) -> Result<Response<Self::WatchStockStream>, Status> {
                self.inner.clone().watch_stock(pass_on(req)).await
            }

            async fn reserve(
                &self,
                req: Request<inv::ReserveRequest>,
            ) -> Result<Response<inv::ReserveResponse>, Status> {
                self.late_reserve(req).await
            }
            $(
                async fn $method(
                    &self,
                    req: Request<inv::$req>,
                ) -> Result<Response<inv::$resp>, Status> {
                    self.inner.clone().$method(pass_on(req)).await
                }
            )*
        }
    };
}

proxy! {
    create_warehouse(CreateWarehouseRequest) -> CreateWarehouseResponse;
    get_warehouse(GetWarehouseRequest) -> GetWarehouseResponse;
    list_warehouses(ListWarehousesRequest) -> ListWarehousesResponse;
    update_warehouse(UpdateWarehouseRequest) -> UpdateWarehouseResponse;
    get_stock(GetStockRequest) -> GetStockResponse;
    restock(RestockRequest) -> RestockResponse;
    adjust_stock(AdjustStockRequest) -> AdjustStockResponse;
    commit_reservation(CommitReservationRequest) -> CommitReservationResponse;
    release_reservation(ReleaseReservationRequest) -> ReleaseReservationResponse;
    get_reservation(GetReservationRequest) -> GetReservationResponse;
    record_measurement(RecordMeasurementRequest) -> RecordMeasurementResponse;
    list_measurements(ListMeasurementsRequest) -> ListMeasurementsResponse;
    set_low_stock_threshold(SetLowStockThresholdRequest) -> SetLowStockThresholdResponse;
    get_stock_report(GetStockReportRequest) -> GetStockReportResponse;
}

fn route(proxy_state: (Arc<AtomicBool>, Arc<Mutex<Vec<String>>>)) -> InventoryRoute {
    Box::new(move |inventory, shutdown| {
        Box::pin(async move {
            let (armed, seen) = proxy_state;
            let proxy = LateReserveProxy {
                inner: InventoryServiceClient::new(TestMesh::channel(inventory).await),
                armed,
                seen,
            };
            let (listener, addr) = bind().await;
            let (server, _health) = GrpcServer::new("stockmesh.test.LateReserveProxy").await;
            tokio::spawn(
                server
                    .add_service(InventoryServiceServer::new(proxy))
                    .serve(listener, shutdown, Duration::from_millis(100)),
            );
            addr
        })
    })
}

pub async fn a_reserve_answered_released_fails_its_order_and_holds_nothing(backend: Backend) {
    let armed = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let env = Env::start_routed(backend, |_| {}, Some(route((armed.clone(), seen.clone())))).await;
    let widget = env.product("widget", 100, "USD").await;
    let gadget = env.product("gadget", 250, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10).await;
    env.restock(&gadget, &w, 10).await;

    let msg = expect_code(
        env.create(&env.customer.token, "late", &[(&widget, 2), (&gadget, 3)])
            .await,
        Code::Aborted,
    );
    assert!(!armed.load(Ordering::SeqCst), "the proxy intervened");
    assert!(
        msg.contains("items[1]") && msg.contains("answered RELEASED"),
        "{msg}"
    );
    let ids = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(ids.len(), 2, "{ids:?}");

    // Line 0 was reserved, then released by the rollback; line 1 is the tombstone the
    // late Reserve got back. Nothing is held.
    let line0 = env.reservation(&ids[0]).await.unwrap();
    assert_eq!(
        line0.status,
        ReservationStatus::Released as i32,
        "{line0:?}"
    );
    assert_eq!(line0.quantity, 2);
    let line1 = env.reservation(&ids[1]).await.unwrap();
    assert_eq!(
        line1.status,
        ReservationStatus::Released as i32,
        "{line1:?}"
    );
    assert_eq!((line1.quantity, line1.product_id.as_str()), (0, ""));
    for product in [&widget, &gadget] {
        let stock = env.stock(product).await;
        assert_eq!((stock.total_on_hand, stock.total_reserved), (10, 0));
    }
    // The rolled-back order is gone, so the same request id may be tried again.
    assert!(
        env.all_orders()
            .await
            .iter()
            .all(|o| o.request_id != "late")
    );
    let order = env
        .create(&env.customer.token, "late", &[(&widget, 2), (&gadget, 3)])
        .await
        .unwrap();
    assert_eq!(status_of(&order), pb::OrderStatus::Pending);
    assert_eq!(env.stock(&widget).await.total_reserved, 2);
    assert_eq!(env.stock(&gadget).await.total_reserved, 3);
    env.assert_books_balance().await;
}
