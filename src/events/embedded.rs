//! The embedded bus: an in-process broadcast per topic, used when `STOCKMESH_NATS_URL` is
//! unset (a laptop `stockmesh up`), with the same behaviour as NATS towards the relay and
//! the feeds.
//!
//! One bus belongs to one `Config` and its clones ([`EmbeddedSlot`], a `#[arg(skip)]`
//! field), so every target `up` starts from its configuration shares it, while two
//! in-process meshes of a test suite, each built from its own `Config`, stay apart. It
//! reaches this process only: replicas in other processes need NATS.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use super::{Event, Topic};

/// Events a slow feed task may fall behind the embedded bus before it misses some. Feed
/// tasks only copy events into watcher buffers, so this is never near in practice.
const CAPACITY: usize = 4096;

/// The embedded bus of one `Config` and its clones, created on first use.
#[derive(Clone, Default)]
pub struct EmbeddedSlot(Arc<OnceLock<Arc<EmbeddedBus>>>);

impl EmbeddedSlot {
    pub fn bus(&self) -> Arc<EmbeddedBus> {
        self.0.get_or_init(|| Arc::new(EmbeddedBus::new())).clone()
    }
}

impl std::fmt::Debug for EmbeddedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedSlot")
    }
}

/// One broadcast channel per topic.
pub struct EmbeddedBus {
    topics: HashMap<Topic, broadcast::Sender<Event>>,
}

impl EmbeddedBus {
    fn new() -> Self {
        Self {
            topics: Topic::ALL
                .into_iter()
                .map(|t| (t, broadcast::Sender::new(CAPACITY)))
                .collect(),
        }
    }

    fn sender(&self, topic: Topic) -> &broadcast::Sender<Event> {
        // Every topic has a channel from construction on.
        &self.topics[&topic]
    }

    /// Hands `event` to every subscriber of its topic (none is fine: nobody watches).
    pub fn publish(&self, event: Event) {
        let _ = self.sender(event.topic).send(event);
    }

    pub fn subscribe(&self, topic: Topic) -> broadcast::Receiver<Event> {
        self.sender(topic).subscribe()
    }
}
