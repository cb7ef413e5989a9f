//! Events: what inventory and orders tell the rest of the world about their changes, and
//! the live feeds the Watch RPCs serve from.
//!
//! The path of one event:
//! 1. The service writes it into its `outbox` table ([`append`]) inside the transaction of
//!    the change it describes, so the change and its event commit or roll back together
//!    (a transactional outbox: no event for a change that did not happen, no change
//!    without its event).
//! 2. The outbox relay ([`relay`]) of any replica claims committed rows in batches,
//!    publishes them in order to the bus and deletes them once the bus acknowledged them.
//!    While the bus is down rows wait in the table; nothing is lost.
//! 3. The bus is NATS JetStream when `STOCKMESH_NATS_URL` is set ([`nats`]: one stream,
//!    `Nats-Msg-Id` = event id so a republished row is dropped by the server), else an
//!    in-process broadcast shared by every target of one `Config` ([`embedded`]).
//! 4. Every replica subscribes one [`Feed`] per topic to the bus ([`feed`]): deduplicated
//!    by event id, a ring of recent events to resume from, and bounded fan-out to
//!    watchers, so a change made through any replica reaches watchers on every replica.
//!
//! Delivery is at least once; consumers dedupe by event id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use crate::{Config, Shutdown, Target};

mod bus;
pub mod embedded;
mod feed;
pub mod nats;
pub mod outbox;
mod relay;

pub use embedded::EmbeddedSlot;
pub use feed::{Feed, Lagged, Watcher};
pub use outbox::{OutboxMigration, append};
pub use relay::RelayStats;

/// What an event is about. Subject on the bus: `<prefix>.<topic.subject()>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    StockChanged,
    StockLow,
    OrderStatusChanged,
}

impl Topic {
    pub const ALL: [Topic; 3] = [
        Topic::StockChanged,
        Topic::StockLow,
        Topic::OrderStatusChanged,
    ];

    /// The subject below the prefix.
    pub fn subject(self) -> &'static str {
        match self {
            Topic::StockChanged => "inventory.stock_changed",
            Topic::StockLow => "inventory.stock_low",
            Topic::OrderStatusChanged => "orders.order_status_changed",
        }
    }

    /// Full protobuf name of the message carried as payload.
    pub fn message_type(self) -> &'static str {
        match self {
            Topic::StockChanged => "stockmesh.inventory.v1.StockChanged",
            Topic::StockLow => "stockmesh.inventory.v1.StockLow",
            Topic::OrderStatusChanged => "stockmesh.orders.v1.OrderStatusChanged",
        }
    }

    /// The topic of a subject (without prefix), as stored in the outbox.
    pub fn from_subject(subject: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.subject() == subject)
    }

    /// The topics a service publishes (and whose feeds it subscribes at start).
    pub fn of(service: Target) -> &'static [Topic] {
        match service {
            Target::Inventory => &[Topic::StockChanged, Topic::StockLow],
            Target::Orders => &[Topic::OrderStatusChanged],
            _ => &[],
        }
    }

    /// Short label value for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Topic::StockChanged => "stock_changed",
            Topic::StockLow => "stock_low",
            Topic::OrderStatusChanged => "order_status_changed",
        }
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.subject())
    }
}

/// A new event id: UUIDv7 text (time-ordered). The writer puts it into the message's
/// `event_id` too.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An event as written to the outbox and carried by the bus.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    pub topic: Topic,
    /// The encoded protobuf message ([`Topic::message_type`]).
    pub payload: Bytes,
}

impl Event {
    pub fn new(id: String, topic: Topic, message: &impl prost::Message) -> Event {
        Event {
            id,
            topic,
            payload: Bytes::from(message.encode_to_vec()),
        }
    }
}

/// Settings of the event machinery, validated.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub poll: Duration,
    pub watch_buffer: usize,
    pub retain: usize,
}

impl Settings {
    fn from_config(config: &Config) -> crate::Result<Self> {
        let e = &config.events;
        if e.watch_buffer == 0 {
            return Err(crate::Error::Config(
                "STOCKMESH_WATCH_BUFFER must be at least 1".into(),
            ));
        }
        if e.outbox_poll_ms == 0 {
            return Err(crate::Error::Config(
                "STOCKMESH_OUTBOX_POLL_MS must be at least 1".into(),
            ));
        }
        if e.nats_subject_prefix.is_empty()
            || e.nats_subject_prefix
                .contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
        {
            return Err(crate::Error::Config(
                "STOCKMESH_NATS_SUBJECT_PREFIX must be a non-empty subject without wildcards"
                    .into(),
            ));
        }
        Ok(Settings {
            poll: Duration::from_millis(e.outbox_poll_ms),
            watch_buffer: e.watch_buffer,
            retain: e.event_retain,
        })
    }
}

/// The event machinery of one service in one process. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    service: Target,
    bus: bus::Bus,
    settings: Settings,
    wake: Arc<Notify>,
    relay: Arc<relay::Counters>,
    feeds: Mutex<HashMap<Topic, Feed>>,
    shutdown: Shutdown,
}

/// How long [`Events::start`] waits for the feeds' first subscription (NATS): long
/// enough for a healthy server, short enough that a down one does not delay start.
const FEED_READY_WAIT: Duration = Duration::from_secs(3);

impl Events {
    /// Spawns the outbox relay of `service` on `db` (publishing to NATS JetStream when
    /// `config.events.nats_url` is set, else to the process's embedded bus, shared by every
    /// target of one Config), and subscribes the feeds. Everything stops with `shutdown`.
    pub async fn start(
        config: &Config,
        service: Target,
        db: DatabaseConnection,
        shutdown: Shutdown,
    ) -> crate::Result<Events> {
        let settings = Settings::from_config(config)?;
        let bus = bus::Bus::connect(config, service, &shutdown).await?;
        let wake = Arc::new(Notify::new());
        let counters = Arc::new(relay::Counters::default());
        relay::spawn(relay::Relay {
            counters: counters.clone(),
            service,
            db,
            bus: bus.clone(),
            wake: wake.clone(),
            poll: settings.poll,
            shutdown: shutdown.clone(),
        });
        let events = Events {
            inner: Arc::new(Inner {
                service,
                bus,
                settings,
                wake,
                relay: counters,
                feeds: Mutex::new(HashMap::new()),
                shutdown,
            }),
        };
        let feeds: Vec<Feed> = Topic::of(service).iter().map(|t| events.feed(*t)).collect();
        for feed in feeds {
            if tokio::time::timeout(FEED_READY_WAIT, feed.ready())
                .await
                .is_err()
            {
                tracing::warn!(
                    %service, topic = %feed.topic(),
                    "event feed not subscribed yet (bus unreachable?); it keeps trying"
                );
            }
        }
        Ok(events)
    }

    /// Tells the relay that a transaction which appended events has committed (it
    /// publishes at once instead of at its next poll). Cheap; call after every such
    /// commit.
    pub fn committed(&self) {
        self.inner.wake.notify_one();
    }

    /// This replica's feed of `topic`: every event of it published by ANY replica,
    /// deduplicated by id, in arrival order. Watch RPC handlers read it. Feeds of the
    /// service's own topics are subscribed at start; another topic's feed is subscribed on
    /// first use and sees events from then on.
    pub fn feed(&self, topic: Topic) -> Feed {
        let inner = &self.inner;
        let mut feeds = inner.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds
            .entry(topic)
            .or_insert_with(|| {
                Feed::subscribe(
                    inner.service,
                    topic,
                    &inner.bus,
                    &inner.settings,
                    inner.shutdown.clone(),
                )
            })
            .clone()
    }

    /// What this replica's relay published so far.
    pub fn relay_stats(&self) -> RelayStats {
        self.inner.relay.stats()
    }

    /// The service these events belong to.
    pub fn service(&self) -> Target {
        self.inner.service
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
