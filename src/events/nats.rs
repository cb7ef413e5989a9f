//! The NATS JetStream bus (`STOCKMESH_NATS_URL` set).
//!
//! * One stream, `STOCKMESH_NATS_STREAM`, capturing `<prefix>.>`, created at start when
//!   absent ([`stream_config`]): file storage, events kept 24 h or up to 1 GiB (oldest
//!   dropped first), duplicate window 2 min. An existing stream is used as it is.
//! * The relay publishes each event to `<prefix>.<topic subject>` with `Nats-Msg-Id` = event
//!   id and waits for the PubAck, so an event is out only once the stream stored it, and a
//!   row published twice within the duplicate window is stored once.
//! * Each feed reads through an ordered consumer (ephemeral, no acks, flow-controlled by the
//!   client) filtered on its subject, starting with the events stored since the feed was
//!   created (less [`CLOCK_SLACK`]; `DeliverPolicy::ByStartTime`), so that a consumer
//!   created late (NATS down at start, requests queued until it is back) skips nothing the
//!   relays published meanwhile. When the consumer breaks (NATS restarted, stream
//!   recreated) a new one resumes after the last stream sequence the feed saw. What is
//!   delivered twice is dropped by event id.
//! * The client connects in the background (`retry_on_initial_connect`) and reconnects for
//!   ever: a service starts and answers while NATS is down; its events wait in the outbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use tokio::time::timeout;

use super::feed::Feed;
use super::{Event, Topic};
use crate::{Shutdown, Target};

/// Bound on each JetStream API call and PubAck wait.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between attempts to (re)open a feed's consumer.
const REOPEN_MIN: Duration = Duration::from_millis(100);
const REOPEN_MAX: Duration = Duration::from_secs(2);
/// How far a feed that starts late reaches back before its creation time, for clock skew
/// between this host and the NATS server (which stamps the messages).
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// The stream every event goes to (see the module docs for the limits).
pub fn stream_config(name: &str, prefix: &str) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{prefix}.>")],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(24 * 3600),
        max_bytes: 1 << 30,
        duplicate_window: Duration::from_secs(120),
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// A connection to NATS and the stream's coordinates.
pub struct NatsBus {
    service: Target,
    js: jetstream::Context,
    stream: String,
    prefix: String,
    /// The stream is known to exist (reset when a publish suggests it does not).
    stream_ok: AtomicBool,
}

/// Why a batch was not (all) published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create or find stream: {0}")]
    Stream(String),
    #[error("publish: {0}")]
    Publish(String),
    #[error("no PubAck within {0:?}")]
    AckTimeout(Duration),
}

impl NatsBus {
    /// Connects in the background; fails only for a malformed URL.
    pub async fn connect(
        url: &str,
        stream: &str,
        prefix: &str,
        service: Target,
    ) -> crate::Result<Arc<NatsBus>> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("stockmesh-{service}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(10))
            .event_callback(move |event| async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(%service, "connected to NATS")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(%service, "disconnected from NATS; events wait in the outbox")
                    }
                    other => tracing::debug!(%service, event = %other, "NATS"),
                }
            })
            .connect(url)
            .await
            .map_err(|e| crate::Error::Config(format!("STOCKMESH_NATS_URL {url}: {e}")))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client);
        Ok(Arc::new(NatsBus {
            service,
            js,
            stream: stream.to_string(),
            prefix: prefix.to_string(),
            stream_ok: AtomicBool::new(false),
        }))
    }

    pub fn subject(&self, topic: Topic) -> String {
        format!("{}.{}", self.prefix, topic.subject())
    }

    /// Creates the stream when absent (once per bus, again after a failed publish).
    async fn ensure_stream(&self) -> Result<stream::Stream, PublishError> {
        let stream = self
            .js
            .get_or_create_stream(stream_config(&self.stream, &self.prefix))
            .await
            .map_err(|e| PublishError::Stream(e.to_string()))?;
        self.stream_ok.store(true, Ordering::Release);
        Ok(stream)
    }

    /// Publishes `events` in order, pipelined, and waits for their PubAcks; returns how
    /// many leading events the stream acknowledged (and how many of those it already had),
    /// and the error that stopped it, if any.
    pub async fn publish(&self, events: &[Event]) -> (usize, usize, Option<PublishError>) {
        if !self.stream_ok.load(Ordering::Acquire)
            && let Err(e) = self.ensure_stream().await
        {
            return (0, 0, Some(e));
        }
        let mut acks = Vec::with_capacity(events.len());
        let mut failure = None;
        for event in events {
            let publish = jetstream::message::PublishMessage::build()
                .message_id(&event.id)
                .payload(event.payload.clone());
            match self
                .js
                .send_publish(self.subject(event.topic), publish)
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    failure = Some(PublishError::Publish(e.to_string()));
                    break;
                }
            }
        }
        let (mut acked, mut duplicates) = (0, 0);
        for ack in acks {
            match timeout(REQUEST_TIMEOUT, ack.into_future()).await {
                Ok(Ok(ack)) => {
                    acked += 1;
                    duplicates += usize::from(ack.duplicate);
                }
                Ok(Err(e)) => {
                    failure = Some(PublishError::Publish(e.to_string()));
                    break;
                }
                Err(_) => {
                    failure = Some(PublishError::AckTimeout(REQUEST_TIMEOUT));
                    break;
                }
            }
        }
        if failure.is_some() {
            // "No responders" is what a missing stream looks like; check it next time.
            self.stream_ok.store(false, Ordering::Release);
        }
        (acked, duplicates, failure)
    }

    /// Spawns the task that feeds `feed` from its subject until `shutdown`.
    pub(crate) fn subscribe(self: &Arc<Self>, feed: Feed, shutdown: Shutdown) {
        let bus = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = bus.run_feed(&feed) => {}
                () = shutdown.wait() => {}
            }
            feed.end();
        });
    }

    async fn run_feed(&self, feed: &Feed) {
        let topic = feed.topic();
        let service = self.service;
        // Stream sequence to resume from after a broken consumer.
        let mut resume: Option<u64> = None;
        let created = chrono::Utc::now() - CLOCK_SLACK;
        let mut wait = REOPEN_MIN;
        loop {
            let start = match resume {
                Some(start_sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
                None => consumer::DeliverPolicy::ByStartTime {
                    start_time: created,
                },
            };
            match self.open(topic, start).await {
                Ok(mut messages) => {
                    feed.set_ready();
                    wait = REOPEN_MIN;
                    while let Some(next) = messages.next().await {
                        let message = match next {
                            Ok(m) => m,
                            Err(e) => {
                                tracing::warn!(%service, %topic, error = %e, "event consumer broke; reopening");
                                break;
                            }
                        };
                        if let Ok(info) = message.info() {
                            resume = Some(info.stream_sequence + 1);
                        }
                        match event_of(topic, &message) {
                            Some(event) => {
                                feed.deliver(event);
                            }
                            None => {
                                tracing::warn!(%service, %topic, "event without Nats-Msg-Id; skipped")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%service, %topic, error = %e, "cannot open event consumer yet");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(REOPEN_MAX);
        }
    }

    async fn open(
        &self,
        topic: Topic,
        deliver_policy: consumer::DeliverPolicy,
    ) -> Result<consumer::pull::Ordered, async_nats::Error> {
        let stream = self
            .ensure_stream()
            .await
            .map_err(|e| -> async_nats::Error { Box::new(e) })?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject(topic),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        Ok(consumer.messages().await?)
    }
}

/// The event a stream message carries: id from `Nats-Msg-Id`, topic from the feed.
fn event_of(topic: Topic, message: &jetstream::Message) -> Option<Event> {
    let id = message
        .headers
        .as_ref()?
        .get(async_nats::header::NATS_MESSAGE_ID)?
        .as_str()
        .to_string();
    Some(Event {
        id,
        topic,
        payload: message.payload.clone(),
    })
}
