//! The gRPC surface: thin handlers that authenticate and authorise the caller, decode the
//! request, call the domain module and encode the answer. Access rules (API.md):
//! warehouse reads and ListMeasurements need a signed-in caller; warehouse writes,
//! Restock, AdjustStock, SetLowStockThreshold and RecordMeasurement need OPERATOR or
//! ADMIN; GetStock and WatchStock are public;
//! Reserve, CommitReservation and ReleaseReservation are internal (service identities and
//! ADMIN); GetReservation is internal or OPERATOR+; GetStockReport is OPERATOR+. The caller is checked before the
//! request is validated, so an unauthorised caller learns nothing from error messages.
//!
//! Every handler whose call may have committed events tells the outbox relay
//! ([`Events::committed`]) once the domain returned.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use stockmesh::authn::{Caller, Role, Verifier};
use stockmesh::events::{Events, Topic};
use stockmesh::pagination::Page;
use stockmesh::proto::inventory::v1 as pb;
use stockmesh::proto::inventory::v1::inventory_service_server::InventoryService;
use stockmesh::proto::{from_timestamp, timestamp};
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::entity::stock_request::RequestKind;
use crate::entity::{measurement, reservation, warehouse};
use crate::error::Error;
use crate::measurements::{self, Filters, NewMeasurement};
use crate::reports;
use crate::reservations::{self, ReserveInput};
use crate::stock::{self, StockChange, StockView};
use crate::warehouses::{self, WarehouseFields};
use crate::{thresholds, watch};

/// The InventoryService implementation.
#[derive(Clone)]
pub struct InventoryApi {
    db: DatabaseConnection,
    verifier: Verifier,
    catalog: Arc<Catalog>,
    reservation_ttl: Duration,
    events: Events,
    /// `STOCKMESH_LOW_STOCK_THRESHOLD`, for products without their own.
    default_threshold: i64,
}

impl InventoryApi {
    pub fn new(
        db: DatabaseConnection,
        verifier: Verifier,
        catalog: Arc<Catalog>,
        reservation_ttl: Duration,
        events: Events,
        default_threshold: i64,
    ) -> Self {
        Self {
            db,
            verifier,
            catalog,
            reservation_ttl,
            events,
            default_threshold,
        }
    }

    /// Tells the relay that events may have committed; passes `result` through.
    fn committed<T>(&self, result: T) -> T {
        self.events.committed();
        result
    }

    async fn staff<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let caller = self.verifier.caller(req).await?;
        caller.require_staff()?;
        Ok(caller)
    }

    async fn service<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let caller = self.verifier.caller(req).await?;
        caller.require_service()?;
        stockmesh::tls::require_mesh_caller(req)?;
        Ok(caller)
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn create_warehouse(
        &self,
        request: Request<pb::CreateWarehouseRequest>,
    ) -> Result<Response<pb::CreateWarehouseResponse>, Status> {
        self.staff(&request).await?;
        let r = request.into_inner();
        let fields = WarehouseFields {
            name: r.name,
            address: r.address,
            latitude: r.latitude,
            longitude: r.longitude,
            capacity: r.capacity,
        };
        let w = warehouses::create(&self.db, fields).await?;
        Ok(Response::new(pb::CreateWarehouseResponse {
            warehouse: Some(warehouse_pb(w)),
        }))
    }

    async fn get_warehouse(
        &self,
        request: Request<pb::GetWarehouseRequest>,
    ) -> Result<Response<pb::GetWarehouseResponse>, Status> {
        self.verifier.caller(&request).await?;
        let w = warehouses::get(&self.db, &request.into_inner().id).await?;
        Ok(Response::new(pb::GetWarehouseResponse {
            warehouse: Some(warehouse_pb(w)),
        }))
    }

    async fn list_warehouses(
        &self,
        request: Request<pb::ListWarehousesRequest>,
    ) -> Result<Response<pb::ListWarehousesResponse>, Status> {
        self.verifier.caller(&request).await?;
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token, &[])?;
        let (rows, next_page_token) = warehouses::list(&self.db, &page).await?;
        Ok(Response::new(pb::ListWarehousesResponse {
            warehouses: rows.into_iter().map(warehouse_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_warehouse(
        &self,
        request: Request<pb::UpdateWarehouseRequest>,
    ) -> Result<Response<pb::UpdateWarehouseResponse>, Status> {
        self.staff(&request).await?;
        let r = request.into_inner();
        let w = r
            .warehouse
            .ok_or_else(|| Error::invalid("warehouse", "is required"))?;
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let fields = WarehouseFields {
            name: w.name,
            address: w.address,
            latitude: w.latitude,
            longitude: w.longitude,
            capacity: w.capacity,
        };
        let w = warehouses::update(&self.db, &w.id, fields, &mask).await?;
        Ok(Response::new(pb::UpdateWarehouseResponse {
            warehouse: Some(warehouse_pb(w)),
        }))
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        // Public, but a token that is present must be valid.
        self.verifier.optional_caller(&request).await?;
        let product_id = request.into_inner().product_id;
        stock::require_key("product_id", &product_id)?;
        let view = stock::get(&self.db, &product_id, self.default_threshold)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(pb::GetStockResponse {
            stock: Some(stock_pb(view)),
        }))
    }

    async fn restock(
        &self,
        request: Request<pb::RestockRequest>,
    ) -> Result<Response<pb::RestockResponse>, Status> {
        self.staff(&request).await?;
        let r = request.into_inner();
        let change = StockChange {
            kind: RequestKind::Restock,
            request_id: r.request_id,
            product_id: r.product_id,
            warehouse_id: r.warehouse_id,
            delta: r.quantity,
            reason: String::new(),
        };
        let view = stock::restock(&self.db, &self.catalog, change, self.default_threshold).await?;
        self.committed(());
        Ok(Response::new(pb::RestockResponse {
            stock: Some(stock_pb(view)),
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        self.staff(&request).await?;
        let r = request.into_inner();
        let change = StockChange {
            kind: RequestKind::Adjust,
            request_id: r.request_id,
            product_id: r.product_id,
            warehouse_id: r.warehouse_id,
            delta: r.delta,
            reason: r.reason,
        };
        let view = stock::adjust(&self.db, change, self.default_threshold).await?;
        self.committed(());
        Ok(Response::new(pb::AdjustStockResponse {
            stock: Some(stock_pb(view)),
        }))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        self.service(&request).await?;
        let r = request.into_inner();
        let input = ReserveInput {
            reservation_id: r.reservation_id,
            product_id: r.product_id,
            quantity: r.quantity,
            warehouse_id: r.warehouse_id,
            latitude: r.latitude,
            longitude: r.longitude,
        };
        let res = reservations::reserve(
            &self.db,
            self.reservation_ttl,
            input,
            self.default_threshold,
        )
        .await?;
        self.committed(());
        Ok(Response::new(pb::ReserveResponse {
            reservation: Some(reservation_pb(res)),
        }))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        self.service(&request).await?;
        let res = reservations::commit(&self.db, &request.into_inner().reservation_id).await?;
        self.committed(());
        Ok(Response::new(pb::CommitReservationResponse {
            reservation: Some(reservation_pb(res)),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        self.service(&request).await?;
        let res = reservations::release(&self.db, &request.into_inner().reservation_id).await?;
        self.committed(());
        Ok(Response::new(pb::ReleaseReservationResponse {
            reservation: Some(reservation_pb(res)),
        }))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        let caller = self.verifier.caller(&request).await?;
        caller.require(&[Role::Service, Role::Operator])?;
        stockmesh::tls::require_mesh_caller(&request)?;
        let res = reservations::get(&self.db, &request.into_inner().reservation_id).await?;
        Ok(Response::new(pb::GetReservationResponse {
            reservation: Some(reservation_pb(res)),
        }))
    }

    async fn record_measurement(
        &self,
        request: Request<pb::RecordMeasurementRequest>,
    ) -> Result<Response<pb::RecordMeasurementResponse>, Status> {
        self.staff(&request).await?;
        let r = request.into_inner();
        let measured_at = match &r.measured_at {
            None => None,
            Some(ts) => Some(
                from_timestamp(ts)
                    .ok_or_else(|| Error::invalid("measured_at", "is not a valid timestamp"))?,
            ),
        };
        let m = NewMeasurement {
            variable_id: r.variable_id,
            warehouse_id: r.warehouse_id,
            product_id: r.product_id,
            value: r.value,
            measured_at,
        };
        let m = measurements::record(&self.db, &self.catalog, m).await?;
        Ok(Response::new(pb::RecordMeasurementResponse {
            measurement: Some(measurement_pb(m)),
        }))
    }

    async fn list_measurements(
        &self,
        request: Request<pb::ListMeasurementsRequest>,
    ) -> Result<Response<pb::ListMeasurementsResponse>, Status> {
        self.verifier.caller(&request).await?;
        let r = request.into_inner();
        let filters = Filters {
            variable_id: r.variable_id,
            warehouse_id: r.warehouse_id,
            product_id: r.product_id,
        };
        let page = Page::parse(r.page_size, &r.page_token, &filters.fingerprint())?;
        let (rows, next_page_token) = measurements::list(&self.db, &filters, &page).await?;
        Ok(Response::new(pb::ListMeasurementsResponse {
            measurements: rows.into_iter().map(measurement_pb).collect(),
            next_page_token,
        }))
    }

    type WatchStockStream = watch::WatchStockStream;

    async fn watch_stock(
        &self,
        request: Request<pb::WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        // Public, but a token that is present must be valid.
        self.verifier.optional_caller(&request).await?;
        let r = request.into_inner();
        let product_ids = watch::validate(r.product_ids)?;
        let stream = watch::open(
            self.db.clone(),
            &self.events.feed(Topic::StockChanged),
            product_ids,
            &r.after_event_id,
            self.default_threshold,
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn set_low_stock_threshold(
        &self,
        request: Request<pb::SetLowStockThresholdRequest>,
    ) -> Result<Response<pb::SetLowStockThresholdResponse>, Status> {
        self.staff(&request).await?;
        let r = request.into_inner();
        let view = thresholds::set(&self.db, &self.catalog, &r.product_id, r.threshold).await?;
        Ok(Response::new(pb::SetLowStockThresholdResponse {
            stock: Some(stock_pb(view)),
        }))
    }

    async fn get_stock_report(
        &self,
        request: Request<pb::GetStockReportRequest>,
    ) -> Result<Response<pb::GetStockReportResponse>, Status> {
        self.staff(&request).await?;
        let r = request.into_inner();
        let filter = reports::Filter {
            warehouse_id: Some(r.warehouse_id),
            low_only: r.low_only,
        };
        let report =
            reports::stock(&self.db, &self.catalog, self.default_threshold, &filter).await?;
        Ok(Response::new(pb::GetStockReportResponse {
            rows: report.rows.into_iter().map(stock_report_row_pb).collect(),
            total_value_cents: report.total_value_cents,
            currency: report.currency,
        }))
    }
}

// === encoding ===

fn warehouse_pb(w: warehouse::Model) -> pb::Warehouse {
    pb::Warehouse {
        id: w.id,
        name: w.name,
        address: w.address,
        latitude: w.latitude,
        longitude: w.longitude,
        capacity: w.capacity,
        created_at: Some(timestamp(w.created_at)),
        updated_at: Some(timestamp(w.updated_at)),
    }
}

fn stock_pb(v: StockView) -> pb::Stock {
    let total_on_hand = v.total_on_hand();
    let total_reserved = v.total_reserved();
    pb::Stock {
        product_id: v.product_id,
        total_on_hand,
        total_reserved,
        total_available: total_on_hand - total_reserved,
        low_stock_threshold: v.low_stock_threshold,
        warehouses: v
            .warehouses
            .into_iter()
            .map(|w| pb::WarehouseStock {
                warehouse_id: w.warehouse_id,
                on_hand: w.on_hand,
                reserved: w.reserved,
                available: w.on_hand - w.reserved,
            })
            .collect(),
    }
}

fn stock_report_row_pb(r: reports::Row) -> pb::StockReportRow {
    pb::StockReportRow {
        product_id: r.product_id,
        sku: r.sku,
        product_name: r.product_name,
        warehouse_id: r.warehouse_id,
        warehouse_name: r.warehouse_name,
        on_hand: r.on_hand,
        reserved: r.reserved,
        available: r.on_hand - r.reserved,
        unit_price_cents: r.unit_price_cents,
        value_cents: r.value_cents,
        below_threshold: r.below_threshold,
        low_stock_threshold: r.low_stock_threshold,
    }
}

fn reservation_pb(r: reservation::Model) -> pb::Reservation {
    let status = match r.status {
        reservation::Status::Reserved => pb::ReservationStatus::Reserved,
        reservation::Status::Committed => pb::ReservationStatus::Committed,
        reservation::Status::Released => pb::ReservationStatus::Released,
        reservation::Status::Expired => pb::ReservationStatus::Expired,
    };
    pb::Reservation {
        reservation_id: r.reservation_id,
        // Empty on a tombstone (released before any Reserve): it names no product.
        product_id: r.product_id.unwrap_or_default(),
        warehouse_id: r.warehouse_id.unwrap_or_default(),
        quantity: r.quantity,
        status: status as i32,
        expires_at: Some(timestamp(r.expires_at)),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

fn measurement_pb(m: measurement::Model) -> pb::Measurement {
    pb::Measurement {
        id: m.id,
        variable_id: m.variable_id,
        warehouse_id: m.warehouse_id,
        product_id: m.product_id.unwrap_or_default(),
        value: m.value,
        measured_at: Some(timestamp(m.measured_at)),
        created_at: Some(timestamp(m.created_at)),
    }
}
