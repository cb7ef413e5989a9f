//! WatchOrders: every order change (created, completed, cancelled) from this replica's
//! feed of `OrderStatusChanged` events, which carries the changes made through every
//! replica. Each event carries the whole order as the change left it, so a watcher needs
//! no database read at all: customers get the events of their own orders, staff every
//! event.
//!
//! The stream ends with UNAUTHENTICATED when the caller's access token expires (a stream
//! outliving its token would keep showing orders to someone no longer signed in; the
//! client reconnects with a fresh token and `after_event_id`), with RESOURCE_EXHAUSTED when
//! the watcher fell more than the watch buffer behind, and with UNAVAILABLE when the feed
//! ends (the server is draining). A client that goes away drops the stream, and with it the
//! watcher.

use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use prost::Message;
use stockmesh::events::{Feed, Watcher};
use stockmesh::proto::orders::v1::{OrderStatusChanged, WatchOrdersResponse};
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::orders::Viewer;

/// The stream type of the WatchOrders handler.
pub type WatchOrdersStream =
    Pin<Box<dyn Stream<Item = Result<WatchOrdersResponse, Status>> + Send>>;

/// Opens a watch for `viewer`, whose token expires at `expires_at` (seconds since the
/// epoch), resuming after `after_event_id` when the feed still holds it.
pub fn open(
    feed: &Feed,
    viewer: Viewer,
    expires_at: i64,
    after_event_id: &str,
) -> WatchOrdersStream {
    let after = Some(after_event_id).filter(|a| !a.is_empty());
    let watch = Watch {
        watcher: feed.watch(after),
        viewer,
        expiry: Box::pin(tokio::time::sleep_until(deadline(expires_at))),
        ended: false,
    };
    Box::pin(futures::stream::unfold(watch, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    }))
}

/// The instant a token expiring at `exp` (seconds since the epoch) stops being valid.
fn deadline(exp: i64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let exp = Duration::from_secs(u64::try_from(exp).unwrap_or(0));
    Instant::now() + exp.saturating_sub(now)
}

struct Watch {
    watcher: Watcher,
    viewer: Viewer,
    expiry: Pin<Box<Sleep>>,
    /// The final status was sent.
    ended: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<WatchOrdersResponse, Status>> {
        if self.ended {
            return None;
        }
        loop {
            let next = tokio::select! {
                () = &mut self.expiry => {
                    self.ended = true;
                    return Some(Err(Status::unauthenticated(
                        "token expired; reconnect with a new token and after_event_id",
                    )));
                }
                next = self.watcher.next() => next,
            };
            let event = match next {
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
            let changed = match OrderStatusChanged::decode(&event.payload[..]) {
                Ok(changed) => changed,
                Err(e) => {
                    tracing::warn!(event_id = %event.id, error = %e, "undecodable OrderStatusChanged event skipped");
                    continue;
                }
            };
            if !self.viewer.staff && changed.customer_id != self.viewer.user_id {
                continue;
            }
            return Some(Ok(WatchOrdersResponse {
                order: changed.order,
                event_id: event.id,
                previous_status: changed.old_status,
            }));
        }
    }
}
