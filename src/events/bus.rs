//! Where the relay publishes and feeds subscribe: NATS JetStream ([`super::nats`]) or the
//! embedded broadcast ([`super::embedded`]), behind one small interface.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use super::Event;
use super::embedded::EmbeddedBus;
use super::feed::Feed;
use super::nats::{NatsBus, PublishError};
use crate::{Config, Shutdown, Target};

#[derive(Clone)]
pub(crate) enum Bus {
    Embedded(Arc<EmbeddedBus>),
    Nats(Arc<NatsBus>),
}

/// What one publish of a batch achieved.
pub(crate) struct Published {
    /// Leading events the bus took (stored, for NATS).
    pub acked: usize,
    /// Of those, how many the bus already had (dropped as duplicates by `Nats-Msg-Id`).
    pub duplicates: usize,
    pub error: Option<PublishError>,
}

impl Bus {
    pub async fn connect(
        config: &Config,
        service: Target,
        _shutdown: &Shutdown,
    ) -> crate::Result<Bus> {
        let e = &config.events;
        match e
            .nats_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            Some(url) => Ok(Bus::Nats(
                NatsBus::connect(url, &e.nats_stream, &e.nats_subject_prefix, service).await?,
            )),
            None => Ok(Bus::Embedded(e.embedded.bus())),
        }
    }

    /// Publishes `events` in order.
    pub async fn publish(&self, events: &[Event]) -> Published {
        match self {
            Bus::Embedded(bus) => {
                for event in events {
                    bus.publish(event.clone());
                }
                Published {
                    acked: events.len(),
                    duplicates: 0,
                    error: None,
                }
            }
            Bus::Nats(bus) => {
                let (acked, duplicates, error) = bus.publish(events).await;
                Published {
                    acked,
                    duplicates,
                    error,
                }
            }
        }
    }

    /// Spawns the subscription that feeds `feed` until `shutdown`, after which the feed
    /// ends.
    pub fn subscribe(&self, feed: Feed, shutdown: Shutdown) {
        match self {
            Bus::Nats(bus) => bus.subscribe(feed, shutdown),
            Bus::Embedded(bus) => {
                // Subscribed before this returns: the feed is live at once.
                let mut rx = bus.subscribe(feed.topic());
                feed.set_ready();
                tokio::spawn(async move {
                    loop {
                        let next = tokio::select! {
                            next = rx.recv() => next,
                            () = shutdown.wait() => break,
                        };
                        match next {
                            Ok(event) => {
                                feed.deliver(event);
                            }
                            Err(RecvError::Lagged(missed)) => {
                                tracing::warn!(topic = %feed.topic(), missed, "event feed fell behind the embedded bus");
                            }
                            Err(RecvError::Closed) => break,
                        }
                    }
                    feed.end();
                });
            }
        }
    }
}
