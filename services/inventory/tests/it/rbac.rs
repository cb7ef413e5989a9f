//! The access matrix of API.md: every InventoryService RPC × {no token, CUSTOMER,
//! OPERATOR, ADMIN, service identity}. Allowed callers make a valid request and must
//! succeed; refused ones get UNAUTHENTICATED (no token) or PERMISSION_DENIED.

use prost_types::FieldMask;
use stockmesh::proto::inventory::v1 as pb;
use stockmesh::testing::{Backend, with_token};
use tonic::{Code, Request, Status};

use crate::common::{Env, reserve_req};

stockmesh::db_tests!(every_rpc_admits_exactly_the_callers_api_md_names);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Anonymous,
    Customer,
    Operator,
    Admin,
    Service,
}

const EVERYONE: [Who; 5] = [
    Who::Anonymous,
    Who::Customer,
    Who::Operator,
    Who::Admin,
    Who::Service,
];

#[derive(Debug, Clone, Copy)]
enum Access {
    Public,
    SignedIn,
    Staff,
    Internal,
    InternalOrStaff,
}

impl Access {
    /// The code `who` gets: OK when admitted.
    fn expected(self, who: Who) -> Code {
        use Who::*;
        let admitted = match self {
            Access::Public => true,
            Access::SignedIn => who != Anonymous,
            Access::Staff => matches!(who, Operator | Admin),
            Access::Internal => matches!(who, Service | Admin),
            Access::InternalOrStaff => matches!(who, Service | Operator | Admin),
        };
        match (admitted, who) {
            (true, _) => Code::Ok,
            (false, Anonymous) => Code::Unauthenticated,
            (false, _) => Code::PermissionDenied,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    CreateWarehouse,
    GetWarehouse,
    ListWarehouses,
    UpdateWarehouse,
    GetStock,
    Restock,
    AdjustStock,
    Reserve,
    CommitReservation,
    ReleaseReservation,
    GetReservation,
    RecordMeasurement,
    ListMeasurements,
}

const MATRIX: [(Rpc, Access); 13] = [
    (Rpc::CreateWarehouse, Access::Staff),
    (Rpc::GetWarehouse, Access::SignedIn),
    (Rpc::ListWarehouses, Access::SignedIn),
    (Rpc::UpdateWarehouse, Access::Staff),
    (Rpc::GetStock, Access::Public),
    (Rpc::Restock, Access::Staff),
    (Rpc::AdjustStock, Access::Staff),
    (Rpc::Reserve, Access::Internal),
    (Rpc::CommitReservation, Access::Internal),
    (Rpc::ReleaseReservation, Access::Internal),
    (Rpc::GetReservation, Access::InternalOrStaff),
    (Rpc::RecordMeasurement, Access::Staff),
    (Rpc::ListMeasurements, Access::SignedIn),
];

struct Fixture {
    product: String,
    warehouse: String,
    variable: String,
}

fn token(env: &Env, who: Who) -> Option<&str> {
    match who {
        Who::Anonymous => None,
        Who::Customer => Some(&env.customer),
        Who::Operator => Some(&env.operator),
        Who::Admin => Some(&env.admin),
        Who::Service => Some(&env.service),
    }
}

fn req<T>(msg: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(t) => with_token(msg, t),
        None => Request::new(msg),
    }
}

/// Makes a valid `rpc` call as `who`; ids are per caller so admitted calls succeed.
async fn call(env: &Env, f: &Fixture, rpc: Rpc, who: Who) -> Result<(), Status> {
    let mut inv = env.inv();
    let t = token(env, who);
    let tag = format!("{who:?}");
    match rpc {
        Rpc::CreateWarehouse => {
            let msg = pb::CreateWarehouseRequest {
                name: format!("rbac-{tag}"),
                address: String::new(),
                latitude: 1.0,
                longitude: 2.0,
                capacity: 10,
            };
            inv.create_warehouse(req(msg, t)).await.map(drop)
        }
        Rpc::GetWarehouse => {
            let msg = pb::GetWarehouseRequest {
                id: f.warehouse.clone(),
            };
            inv.get_warehouse(req(msg, t)).await.map(drop)
        }
        Rpc::ListWarehouses => {
            let msg = pb::ListWarehousesRequest::default();
            inv.list_warehouses(req(msg, t)).await.map(drop)
        }
        Rpc::UpdateWarehouse => {
            let msg = pb::UpdateWarehouseRequest {
                warehouse: Some(pb::Warehouse {
                    id: f.warehouse.clone(),
                    capacity: 5,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["capacity".into()],
                }),
            };
            inv.update_warehouse(req(msg, t)).await.map(drop)
        }
        Rpc::GetStock => {
            let msg = pb::GetStockRequest {
                product_id: f.product.clone(),
            };
            inv.get_stock(req(msg, t)).await.map(drop)
        }
        Rpc::Restock => {
            let msg = pb::RestockRequest {
                product_id: f.product.clone(),
                warehouse_id: f.warehouse.clone(),
                quantity: 1,
                request_id: format!("rbac-restock-{tag}"),
            };
            inv.restock(req(msg, t)).await.map(drop)
        }
        Rpc::AdjustStock => {
            let msg = pb::AdjustStockRequest {
                product_id: f.product.clone(),
                warehouse_id: f.warehouse.clone(),
                delta: 1,
                reason: "count correction".into(),
                request_id: format!("rbac-adjust-{tag}"),
            };
            inv.adjust_stock(req(msg, t)).await.map(drop)
        }
        Rpc::Reserve => {
            let msg = reserve_req(&format!("rbac-reserve-{tag}"), &f.product, 1);
            inv.reserve(req(msg, t)).await.map(drop)
        }
        Rpc::CommitReservation => {
            let msg = pb::CommitReservationRequest {
                reservation_id: format!("rbac-commit-{tag}"),
            };
            inv.commit_reservation(req(msg, t)).await.map(drop)
        }
        Rpc::ReleaseReservation => {
            let msg = pb::ReleaseReservationRequest {
                reservation_id: format!("rbac-release-{tag}"),
            };
            inv.release_reservation(req(msg, t)).await.map(drop)
        }
        Rpc::GetReservation => {
            let msg = pb::GetReservationRequest {
                reservation_id: format!("rbac-release-{tag}"),
            };
            inv.get_reservation(req(msg, t)).await.map(drop)
        }
        Rpc::RecordMeasurement => {
            let msg = pb::RecordMeasurementRequest {
                variable_id: f.variable.clone(),
                warehouse_id: f.warehouse.clone(),
                product_id: None,
                value: 1.5,
                measured_at: None,
            };
            inv.record_measurement(req(msg, t)).await.map(drop)
        }
        Rpc::ListMeasurements => {
            let msg = pb::ListMeasurementsRequest::default();
            inv.list_measurements(req(msg, t)).await.map(drop)
        }
    }
}

async fn every_rpc_admits_exactly_the_callers_api_md_names(backend: Backend) {
    let env = Env::start(backend).await;
    let fixture = Fixture {
        product: env.product("rbac").await,
        warehouse: env.warehouse("rbac-main", 0.0, 0.0).await,
        variable: env.variable("temperature").await,
    };
    env.restock(&fixture.product, &fixture.warehouse, 100).await;
    for who in EVERYONE {
        for prefix in ["rbac-commit", "rbac-release"] {
            env.reserve(reserve_req(
                &format!("{prefix}-{who:?}"),
                &fixture.product,
                1,
            ))
            .await
            .unwrap_or_else(|s| panic!("setup reserve: {s:?}"));
        }
    }

    let mut failures = Vec::new();
    for (rpc, access) in MATRIX {
        for who in EVERYONE {
            let got = match call(&env, &fixture, rpc, who).await {
                Ok(()) => Code::Ok,
                Err(s) => s.code(),
            };
            let want = access.expected(who);
            if got != want {
                failures.push(format!("{rpc:?} as {who:?}: want {want:?}, got {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "access matrix violations:\n{}",
        failures.join("\n")
    );
}
