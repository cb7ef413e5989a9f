//! CreateOrder as a saga over products (price snapshot) and inventory (reservations).
//!
//! 1. Validate the request (including the quantity cap per line).
//! 2. Fail fast: when inventory's circuit breaker (every endpoint's) is open, UNAVAILABLE
//!    at once, before the database is touched at all: the intent would only be rolled
//!    back, and even the replay lookup below is a database round trip (most of the
//!    refusal's time on PostgreSQL; issue 9 asks ≤ 1 ms p99). A replay sent during the
//!    outage is refused the same way — UNAVAILABLE is retryable and nothing was written —
//!    and a retry with the same request id after inventory is back returns the order.
//!    (An open products breaker fails step 5, also before any write.)
//! 3. Idempotency: an order with this (customer, request id) already exists → return it,
//!    after waiting for it if its saga is still running (a concurrent replay). Replays
//!    are never refused by the open-order cap.
//! 4. The customer's open orders (see [`store::OPEN`]) are below the cap, else
//!    RESOURCE_EXHAUSTED (a cheap early check, before any upstream call). Steps 3 and 4
//!    read the database once ([`store::seen`]).
//! 5. BatchGetProducts for the name and price snapshot (one currency for all lines).
//! 6. Insert the order *intent* (status CREATING, lines with their deterministic
//!    reservation ids `<order id>-<line>`), in a transaction that counts the customer's
//!    open orders again and writes nothing if the cap would be exceeded (the tight check;
//!    see [`store::insert`]). The unique index on (customer, request id) arbitrates
//!    concurrent calls: the loser goes back to step 3.
//! 7. Reserve each line, as the orders service, with the delivery point and preferred
//!    warehouse. Only an answer with status RESERVED counts: inventory answers a Reserve
//!    whose id was already released (a late Reserve landing after the compensating
//!    Release, which inventory records as a tombstone) with that RELEASED reservation,
//!    and such a line fails the saga with ABORTED like any other failed line.
//! 8. CREATING → PENDING with each line's warehouse, and the order's
//!    `OrderStatusChanged` (UNSPECIFIED → PENDING) in the same transaction. Intents that
//!    fail are rolled back and deleted without any event: no client ever saw them.
//!
//! On failure the saga claims the intent (CREATING → ABORTING), releases every line it
//! tried (including the one whose outcome is unknown: Release is idempotent and a
//! reservation inventory never took counts as released) and deletes the intent, so the
//! same request id can be tried again; the caller gets the cause. When releasing fails
//! too (inventory down), the intent stays ABORTING and the reconciler finishes the job,
//! leaving the order CANCELLED. A crash at any step leaves CREATING or ABORTING, which
//! the reconciler also finishes (see [`crate::reconciler`]). Either way no stock stays
//! reserved for an order that is not PENDING, and no PENDING order lacks a reservation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stockmesh::config::OrdersSettings;
use stockmesh::proto::inventory::v1::ReservationStatus;
use stockmesh::telemetry;
use tracing::Instrument;

use crate::entity::order::{self, Status};
use crate::entity::order_item;
use crate::error::{Error, Result};
use crate::orders::Orders;
use crate::store::{self, Inserted, OrderRecord};
use crate::upstream::ReserveLine;

/// Most lines an order may have.
pub const MAX_ITEMS: usize = 100;
/// Longest accepted request id.
pub const MAX_REQUEST_ID_LEN: usize = 200;
/// Currency of a product that names none (API default).
pub(crate) const DEFAULT_CURRENCY: &str = "USD";
/// How long a replay waits for the first call with its request id to finish.
const REPLAY_WAIT: Duration = Duration::from_secs(10);
/// Insert attempts before giving up on a request id whose intents keep vanishing
/// (each vanishing is a concurrent attempt that failed and was rolled back).
const CREATE_ATTEMPTS: usize = 3;

/// CreateOrder's abuse limits, from `STOCKMESH_MAX_PENDING_ORDERS_PER_CUSTOMER` and
/// `STOCKMESH_MAX_QUANTITY_PER_LINE`. Both are at least 1: there is no "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most open orders (see [`store::OPEN`]) one customer may hold.
    pub max_open_orders: u64,
    /// Largest quantity of one line.
    pub max_quantity: i64,
}

impl Limits {
    /// The limits of `settings`; a configuration error naming the variable when one is 0
    /// (or a quantity cap beyond what a line can hold).
    pub fn from_settings(settings: &OrdersSettings) -> stockmesh::Result<Self> {
        if settings.max_pending_orders_per_customer == 0 {
            return Err(stockmesh::Error::Config(
                "STOCKMESH_MAX_PENDING_ORDERS_PER_CUSTOMER must be at least 1".into(),
            ));
        }
        let max_quantity = i64::try_from(settings.max_quantity_per_line)
            .ok()
            .filter(|q| *q >= 1)
            .ok_or_else(|| {
                stockmesh::Error::Config(format!(
                    "STOCKMESH_MAX_QUANTITY_PER_LINE must be between 1 and {}",
                    i64::MAX
                ))
            })?;
        Ok(Self {
            max_open_orders: settings.max_pending_orders_per_customer,
            max_quantity,
        })
    }
}

/// RESOURCE_EXHAUSTED for a customer who holds `open` open orders against a cap of `max`.
fn too_many_open_orders(customer_id: &str, open: u64, max: u64) -> Error {
    Error::ResourceExhausted(format!(
        "customer {customer_id} has {open} or more open orders, the most allowed is {max}; complete or cancel one before placing another"
    ))
}

/// A validated-to-be CreateOrder request.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Whose order it is (already authorised by the handler).
    pub customer_id: String,
    pub request_id: String,
    pub items: Vec<NewItem>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub warehouse_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewItem {
    pub product_id: String,
    pub quantity: i64,
}

/// INVALID_ARGUMENT naming the first bad field.
pub fn validate(new: &NewOrder, limits: &Limits) -> Result<()> {
    if new.request_id.trim().is_empty() {
        return Err(Error::invalid("request_id", "is required"));
    }
    if new.request_id.len() > MAX_REQUEST_ID_LEN {
        return Err(Error::invalid(
            "request_id",
            format!("must be at most {MAX_REQUEST_ID_LEN} bytes"),
        ));
    }
    if new.items.is_empty() {
        return Err(Error::invalid("items", "must have at least one line"));
    }
    if new.items.len() > MAX_ITEMS {
        return Err(Error::invalid(
            "items",
            format!("must have at most {MAX_ITEMS} lines"),
        ));
    }
    for (i, item) in new.items.iter().enumerate() {
        if item.product_id.trim().is_empty() {
            return Err(Error::invalid(
                format!("items[{i}].product_id"),
                "is required",
            ));
        }
        if item.quantity <= 0 {
            return Err(Error::invalid(
                format!("items[{i}].quantity"),
                "must be greater than 0",
            ));
        }
        if item.quantity > limits.max_quantity {
            return Err(Error::invalid(
                format!("items[{i}].quantity"),
                format!("must be at most {}", limits.max_quantity),
            ));
        }
    }
    match (new.latitude, new.longitude) {
        (None, None) => {}
        (Some(_), None) => return Err(Error::invalid("longitude", "is required with latitude")),
        (None, Some(_)) => return Err(Error::invalid("latitude", "is required with longitude")),
        (Some(lat), Some(lon)) => {
            if !(-90.0..=90.0).contains(&lat) {
                return Err(Error::invalid("latitude", "must be between -90 and 90"));
            }
            if !(-180.0..=180.0).contains(&lon) {
                return Err(Error::invalid("longitude", "must be between -180 and 180"));
            }
        }
    }
    Ok(())
}

impl Orders {
    /// Places an order (see the module docs). Idempotent by (customer, request id).
    /// Counted in `stockmesh_orders_saga_total{outcome}`.
    pub async fn create(&self, new: NewOrder) -> Result<OrderRecord> {
        let result = self.create_saga(new).await;
        let outcome = match &result {
            Ok(_) => "created",
            Err(Error::InvalidField { .. }) => "failed_invalid",
            Err(Error::NotFound(_)) => "failed_not_found",
            Err(Error::PermissionDenied(_)) => "failed_permission",
            Err(Error::FailedPrecondition(_)) => "failed_precondition",
            Err(Error::ResourceExhausted(_)) => "failed_quota",
            Err(Error::Aborted(_)) => "failed_aborted",
            Err(Error::Unavailable(_)) => "failed_unavailable",
            Err(_) => "failed_internal",
        };
        metrics::counter!("stockmesh_orders_saga_total", "outcome" => outcome).increment(1);
        result
    }

    async fn create_saga(&self, new: NewOrder) -> Result<OrderRecord> {
        validate(&new, &self.limits)?;
        let max_open = self.limits.max_open_orders;
        // Fail fast (step 2): no database access while Reserve would be refused anyway.
        self.upstreams.inventory_accepts_calls()?;
        for _ in 0..CREATE_ATTEMPTS {
            let seen = store::seen(&self.db, &new.customer_id, &new.request_id, max_open).await?;
            if let Some(id) = seen.existing {
                let existing = match store::order(&self.db, &id).await? {
                    Some(existing) => self.settled(existing).await?,
                    None => None,
                };
                match existing {
                    Some(record) => return Ok(record),
                    // Rolled back meanwhile: this call may try afresh.
                    None => continue,
                }
            }
            let open = seen.open;
            if open >= max_open {
                return Err(too_many_open_orders(&new.customer_id, open, max_open));
            }
            let intent = self
                .intent(&new)
                .instrument(telemetry::step("saga.price_snapshot"))
                .await?;
            match store::insert(&self.db, &intent, max_open)
                .instrument(telemetry::step("saga.insert_intent"))
                .await
            {
                Ok(Inserted::Yes) => return self.reserve_all(intent, &new).await,
                Ok(Inserted::OverCap { open }) => {
                    return Err(too_many_open_orders(&new.customer_id, open, max_open));
                }
                Err(e) if stockmesh::error::is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted(format!(
            "request_id {:?} is being used by concurrent calls; retry",
            new.request_id
        )))
    }

    /// Waits (bounded) until an existing order is visible, i.e. its saga ended. `None`
    /// when it was rolled back and deleted.
    async fn settled(&self, mut current: order::Model) -> Result<Option<OrderRecord>> {
        let give_up = Instant::now() + REPLAY_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            if current.status.is_visible() {
                return Ok(store::record(&self.db, &current.id).await?);
            }
            if Instant::now() >= give_up {
                return Err(Error::Aborted(format!(
                    "an earlier CreateOrder with request_id {:?} is still in progress; retry later",
                    current.request_id
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
            match store::order(&self.db, &current.id).await? {
                Some(order) => current = order,
                None => return Ok(None),
            }
        }
    }

    /// The order intent: lines with the products' names and prices, CREATING.
    async fn intent(&self, new: &NewOrder) -> Result<OrderRecord> {
        let mut ids: Vec<String> = Vec::new();
        for item in &new.items {
            if !ids.contains(&item.product_id) {
                ids.push(item.product_id.clone());
            }
        }
        let products: HashMap<String, _> = self
            .upstreams
            .products(ids)
            .await?
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();

        let order_id = uuid::Uuid::now_v7().to_string();
        let mut currency: Option<String> = None;
        let mut total: i64 = 0;
        let mut items = Vec::with_capacity(new.items.len());
        for (line, item) in new.items.iter().enumerate() {
            let product = products
                .get(&item.product_id)
                .ok_or_else(|| Error::NotFound(format!("product {} not found", item.product_id)))?;
            let line_currency = if product.currency.is_empty() {
                DEFAULT_CURRENCY
            } else {
                product.currency.as_str()
            };
            match &currency {
                None => currency = Some(line_currency.to_string()),
                Some(c) if c != line_currency => {
                    return Err(Error::FailedPrecondition(format!(
                        "items: all lines must share one currency; {} is priced in {line_currency}, earlier lines in {c}",
                        item.product_id
                    )));
                }
                Some(_) => {}
            }
            total = item
                .quantity
                .checked_mul(product.price_cents)
                .and_then(|line_total| total.checked_add(line_total))
                .ok_or_else(|| Error::invalid("items", "the order total is too large"))?;
            let line = i32::try_from(line).map_err(|e| Error::Internal(e.to_string()))?;
            items.push(order_item::Model {
                order_id: order_id.clone(),
                line,
                product_id: item.product_id.clone(),
                product_name: product.name.clone(),
                quantity: item.quantity,
                unit_price_cents: product.price_cents,
                warehouse_id: String::new(),
                reservation_id: format!("{order_id}-{line}"),
            });
        }
        let now = store::now();
        Ok(OrderRecord {
            order: order::Model {
                id: order_id,
                customer_id: new.customer_id.clone(),
                request_id: new.request_id.clone(),
                status: Status::Creating,
                total_cents: total,
                currency: currency.unwrap_or_else(|| DEFAULT_CURRENCY.to_string()),
                cancel_reason: String::new(),
                version: 0,
                created_at: now,
                updated_at: now,
                claimed_until: None,
            },
            items,
        })
    }

    /// Steps 7 and 8 for an inserted intent.
    async fn reserve_all(&self, intent: OrderRecord, new: &NewOrder) -> Result<OrderRecord> {
        let id = intent.order.id.as_str();
        // Often enough that the reconciler never mistakes a live saga for a dead one.
        let beat_every = self.idle_after / 3;
        let mut last_beat = Instant::now();
        let mut warehouses = Vec::with_capacity(intent.items.len());
        // Each heartbeat bumps the row's version: counted, so that the PENDING row can be
        // returned as written without reading it back.
        let mut beats = 0;
        for (i, item) in intent.items.iter().enumerate() {
            if i > 0 && last_beat.elapsed() >= beat_every {
                match store::heartbeat(&self.db, id).await {
                    Ok(true) => {
                        last_beat = Instant::now();
                        beats += 1;
                    }
                    Ok(false) => return Err(self.taken_over(&intent).await),
                    Err(e) => return Err(self.abandon(&intent, i, e.into()).await),
                }
            }
            let reserved = self
                .upstreams
                .reserve(ReserveLine {
                    reservation_id: item.reservation_id.clone(),
                    product_id: item.product_id.clone(),
                    quantity: item.quantity,
                    warehouse_id: new.warehouse_id.clone(),
                    latitude: new.latitude,
                    longitude: new.longitude,
                })
                .instrument(telemetry::step("saga.reserve"))
                .await;
            match reserved {
                Ok(r) if r.status == ReservationStatus::Reserved as i32 => {
                    warehouses.push(r.warehouse_id);
                }
                // Released (or expired) before this Reserve landed: not held, so the
                // order cannot stand. The line holds nothing; releasing it is harmless.
                Ok(r) => {
                    let status = crate::upstream::status_name(r.status);
                    let cause = Error::Aborted(format!(
                        "items[{i}]: product {} was not reserved: inventory answered {status} for reservation {} (it was released before the reservation landed, as when a timed-out order creation is rolled back); nothing stays reserved; retry",
                        item.product_id, item.reservation_id
                    ));
                    return Err(self.abandon(&intent, i + 1, cause).await);
                }
                // Line i's outcome may be unknown: it is released with the others.
                Err(e) => return Err(self.abandon(&intent, i + 1, e).await),
            }
        }
        let at = store::now();
        // The intent as it is in the database now: each heartbeat bumped its version.
        let mut current = intent.clone();
        current.order.version += beats;
        match store::mark_pending(&self.db, &current, None, &warehouses, at)
            .instrument(telemetry::step("saga.pending"))
            .await
        {
            // Exactly the row mark_pending wrote (its lease column aside, which no answer
            // shows): while the order is CREATING only this saga changes what an answer
            // shows; the reconciler takes an order over by moving it out of CREATING, and
            // then mark_pending would have changed nothing.
            Ok(Some(pending)) => {
                self.events.committed();
                Ok(pending)
            }
            Ok(None) => {
                // The reconciler decided first. It completes an intent only when every
                // line is reserved, which they are: then the order stands.
                match store::record(&self.db, id).await? {
                    Some(record) if record.order.status.is_visible() => Ok(record),
                    _ => Err(self.taken_over(&intent).await),
                }
            }
            Err(e) => Err(self.abandon(&intent, intent.items.len(), e.into()).await),
        }
    }

    /// Rolls back a failed saga whose first `tried` lines may hold reservations, and
    /// returns `cause` for the caller.
    async fn abandon(&self, intent: &OrderRecord, tried: usize, cause: Error) -> Error {
        let id = intent.order.id.as_str();
        let reason = format!("saga did not complete: {cause}");
        match store::transition(
            &self.db,
            id,
            &[Status::Creating],
            None,
            Status::Aborting,
            Some(&reason),
        )
        .await
        {
            Ok(true) => {
                let tried = &intent.items[..tried.min(intent.items.len())];
                let released = self
                    .release_lines(id, tried)
                    .instrument(telemetry::step("saga.compensate"))
                    .await;
                metrics::counter!(
                    "stockmesh_orders_saga_compensations_total",
                    "result" => if released { "released" } else { "left_to_reconciler" }
                )
                .increment(1);
                if released {
                    if let Err(e) = store::delete_aborted(&self.db, id).await {
                        tracing::warn!(order_id = id, error = %e, "cannot delete rolled-back order intent; the reconciler will cancel it");
                    }
                } else {
                    tracing::warn!(
                        order_id = id,
                        "reservations of a failed order not all released; the reconciler will finish"
                    );
                }
            }
            // The reconciler took the intent over; it finishes the rollback.
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(order_id = id, error = %e, "cannot mark failed order intent; the reconciler will finish it");
            }
        }
        cause
    }

    /// The reconciler claimed this saga's intent (it looked dead). Release what this saga
    /// reserved (the reconciler may have looked before the last reservation landed).
    async fn taken_over(&self, intent: &OrderRecord) -> Error {
        let id = intent.order.id.as_str();
        if !self.release_lines(id, &intent.items).await {
            tracing::warn!(
                order_id = id,
                "reservations of a taken-over order not all released; the reconciler will finish"
            );
        }
        Error::Aborted(
            "order creation took too long and was rolled back; retry with the same request_id"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(items: Vec<NewItem>) -> NewOrder {
        NewOrder {
            customer_id: "c".into(),
            request_id: "r".into(),
            items,
            latitude: None,
            longitude: None,
            warehouse_id: None,
        }
    }

    fn item(product_id: &str, quantity: i64) -> NewItem {
        NewItem {
            product_id: product_id.into(),
            quantity,
        }
    }

    const LIMITS: Limits = Limits {
        max_open_orders: 20,
        max_quantity: 1000,
    };

    fn validate(new: &NewOrder) -> Result<()> {
        super::validate(new, &LIMITS)
    }

    fn field_of(new: &NewOrder) -> String {
        match validate(new) {
            Err(Error::InvalidField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate(&order(vec![item("p", 1)])).is_ok());
        assert_eq!(field_of(&order(vec![])), "items");
        assert_eq!(field_of(&order(vec![item("p", 1); MAX_ITEMS + 1])), "items");
        assert!(validate(&order(vec![item("p", 1); MAX_ITEMS])).is_ok());
        assert_eq!(
            field_of(&order(vec![item("p", 1), item("", 1)])),
            "items[1].product_id"
        );
        assert_eq!(field_of(&order(vec![item("p", 0)])), "items[0].quantity");
        assert_eq!(field_of(&order(vec![item("p", -3)])), "items[0].quantity");
        assert!(validate(&order(vec![item("p", 1000)])).is_ok());
        assert_eq!(
            field_of(&order(vec![item("p", 1), item("p", 1), item("p", 1001)])),
            "items[2].quantity"
        );
        let mut o = order(vec![item("p", 1)]);
        o.request_id = " ".into();
        assert_eq!(field_of(&o), "request_id");
        o.request_id = "r".into();
        o.latitude = Some(91.0);
        o.longitude = Some(0.0);
        assert_eq!(field_of(&o), "latitude");
        o.latitude = Some(-90.0);
        o.longitude = Some(180.5);
        assert_eq!(field_of(&o), "longitude");
        o.longitude = None;
        assert_eq!(field_of(&o), "longitude");
        o.longitude = Some(f64::NAN);
        assert_eq!(field_of(&o), "longitude");
    }

    #[test]
    fn limits_must_be_at_least_one() {
        let settings = |orders: u64, quantity: u64| OrdersSettings {
            reconcile_interval_ms: 5000,
            reconcile_after_secs: 30,
            max_pending_orders_per_customer: orders,
            max_quantity_per_line: quantity,
        };
        assert_eq!(
            Limits::from_settings(&settings(20, 1000)).ok(),
            Some(LIMITS)
        );
        let err = |orders, quantity| match Limits::from_settings(&settings(orders, quantity)) {
            Err(stockmesh::Error::Config(msg)) => msg,
            other => panic!("expected a configuration error, got {other:?}"),
        };
        assert!(err(0, 1000).contains("STOCKMESH_MAX_PENDING_ORDERS_PER_CUSTOMER"));
        assert!(err(20, 0).contains("STOCKMESH_MAX_QUANTITY_PER_LINE"));
        assert!(err(20, u64::MAX).contains("STOCKMESH_MAX_QUANTITY_PER_LINE"));
    }
}
