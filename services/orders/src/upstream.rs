//! The orders service's calls to products and inventory, made as the orders *service*
//! (never with the end user's token: Reserve, Commit, Release, GetReservation and
//! BatchGetProducts are internal RPCs a customer may not call).
//!
//! Each method states what the saga may rely on: `release` treats "no such reservation"
//! as nothing to release, `reservation` turns NOT_FOUND into `None`, and every other
//! failure is classified by [`Error::upstream`].

use std::sync::Arc;

use stockmesh::client::UpstreamChannel;
use stockmesh::identity::ServiceIdentity;
use stockmesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockmesh::proto::inventory::v1::{
    CommitReservationRequest, GetReservationRequest, ReleaseReservationRequest, Reservation,
    ReservationStatus, ReserveRequest,
};
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::proto::products::v1::{BatchGetProductsRequest, Product};
use tonic::Code;

use crate::error::{Error, Result};

/// A reservation status as inventory names it (RESERVED, RELEASED, …), for messages.
pub fn status_name(status: i32) -> &'static str {
    match ReservationStatus::try_from(status) {
        Ok(ReservationStatus::Reserved) => "RESERVED",
        Ok(ReservationStatus::Committed) => "COMMITTED",
        Ok(ReservationStatus::Released) => "RELEASED",
        Ok(ReservationStatus::Expired) => "EXPIRED",
        Ok(ReservationStatus::Unspecified) | Err(_) => "UNSPECIFIED",
    }
}

/// Clients of the services orders depends on, authenticated as the orders service.
#[derive(Clone)]
pub struct Upstreams {
    identity: Arc<ServiceIdentity>,
    products: ProductServiceClient<UpstreamChannel>,
    inventory: InventoryServiceClient<UpstreamChannel>,
    /// The channel under `inventory`, asked whether it refuses calls right now.
    inventory_gate: UpstreamChannel,
}

/// What a line's reservation asks inventory for.
#[derive(Debug, Clone)]
pub struct ReserveLine {
    pub reservation_id: String,
    pub product_id: String,
    pub quantity: i64,
    pub warehouse_id: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

impl Upstreams {
    pub fn new(
        identity: Arc<ServiceIdentity>,
        products: UpstreamChannel,
        inventory: UpstreamChannel,
    ) -> Self {
        Self {
            identity,
            products: ProductServiceClient::new(products.clone())
                .max_decoding_message_size(products.max_message_bytes()),
            inventory_gate: inventory.clone(),
            inventory: InventoryServiceClient::new(inventory.clone())
                .max_decoding_message_size(inventory.max_message_bytes()),
        }
    }

    async fn request<T>(&self, msg: T) -> Result<tonic::Request<T>> {
        self.identity
            .request(msg)
            .await
            .map_err(|s| Error::upstream("auth", s))
    }

    /// Fails (UNAVAILABLE, as a call would) when a Reserve sent now would be refused at
    /// once by inventory's open circuit breaker; costs no call.
    pub fn inventory_accepts_calls(&self) -> Result<()> {
        match self.inventory_gate.refusal() {
            Some(status) => Err(Error::upstream("inventory", status)),
            None => Ok(()),
        }
    }

    /// The products with these ids (each id once); NOT_FOUND names missing ones.
    pub async fn products(&self, ids: Vec<String>) -> Result<Vec<Product>> {
        let req = self.request(BatchGetProductsRequest { ids }).await?;
        let resp = self
            .products
            .clone()
            .batch_get_products(req)
            .await
            .map_err(|s| Error::upstream("products", s))?;
        Ok(resp.into_inner().products)
    }

    /// Reserves one line (idempotent by `reservation_id`). The answer may be a
    /// reservation that is not RESERVED (one released before this call landed); the
    /// caller checks the status.
    pub async fn reserve(&self, line: ReserveLine) -> Result<Reservation> {
        let req = self
            .request(ReserveRequest {
                reservation_id: line.reservation_id,
                product_id: line.product_id,
                quantity: line.quantity,
                warehouse_id: line.warehouse_id,
                latitude: line.latitude,
                longitude: line.longitude,
            })
            .await?;
        let resp = self
            .inventory
            .clone()
            .reserve(req)
            .await
            .map_err(|s| Error::upstream("inventory", s))?;
        resp.into_inner().reservation.ok_or_else(|| {
            Error::Internal("inventory answered Reserve without a reservation".into())
        })
    }

    /// Commits a reservation (idempotent). FAILED_PRECONDITION when it was released or
    /// expired.
    pub async fn commit(&self, reservation_id: &str) -> Result<()> {
        let req = self
            .request(CommitReservationRequest {
                reservation_id: reservation_id.to_string(),
            })
            .await?;
        self.inventory
            .clone()
            .commit_reservation(req)
            .await
            .map_err(|s| Error::upstream("inventory", s))?;
        Ok(())
    }

    /// Releases a reservation (idempotent); a reservation inventory never took counts as
    /// released (inventory records a tombstone for it, so that a Reserve still in flight
    /// reserves nothing; NOT_FOUND, from an inventory that predates tombstones, is taken
    /// as released too). FAILED_PRECONDITION when it was committed.
    pub async fn release(&self, reservation_id: &str) -> Result<()> {
        let req = self
            .request(ReleaseReservationRequest {
                reservation_id: reservation_id.to_string(),
            })
            .await?;
        match self.inventory.clone().release_reservation(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(Error::upstream("inventory", s)),
        }
    }

    /// The reservation, or `None` when inventory has no such reservation.
    pub async fn reservation(&self, reservation_id: &str) -> Result<Option<Reservation>> {
        let req = self
            .request(GetReservationRequest {
                reservation_id: reservation_id.to_string(),
            })
            .await?;
        match self.inventory.clone().get_reservation(req).await {
            Ok(resp) => Ok(resp.into_inner().reservation),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(Error::upstream("inventory", s)),
        }
    }
}
