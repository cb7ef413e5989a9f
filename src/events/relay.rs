//! The outbox relay: publishes committed outbox rows to the bus, in order, and deletes
//! them once the bus has them.
//!
//! Each round claims up to [`BATCH`] rows with a lease ([`outbox::claim`]), publishes them
//! in `seq` order, deletes the acknowledged ones and gives the rest back. It runs when a
//! commit wakes it ([`super::Events::committed`]), every `STOCKMESH_OUTBOX_POLL_MS` (rows
//! of another replica's lapsed claim, rows written while the bus was down), and repeats
//! while full batches come back. Any number of replicas may run it on one database:
//! claims never overlap while leases hold, and a row re-published after a lapsed lease is
//! dropped by the bus (`Nats-Msg-Id`) or by the feeds (event id).
//!
//! After a round that published something the relay lingers [`LINGER`] before it listens
//! for the next wake-up: an event after a quiet spell goes out at once, and under load the
//! commits of those milliseconds share one claim and one delete instead of costing two
//! write statements each (the claim and delete were a third of a busy SQLite's writes).
//!
//! When publishing fails the relay waits with capped exponential backoff (the schedule of
//! [`crate::resilience::retry`]) and tries again for ever; rows stay in the table until
//! the bus has them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use super::bus::Bus;
use super::{Topic, outbox};
use crate::resilience::retry::{RetryBackoff, RetrySettings};
use crate::{Shutdown, Target};

/// Rows claimed and published per round.
pub const BATCH: u64 = 100;
/// How long a claim holds: far longer than a batch takes (its PubAcks are bounded by a
/// few seconds), short enough that rows of a replica that died mid-batch go out soon.
const LEASE: Duration = Duration::from_secs(30);
/// Pause after a round that published, so that commits meanwhile go out in one batch
/// (see the module docs): what it adds to an event's delivery under load.
pub const LINGER: Duration = Duration::from_millis(10);
/// First wait after a failed round, and the cap of the doubling waits after that.
const BACKOFF: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What one relay did so far (also in the metrics, which are per process, not per relay).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Events the bus took from this relay.
    pub published: u64,
    /// Of those, how many the bus already had (`Nats-Msg-Id` within the duplicate window).
    pub duplicates: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    published: AtomicU64,
    duplicates: AtomicU64,
}

impl Counters {
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            published: self.published.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Relay {
    pub counters: Arc<Counters>,
    pub service: Target,
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub wake: Arc<Notify>,
    pub poll: Duration,
    pub shutdown: Shutdown,
}

pub(crate) fn spawn(relay: Relay) {
    tokio::spawn(async move {
        let shutdown = relay.shutdown.clone();
        tokio::select! {
            () = relay.run() => {}
            () = shutdown.wait() => {}
        }
    });
}

fn backoff() -> RetryBackoff {
    RetryBackoff::new(&RetrySettings {
        max_attempts: u32::MAX,
        backoff: BACKOFF,
        max_backoff: BACKOFF_MAX,
        budget_ratio: 0.0,
        budget_min_per_sec: 0,
        buffer_bytes: 0,
    })
}

/// Why a round stopped early.
enum Stop {
    Db,
    Bus,
}

impl Relay {
    async fn run(self) {
        let mut failing: Option<RetryBackoff> = None;
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            match self.round().await {
                Ok(published) => {
                    failing = None;
                    if published > 0 {
                        tokio::time::sleep(LINGER).await;
                    }
                    tokio::select! {
                        () = self.wake.notified() => {}
                        _ = poll.tick() => self.sample_pending().await,
                    }
                }
                Err(stop) => {
                    let wait = failing.get_or_insert_with(backoff).next_wait();
                    if let Stop::Bus = stop {
                        self.sample_pending().await;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Publishes everything due now, batch after batch.
    /// Claims, publishes and deletes until a batch comes back short; how many rows it
    /// published.
    async fn round(&self) -> Result<usize, Stop> {
        let service = self.service;
        let mut total = 0;
        loop {
            let now = Utc::now();
            let until = now + LEASE;
            let rows = outbox::claim(&self.db, now, until, BATCH)
                .await
                .map_err(|e| {
                    tracing::warn!(%service, error = %e, "outbox relay cannot claim rows; retrying");
                    Stop::Db
                })?;
            if rows.is_empty() {
                return Ok(total);
            }
            let full = rows.len() as u64 == BATCH;
            let (rows, events): (Vec<_>, Vec<_>) = rows
                .into_iter()
                .filter_map(|r| {
                    let e = r.event();
                    if e.is_none() {
                        tracing::warn!(%service, topic = %r.topic, "outbox row of an unknown topic left in place");
                    }
                    Some(r.seq).zip(e)
                })
                .unzip();
            let published = self.bus.publish(&events).await;
            let done = &rows[..published.acked];
            let mut by_topic: HashMap<Topic, u64> = HashMap::new();
            for e in &events[..published.acked] {
                *by_topic.entry(e.topic).or_default() += 1;
            }
            for (topic, n) in by_topic {
                metrics::counter!("stockmesh_outbox_published_total",
                    "service" => service.name(), "topic" => topic.label())
                .increment(n);
            }
            self.counters
                .published
                .fetch_add(published.acked as u64, Ordering::Relaxed);
            self.counters
                .duplicates
                .fetch_add(published.duplicates as u64, Ordering::Relaxed);
            if published.duplicates > 0 {
                metrics::counter!("stockmesh_outbox_duplicates_total", "service" => service.name())
                    .increment(published.duplicates as u64);
            }
            if let Err(e) = outbox::delete(&self.db, done).await {
                // They go out again once the lease lapses; the bus drops them then.
                tracing::warn!(%service, error = %e, "cannot delete published outbox rows");
                return Err(Stop::Db);
            }
            if let Some(error) = published.error {
                metrics::counter!("stockmesh_outbox_publish_errors_total", "service" => service.name())
                    .increment(1);
                tracing::warn!(%service, %error, pending = rows.len() - published.acked,
                    "cannot publish events; they stay in the outbox and are retried");
                let rest = &rows[published.acked..];
                if let Err(e) = outbox::unclaim(&self.db, rest, until).await {
                    tracing::debug!(%service, error = %e, "cannot give back outbox claims; they lapse");
                }
                return Err(Stop::Bus);
            }
            total += published.acked;
            if !full {
                return Ok(total);
            }
        }
    }

    async fn sample_pending(&self) {
        if let Ok(n) = outbox::pending(&self.db).await {
            metrics::gauge!("stockmesh_outbox_pending", "service" => self.service.name())
                .set(n as f64);
        }
    }
}
