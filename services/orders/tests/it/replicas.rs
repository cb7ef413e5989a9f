//! Scale-out: two orders replicas (and two inventory replicas) over the same databases,
//! reconciler and sweeper running in each, and a wave of due orders. Every order must be
//! worked on by exactly one replica, counted at the inventory calls the reconcilers make
//! (each replica reaches inventory through its own counting proxy), and the books must
//! agree afterwards. Also the throughput side: a wave of 5,000 due orders drains (the
//! speed goal itself is measured by `benches/reconcile.rs`, not asserted here).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stockmesh::Target;
use stockmesh::proto::inventory::v1 as inv;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use stockmesh::server::GrpcServer;
use stockmesh::testing::{Backend, TestMesh, bind};
use stockmesh_orders::entity::order::Status;
use stockmesh_orders::orders::RESERVATION_EXPIRED;
use tonic::transport::Channel;
use tonic::{Request, Response, Status as RpcStatus};

use crate::staging::{Held, Planned, count, orders_db, plan, stage_orders, stage_reservations};
use crate::support::{Env, InventoryRoute, eventually};

/// Bound on waiting for background work; generous, the point is correctness.
const CONVERGE: Duration = Duration::from_secs(120);

/// One reservation call a reconciler made to inventory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Call {
    /// Which orders replica made it.
    replica: usize,
    method: &'static str,
    reservation_id: String,
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// Inventory as one orders replica sees it: every call passed on, the reservation calls
/// recorded first.
#[derive(Clone)]
struct CountingProxy {
    inner: InventoryServiceClient<Channel>,
    replica: usize,
    calls: Calls,
}

/// The same request, with the caller's credentials (the orders service's token) only.
fn pass_on<T>(req: Request<T>) -> Request<T> {
    let auth = req.metadata().get("authorization").cloned();
    let mut out = Request::new(req.into_inner());
    if let Some(auth) = auth {
        out.metadata_mut().insert("authorization", auth);
    }
    out
}

impl CountingProxy {
    fn record(&self, method: &'static str, reservation_id: &str) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Call {
                replica: self.replica,
                method,
                reservation_id: reservation_id.to_string(),
            });
    }
}

macro_rules! proxy {
    (
        counted { $($counted:ident($creq:ident) -> $cresp:ident;)* }
        passed { $($method:ident($req:ident) -> $resp:ident;)* }
    ) => {
        #[tonic::async_trait]
        impl InventoryService for CountingProxy {
            type WatchStockStream = tonic::codec::Streaming<inv::WatchStockResponse>;

            async fn watch_stock(
                &self,
                req: Request<inv::WatchStockRequest>,
            ) -> Result<Response<Self::WatchStockStream>, RpcStatus> {
                self.inner.clone().watch_stock(pass_on(req)).await
            }

            $(
                async fn $counted(
                    &self,
                    req: Request<inv::$creq>,
                ) -> Result<Response<inv::$cresp>, RpcStatus> {
                    self.record(stringify!($counted), &req.get_ref().reservation_id);
                    self.inner.clone().$counted(pass_on(req)).await
                }
            )*
            $(
                async fn $method(
                    &self,
                    req: Request<inv::$req>,
                ) -> Result<Response<inv::$resp>, RpcStatus> {
                    self.inner.clone().$method(pass_on(req)).await
                }
            )*
        }
    };
}

proxy! {
    counted {
        reserve(ReserveRequest) -> ReserveResponse;
        commit_reservation(CommitReservationRequest) -> CommitReservationResponse;
        release_reservation(ReleaseReservationRequest) -> ReleaseReservationResponse;
        get_reservation(GetReservationRequest) -> GetReservationResponse;
    }
    passed {
        create_warehouse(CreateWarehouseRequest) -> CreateWarehouseResponse;
        get_warehouse(GetWarehouseRequest) -> GetWarehouseResponse;
        list_warehouses(ListWarehousesRequest) -> ListWarehousesResponse;
        update_warehouse(UpdateWarehouseRequest) -> UpdateWarehouseResponse;
        get_stock(GetStockRequest) -> GetStockResponse;
        restock(RestockRequest) -> RestockResponse;
        adjust_stock(AdjustStockRequest) -> AdjustStockResponse;
        record_measurement(RecordMeasurementRequest) -> RecordMeasurementResponse;
        list_measurements(ListMeasurementsRequest) -> ListMeasurementsResponse;
        set_low_stock_threshold(SetLowStockThresholdRequest) -> SetLowStockThresholdResponse;
        get_stock_report(GetStockReportRequest) -> GetStockReportResponse;
    }
}

/// A counting proxy for orders replica `replica` in front of the inventory it is given.
fn counting_route(replica: usize, calls: Calls) -> InventoryRoute {
    Box::new(move |inventory, shutdown| {
        Box::pin(async move {
            let proxy = CountingProxy {
                inner: InventoryServiceClient::new(TestMesh::channel(inventory).await),
                replica,
                calls,
            };
            let (listener, addr) = bind().await;
            let (server, _health) = GrpcServer::new("stockmesh.test.CountingProxy").await;
            tokio::spawn(
                server
                    .add_service(InventoryServiceServer::new(proxy))
                    .serve(listener, shutdown, Duration::from_millis(100)),
            );
            addr
        })
    })
}

/// Per (method, reservation id): how many calls, and by which replicas.
fn tally(calls: &[Call]) -> HashMap<(&'static str, String), Vec<usize>> {
    let mut by: HashMap<(&'static str, String), Vec<usize>> = HashMap::new();
    for c in calls {
        by.entry((c.method, c.reservation_id.clone()))
            .or_default()
            .push(c.replica);
    }
    by
}

pub async fn two_replicas_reconcile_each_due_order_exactly_once(backend: Backend) {
    let calls: Calls = Arc::new(Mutex::new(Vec::new()));
    let mut env = Env::start_routed(
        backend,
        |c| {
            c.orders.reconcile_interval_ms = 50;
            c.orders.reconcile_after_secs = 1;
            c.inventory.reservation_sweep_ms = 50;
        },
        Some(counting_route(0, calls.clone())),
    )
    .await;
    // Replica 2 of inventory (a second sweeper on the same database), and replica 2 of
    // orders (a second reconciler) reaching it through its own counting proxy.
    let inventory2 = env
        .mesh
        .start(Target::Inventory, stockmesh_inventory::serve)
        .await;
    let via = counting_route(1, calls.clone())(inventory2.addr, env.mesh.shutdown.child()).await;
    env.mesh
        .config
        .set_upstream_addrs(Target::Inventory, vec![format!("http://{via}")]);
    let _orders2 = env
        .mesh
        .start(Target::Orders, stockmesh_orders::serve)
        .await;

    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 10_000).await;

    // The wave: reservations past their expiry, which both sweepers expire; then the
    // orders holding them become due together: PENDING ones (expiry) and CANCELLING ones
    // whose cancellation was interrupted (unfinished work).
    let expiring = plan(300, 2);
    let cancelling = plan(40, 1);
    let everything: Vec<Planned> = expiring.iter().chain(&cancelling).cloned().collect();
    // (Not checked right after staging: the 50 ms sweepers may already be expiring them.)
    stage_reservations(&env, &everything, &widget, &w, 1, Held::DueToExpire).await;
    eventually(
        CONVERGE,
        "the two sweepers to expire the staged reservations",
        || async { (env.stock(&widget).await.total_reserved == 0).then_some(()) },
    )
    .await;
    assert_eq!(env.stock(&widget).await.total_on_hand, 10_000);
    calls.lock().unwrap_or_else(|p| p.into_inner()).clear();

    stage_orders(&env, &expiring, Status::Pending, &widget, &w, 1).await;
    stage_orders(&env, &cancelling, Status::Cancelling, &widget, &w, 1).await;
    let db = orders_db(&env).await;
    eventually(
        CONVERGE,
        "the reconcilers to end every due order",
        || async { (count(&db, &[Status::Pending, Status::Cancelling]).await == 0).then_some(()) },
    )
    .await;
    assert_eq!(count(&db, &[Status::Cancelled]).await, 340);

    let calls = calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let by = tally(&calls);
    let mut per_replica = [0usize; 2];
    // A PENDING order is looked at once: one GetReservation per line, by one replica;
    // its lines are EXPIRED already, so nothing is released.
    for order in &expiring {
        let (l0, l1) = (&order.reservation_ids[0], &order.reservation_ids[1]);
        let got = by.get(&("get_reservation", l0.clone()));
        assert_eq!(
            got.map(Vec::len),
            Some(1),
            "order {} looked at once: {got:?}",
            order.id
        );
        let replica = got.map_or(0, |r| r[0]);
        per_replica[replica] += 1;
        assert_eq!(
            by.get(&("get_reservation", l1.clone())),
            Some(&vec![replica]),
            "line {l1} looked at once, by the same replica"
        );
        for line in [l0, l1] {
            assert!(!by.contains_key(&("release_reservation", line.clone())));
        }
    }
    // An interrupted cancellation is finished once.
    for order in &cancelling {
        let got = by.get(&("release_reservation", order.reservation_ids[0].clone()));
        assert_eq!(
            got.map(Vec::len),
            Some(1),
            "order {} finished once",
            order.id
        );
        per_replica[got.map_or(0, |r| r[0])] += 1;
    }
    assert_eq!(
        calls.len(),
        300 * 2 + 40,
        "no other inventory call was made"
    );
    eprintln!("orders handled per replica: {per_replica:?}");
    assert!(
        per_replica.iter().all(|n| *n > 0),
        "both replicas took part: {per_replica:?}"
    );

    let sample = env
        .get(&env.operator.token, &expiring[0].id)
        .await
        .unwrap_or_else(|s| panic!("get order: {s:?}"));
    assert_eq!(sample.cancel_reason, RESERVATION_EXPIRED);
    let stock = env.stock(&widget).await;
    assert_eq!((stock.total_on_hand, stock.total_reserved), (10_000, 0));
    env.assert_books_balance().await;
    let _ = db.close().await;
}

pub async fn a_wave_of_5000_due_orders_is_reconciled(backend: Backend) {
    const WAVE: usize = 5_000;
    let env = Env::start_with(backend, |c| {
        c.orders.reconcile_interval_ms = 200;
        c.inventory.reservation_sweep_ms = 200;
    })
    .await;
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, WAVE as i64).await;

    // Reservations and orders become due together, as after a burst of orders nobody
    // completed: the sweeper and the reconciler race, and the books must agree in the end.
    let wave = plan(WAVE, 1);
    stage_reservations(&env, &wave, &widget, &w, 1, Held::DueToExpire).await;
    stage_orders(&env, &wave, Status::Pending, &widget, &w, 1).await;
    let db = orders_db(&env).await;
    let started = std::time::Instant::now();
    eventually(
        CONVERGE,
        "the reconciler to cancel the whole wave",
        || async { (count(&db, &[Status::Pending, Status::Cancelling]).await == 0).then_some(()) },
    )
    .await;
    eprintln!(
        "{WAVE} due orders reconciled in {:.1} s ({backend:?})",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(count(&db, &[Status::Cancelled]).await, WAVE as u64);
    let stock = env.stock(&widget).await;
    assert_eq!(
        (stock.total_on_hand, stock.total_reserved),
        (WAVE as i64, 0)
    );
    env.assert_books_balance().await;
    let _ = db.close().await;
}
