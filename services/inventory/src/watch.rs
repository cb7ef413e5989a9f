//! WatchStock: a product's `Stock` now, then after every change, from this replica's feed
//! of `StockChanged` events (which carries the changes made through every replica).
//!
//! A watcher is attached to the feed *before* the first messages are read from the
//! database, so no change falls between the two. The price is that an event committed
//! before that read may arrive after it; and delivery is at least once. So every watcher
//! keeps, per product it has sent, each warehouse row with its version, and applies an
//! event only when it is newer than the row it holds (events carry the row's values and
//! version after the change, not a delta): numbers never move backwards and a duplicate
//! changes nothing. An event the watcher's numbers already include sends nothing.
//!
//! Computing the message from what the watcher holds plus the event's row means no
//! database read per watcher per event. A product is read from the database once per
//! watcher: in the first messages when it is named, or at its first event for a watcher
//! of every product (`product_ids` empty); that message then carries the product as read,
//! which includes the event (and maybe later ones, whose events are then skipped).
//!
//! `low_stock_threshold` is the product's threshold as of that read (thresholds change
//! without events).
//!
//! The stream ends with RESOURCE_EXHAUSTED when the watcher fell more than the watch
//! buffer behind, and with UNAVAILABLE when the feed ends (the server is draining); both
//! tell the client to reconnect with `after_event_id`. A client that goes away drops the
//! stream, and with it the watcher.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::Pin;

use futures::Stream;
use prost::Message;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use stockmesh::events::{Event, Feed, Watcher};
use stockmesh::proto::inventory::v1 as pb;
use tonic::Status;

use crate::entity::stock;
use crate::error::{Error, Result};
use crate::stock::require_key;
use crate::thresholds;

/// Most products one watcher may name.
pub const MAX_PRODUCTS: usize = 100;

/// The stream type of the WatchStock handler.
pub type WatchStockStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchStockResponse, Status>> + Send>>;

/// The products named, each checked like GetStock checks its product_id, duplicates
/// dropped (first occurrence kept).
pub fn validate(product_ids: Vec<String>) -> Result<Vec<String>> {
    if product_ids.len() > MAX_PRODUCTS {
        return Err(Error::invalid(
            "product_ids",
            format!(
                "at most {MAX_PRODUCTS} products per watcher, got {}",
                product_ids.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(product_ids.len());
    for (i, id) in product_ids.into_iter().enumerate() {
        require_key("product_ids", &id).map_err(|e| match e {
            Error::Invalid { why, .. } => Error::invalid(format!("product_ids[{i}]"), why),
            other => other,
        })?;
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Opens a watch of `product_ids` (validated; empty = every product, changes only):
/// attaches to `feed` (after `after_event_id` when given), then reads the first messages.
pub async fn open(
    db: DatabaseConnection,
    feed: &Feed,
    product_ids: Vec<String>,
    after_event_id: &str,
    default_threshold: i64,
) -> Result<WatchStockStream> {
    let after = Some(after_event_id).filter(|a| !a.is_empty());
    // First: every change committed from now on reaches this watcher.
    let watcher = feed.watch(after);
    let mut watch = Watch {
        db,
        watcher,
        only: (!product_ids.is_empty()).then(|| product_ids.iter().cloned().collect()),
        products: HashMap::new(),
        default_threshold,
        queued: VecDeque::new(),
        ended: false,
    };
    if !product_ids.is_empty() {
        watch.products = load(&watch.db, &product_ids, default_threshold).await?;
        for id in &product_ids {
            if let Some(p) = watch.products.get(id) {
                watch.queued.push_back(pb::WatchStockResponse {
                    stock: Some(p.stock(id)),
                    event_id: String::new(),
                    cause: pb::StockChangeCause::Unspecified as i32,
                });
            }
        }
    }
    Ok(Box::pin(futures::stream::unfold(
        watch,
        |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        },
    )))
}

/// One warehouse row as a watcher holds it.
#[derive(Debug, Clone, Copy)]
struct Row {
    on_hand: i64,
    reserved: i64,
    version: i64,
}

/// One product as a watcher holds it.
#[derive(Debug, Clone, Default)]
struct Product {
    rows: BTreeMap<String, Row>,
    threshold: i64,
}

impl Product {
    fn stock(&self, product_id: &str) -> pb::Stock {
        let total_on_hand = self.rows.values().map(|r| r.on_hand).sum();
        let total_reserved = self.rows.values().map(|r| r.reserved).sum();
        pb::Stock {
            product_id: product_id.to_string(),
            total_on_hand,
            total_reserved,
            total_available: total_on_hand - total_reserved,
            warehouses: self
                .rows
                .iter()
                .map(|(w, r)| pb::WarehouseStock {
                    warehouse_id: w.clone(),
                    on_hand: r.on_hand,
                    reserved: r.reserved,
                    available: r.on_hand - r.reserved,
                })
                .collect(),
            low_stock_threshold: self.threshold,
        }
    }

    /// Takes the event's row if it is newer than the one held; whether it was.
    fn apply(&mut self, e: &pb::StockChanged) -> bool {
        if self
            .rows
            .get(&e.warehouse_id)
            .is_some_and(|held| held.version >= e.version)
        {
            return false;
        }
        self.rows.insert(
            e.warehouse_id.clone(),
            Row {
                on_hand: e.on_hand,
                reserved: e.reserved,
                version: e.version,
            },
        );
        true
    }
}

/// The stock rows and thresholds of `product_ids`, in two queries.
async fn load(
    db: &DatabaseConnection,
    product_ids: &[String],
    default_threshold: i64,
) -> Result<HashMap<String, Product>> {
    let rows = stock::Entity::find()
        .filter(stock::Column::ProductId.is_in(product_ids.iter().cloned()))
        .order_by_asc(stock::Column::ProductId)
        .all(db)
        .await?;
    let thresholds = thresholds::of_many(db, product_ids, default_threshold).await?;
    let mut products: HashMap<String, Product> = product_ids
        .iter()
        .map(|id| {
            let threshold = thresholds.get(id).copied().unwrap_or(default_threshold);
            (
                id.clone(),
                Product {
                    rows: BTreeMap::new(),
                    threshold,
                },
            )
        })
        .collect();
    for r in rows {
        if let Some(p) = products.get_mut(&r.product_id) {
            p.rows.insert(
                r.warehouse_id,
                Row {
                    on_hand: r.on_hand,
                    reserved: r.reserved,
                    version: r.version,
                },
            );
        }
    }
    Ok(products)
}

struct Watch {
    db: DatabaseConnection,
    watcher: Watcher,
    /// The products watched; `None`: every product.
    only: Option<HashSet<String>>,
    products: HashMap<String, Product>,
    default_threshold: i64,
    /// The first messages, not sent yet.
    queued: VecDeque<pb::WatchStockResponse>,
    /// The final status was sent.
    ended: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<pb::WatchStockResponse, Status>> {
        if let Some(first) = self.queued.pop_front() {
            return Some(Ok(first));
        }
        if self.ended {
            return None;
        }
        loop {
            let event = match self.watcher.next().await {
                Some(Ok(event)) => event,
                Some(Err(lagged)) => {
                    self.ended = true;
                    return Some(Err(Status::resource_exhausted(format!(
                        "{lagged}; reconnect with after_event_id"
                    ))));
                }
                None => {
                    self.ended = true;
                    return Some(Err(Status::unavailable(
                        "server draining; reconnect with after_event_id to resume",
                    )));
                }
            };
            match self.message(&event).await {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e.into()));
                }
            }
        }
    }

    /// The message `event` makes, if it concerns this watcher and moves its numbers.
    async fn message(&mut self, event: &Event) -> Result<Option<pb::WatchStockResponse>> {
        let changed = match pb::StockChanged::decode(&event.payload[..]) {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(event_id = %event.id, error = %e, "undecodable StockChanged event skipped");
                return Ok(None);
            }
        };
        if self
            .only
            .as_ref()
            .is_some_and(|only| !only.contains(&changed.product_id))
        {
            return Ok(None);
        }
        let product_id = changed.product_id.clone();
        let moved = match self.products.get_mut(&product_id) {
            Some(p) => p.apply(&changed),
            None => {
                // First sight of it (a watcher of every product): read it once; what is
                // read includes this change.
                let mut loaded = load(
                    &self.db,
                    std::slice::from_ref(&product_id),
                    self.default_threshold,
                )
                .await?;
                let mut p = loaded.remove(&product_id).unwrap_or_default();
                p.apply(&changed);
                self.products.insert(product_id.clone(), p);
                true
            }
        };
        if !moved {
            return Ok(None);
        }
        let stock = self.products.get(&product_id).map(|p| p.stock(&product_id));
        Ok(Some(pb::WatchStockResponse {
            stock,
            event_id: event.id.clone(),
            cause: changed.cause,
        }))
    }
}
