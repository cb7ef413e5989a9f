//! One replica's live feed of one topic, and its watchers.
//!
//! A feed is fed by one subscription to the bus ([`super::bus`]) and serves every Watch
//! call of its topic in this process:
//! * **dedup**: an event id seen recently (a bounded LRU) is dropped, so a row the relay
//!   published twice (a lease lapsed mid-publish, a retry after a lost ack) reaches
//!   watchers once;
//! * **ring**: the last `STOCKMESH_EVENT_RETAIN` events, so a watcher that reconnects with
//!   the id of the last event it saw gets the ones after it first;
//! * **bounded fan-out**: each watcher has a buffer of `STOCKMESH_WATCH_BUFFER` events; one
//!   that is full when an event arrives is detached and told [`Lagged`] after the events it
//!   still holds, so a slow client costs at most its buffer, never unbounded memory, and
//!   never slows the feed or the other watchers.
//!
//! When the service shuts down the feed ends: every watcher gets `None`.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use tokio::sync::{mpsc, watch};

use super::{Event, Settings, Topic, bus::Bus};
use crate::{Shutdown, Target};

/// Event ids a feed remembers for dedup, at least (more when the ring is larger).
const DEDUP_IDS: usize = 16_384;

/// `Some(Err(Lagged))` from [`Watcher::next`]: the watcher fell more than the watch buffer
/// behind and was detached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("watcher fell more than {0} events behind")]
pub struct Lagged(pub usize);

/// This replica's feed of one topic. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

struct Shared {
    service: Target,
    topic: Topic,
    buffer: usize,
    retain: usize,
    state: Mutex<State>,
    /// True once the subscription is live (or the feed ended).
    ready: watch::Sender<bool>,
}

struct State {
    ring: VecDeque<Event>,
    seen: LruCache<String, ()>,
    watchers: Vec<Slot>,
    next_watcher: u64,
    ended: bool,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

impl Feed {
    /// A feed with no subscription yet (the bus attaches one).
    pub(crate) fn new(service: Target, topic: Topic, settings: &Settings) -> Feed {
        let dedup = NonZeroUsize::new(settings.retain.max(DEDUP_IDS)).unwrap_or(NonZeroUsize::MIN);
        Feed {
            shared: Arc::new(Shared {
                service,
                topic,
                buffer: settings.watch_buffer.max(1),
                retain: settings.retain,
                state: Mutex::new(State {
                    ring: VecDeque::with_capacity(settings.retain.min(1024)),
                    seen: LruCache::new(dedup),
                    watchers: Vec::new(),
                    next_watcher: 0,
                    ended: false,
                }),
                ready: watch::Sender::new(false),
            }),
        }
    }

    /// A feed subscribed to `bus` until `shutdown`.
    pub(crate) fn subscribe(
        service: Target,
        topic: Topic,
        bus: &Bus,
        settings: &Settings,
        shutdown: Shutdown,
    ) -> Feed {
        let feed = Feed::new(service, topic, settings);
        bus.subscribe(feed.clone(), shutdown);
        feed
    }

    pub fn topic(&self) -> Topic {
        self.shared.topic
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds valid state.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes once the subscription is live (or the feed ended).
    pub async fn ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub(crate) fn set_ready(&self) {
        self.shared.ready.send_replace(true);
    }

    /// Hands `event` to every watcher unless its id was seen; false for a duplicate.
    pub(crate) fn deliver(&self, event: Event) -> bool {
        let shared = &self.shared;
        let mut state = self.state();
        if state.ended {
            return false;
        }
        if state.seen.put(event.id.clone(), ()).is_some() {
            drop(state);
            metrics::counter!("stockmesh_event_duplicates_total",
                "service" => shared.service.name(), "topic" => shared.topic.label())
            .increment(1);
            return false;
        }
        if shared.retain > 0 {
            if state.ring.len() == shared.retain {
                state.ring.pop_front();
            }
            state.ring.push_back(event.clone());
        }
        let before = state.watchers.len();
        state
            .watchers
            .retain(|w| match w.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.lagged.store(true, Ordering::Release);
                    metrics::counter!("stockmesh_event_watchers_lagged_total",
                    "service" => shared.service.name(), "topic" => shared.topic.label())
                    .increment(1);
                    false
                }
                // The watcher was dropped; its Drop removes it too, whichever comes first.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        let gone = before - state.watchers.len();
        drop(state);
        self.watchers_gauge().decrement(gone as f64);
        true
    }

    /// Ends the feed: every watcher gets `None` after what it holds.
    pub(crate) fn end(&self) {
        let mut state = self.state();
        state.ended = true;
        let gone = std::mem::take(&mut state.watchers).len();
        drop(state);
        self.watchers_gauge().decrement(gone as f64);
        self.set_ready();
    }

    fn watchers_gauge(&self) -> metrics::Gauge {
        metrics::gauge!("stockmesh_event_watchers",
            "service" => self.shared.service.name(), "topic" => self.shared.topic.label())
    }

    /// Starts a watcher. With `after` = Some(event id) that the feed still holds (a bounded
    /// ring of recent events), the events after it come first (`watcher.resumed == true`);
    /// otherwise only live events.
    pub fn watch(&self, after: Option<&str>) -> Watcher {
        let (tx, rx) = mpsc::channel(self.shared.buffer);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut state = self.state();
        let id = state.next_watcher;
        state.next_watcher += 1;
        let mut backlog = VecDeque::new();
        let mut resumed = false;
        if let Some(after) = after
            && let Some(at) = state.ring.iter().position(|e| e.id == after)
        {
            backlog.extend(state.ring.iter().skip(at + 1).cloned());
            resumed = true;
        }
        let attached = !state.ended;
        if attached {
            state.watchers.push(Slot {
                id,
                tx,
                lagged: lagged.clone(),
            });
        }
        drop(state);
        if attached {
            self.watchers_gauge().increment(1.0);
        }
        Watcher {
            resumed,
            backlog,
            rx,
            lagged,
            lag_told: false,
            buffer: self.shared.buffer,
            feed: self.clone(),
            id,
        }
    }

    /// Detaches watcher `id` if it still is attached.
    fn detach(&self, id: u64) {
        let mut state = self.state();
        let before = state.watchers.len();
        state.watchers.retain(|w| w.id != id);
        let gone = before - state.watchers.len();
        drop(state);
        self.watchers_gauge().decrement(gone as f64);
    }

    /// Watchers attached now.
    pub fn watchers(&self) -> usize {
        self.state().watchers.len()
    }
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("service", &self.shared.service)
            .field("topic", &self.shared.topic)
            .finish_non_exhaustive()
    }
}

/// One Watch call's view of a feed.
pub struct Watcher {
    /// True when the events after the requested `after` id come first.
    pub resumed: bool,
    backlog: VecDeque<Event>,
    rx: mpsc::Receiver<Event>,
    lagged: Arc<AtomicBool>,
    lag_told: bool,
    buffer: usize,
    feed: Feed,
    id: u64,
}

impl Watcher {
    /// The next event. `Some(Err(Lagged))` once this watcher fell more than the watch
    /// buffer behind (it is then detached); `None` when the feed ended (the service is
    /// shutting down).
    pub async fn next(&mut self) -> Option<Result<Event, Lagged>> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(Ok(event));
        }
        match self.rx.recv().await {
            Some(event) => Some(Ok(event)),
            None if self.lagged.load(Ordering::Acquire) && !self.lag_told => {
                self.lag_told = true;
                Some(Err(Lagged(self.buffer)))
            }
            None => None,
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.feed.detach(self.id);
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("resumed", &self.resumed)
            .field("topic", &self.feed.topic())
            .finish_non_exhaustive()
    }
}
