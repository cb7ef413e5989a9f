//! The reconciler: a background task that drives orders left half-way (by a crash, a
//! killed process or an upstream outage) to a consistent end, and cancels PENDING orders
//! whose reservations expired. Every replica of the orders service runs one.
//!
//! ## What it does to one order
//!
//! Orders with work in flight that nobody has touched for `reconcile_after_secs` (a live
//! saga touches its intent as it goes):
//!
//! * CREATING (a saga died): it asks inventory about every line. All RESERVED → the saga
//!   had done its work, so the order becomes PENDING with each line's warehouse.
//!   Otherwise it claims the intent (CREATING → ABORTING, only if the row has not changed
//!   since it looked), releases every line and marks the order CANCELLED ("saga did not
//!   complete").
//! * ABORTING (a saga failed but could not release everything): release every line, then
//!   CANCELLED with the saga's reason.
//! * COMPLETING / CANCELLING (a complete or cancel whose inventory calls failed): finish
//!   committing or releasing, then COMPLETED or CANCELLED.
//!
//! It also keeps "no PENDING order lacks its reservations" true over time. A PENDING
//! order is a hold that lasts as long as its reservations, and inventory expires those
//! after `reservation_ttl_secs`. So it takes the PENDING orders created more than the TTL
//! ago (oldest first) and asks inventory about every line; if any is EXPIRED, RELEASED or
//! unknown, it claims the order exactly as CancelOrder does (PENDING → CANCELLING, only if
//! the row has not changed since it looked, so a concurrent CompleteOrder wins or loses
//! cleanly), releases the lines that may still hold something, and marks it CANCELLED with
//! reason [`RESERVATION_EXPIRED`] (in one step, PENDING → CANCELLED, when every line had
//! already ended in inventory, as after a wave of expiries). Orders younger than the TTL
//! cannot have an expired reservation and are not looked at.
//!
//! Every inventory call is idempotent and every status change conditional, so doing a step
//! twice is harmless; a failing upstream just leaves the order for the next round.
//!
//! The changes clients see write their `OrderStatusChanged` in their own transaction, as
//! CompleteOrder and CancelOrder do: an interrupted creation becoming PENDING (or, rolled
//! back, appearing CANCELLED), and COMPLETED or CANCELLED; the batch cancellation writes
//! one per order it moved (see [`crate::events`]).
//!
//! ## Rounds: drain everything due, in claimed batches
//!
//! Every `reconcile_interval_ms` a round walks all due rows of each kind (unfinished
//! first, then expiry) in batches of [`BATCH`], and works on up to [`CONCURRENCY`] orders
//! at once, so that a wave (thousands of PENDING orders whose reservations expired
//! together) is over in one round instead of [`BATCH`] orders per interval. The walk is
//! keyset-ordered (`updated_at` or `created_at`, then id) and only moves forward, so an
//! order left as it was (its reservations still held, an upstream down) is not looked at
//! again in the same round. A round stops claiming after [`ROUND_MAX_ORDERS`] orders of a
//! kind or [`ROUND_BUDGET`], so it always ends; when it stopped early the next round
//! starts at once.
//!
//! ## Several replicas: claims
//!
//! Each batch is *claimed* before anything is done with it: one statement sets the rows'
//! `claimed_until` lease to [`LEASE`] ahead and picks only rows nobody holds a lease on
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the single write lock on SQLite; see
//! [`store::claim_due`]). So two replicas never work on the same order at the same time,
//! and neither waits for the other's rows. An order is only started while its lease has
//! more than [`ORDER_TIMEOUT`] (plus [`CLOCK_SKEW`]) left, and its work is cut off after
//! [`ORDER_TIMEOUT`], so the work always ends before the lease does and no other replica
//! can pick the order up while it is being worked on. After working on an order that did
//! not reach an end state, the lease is set to the next round (`reconcile_interval_ms`
//! ahead), so any replica may look again then; a replica that dies leaves its leases to
//! lapse after [`LEASE`], and then the others take its rows over.
//!
//! Counts go to `stockmesh_orders_reconciled_total{work, outcome}`. The task stops on
//! shutdown, even mid-round (every step is safe to interrupt; leases then lapse).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use stockmesh::Shutdown;
use stockmesh::proto::inventory::v1::ReservationStatus;

use crate::entity::order::{self, Status};
use crate::entity::order_item;
use crate::error::{Error, Result};
use crate::orders::{Orders, RESERVATION_EXPIRED};
use crate::store::{self, After, Due, OrderRecord};

/// Orders claimed per statement.
pub const BATCH: u64 = 100;
/// Orders worked on at once. Each is a few calls to inventory (which go through the
/// resilience stack and its concurrency limit) and a few small writes here.
pub const CONCURRENCY: usize = 32;
/// How long a claim keeps other replicas off a row: long enough for a batch to wait its
/// turn and be worked on, short enough that the rows of a replica that died are taken
/// over soon.
pub const LEASE: Duration = Duration::from_secs(60);
/// Longest the work on one order may take; cut off (and retried next round) after that,
/// so it never outlives its claim.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(20);
/// Allowance for the replicas' clocks disagreeing (leases are compared to each replica's
/// own clock).
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Most orders of one kind claimed per round.
pub const ROUND_MAX_ORDERS: usize = 20_000;
/// A round claims no new batch after this long.
pub const ROUND_BUDGET: Duration = Duration::from_secs(120);
/// Cancel reason of an order whose creation a crash interrupted.
pub const REASON: &str = "saga did not complete";

/// The reconciler's two kinds of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Orders with work in flight, idle (CREATING, ABORTING, COMPLETING, CANCELLING).
    Unfinished,
    /// PENDING orders older than the reservation TTL.
    Expiry,
}

impl Work {
    fn label(self) -> &'static str {
        match self {
            Work::Unfinished => "unfinished",
            Work::Expiry => "expiry",
        }
    }
}

/// What became of one claimed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It reached an end state: PENDING (an interrupted creation that had every line),
    /// COMPLETED or CANCELLED.
    Ended,
    /// Nothing to do yet (its reservations are still held, or a live saga, CompleteOrder
    /// or CancelOrder changed it first); looked at again in a later round.
    Unchanged,
    /// A call failed or took longer than [`ORDER_TIMEOUT`]; retried in a later round.
    Failed,
    /// Its claim had too little time left to start; left for the next round.
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ended => "ended",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// What one kind of work came to in a round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Orders claimed (the sum of the outcomes).
    pub claimed: usize,
    pub ended: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Claiming stopped at [`ROUND_MAX_ORDERS`] or [`ROUND_BUDGET`] with orders left.
    pub stopped_early: bool,
}

impl Tally {
    fn count(&mut self, outcome: Outcome) {
        self.claimed += 1;
        match outcome {
            Outcome::Ended => self.ended += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped => self.skipped += 1,
        }
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub unfinished: Tally,
    pub expiry: Tally,
}

impl Round {
    /// Orders that reached an end state.
    pub fn ended(&self) -> usize {
        self.unfinished.ended + self.expiry.ended
    }
}

/// Runs rounds every `interval` until `shutdown` (see the module docs).
pub async fn run(orders: Orders, interval: Duration, shutdown: Shutdown) {
    Reconciler::new(orders, interval).run(shutdown).await;
}

/// The reconciler of one replica.
#[derive(Clone)]
pub struct Reconciler {
    orders: Orders,
    /// Pause between rounds, and how long an order left as it was waits for another look.
    interval: Duration,
}

impl Reconciler {
    pub fn new(orders: Orders, interval: Duration) -> Self {
        Self { orders, interval }
    }

    /// Runs rounds until `shutdown`: one every `interval`, or at once after a round that
    /// stopped early.
    pub async fn run(self, shutdown: Shutdown) {
        let mut pause = true;
        loop {
            if pause {
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(self.interval) => {}
                }
            }
            let started = Instant::now();
            tokio::select! {
                () = shutdown.wait() => return,
                res = self.round() => match res {
                    Ok(round) => {
                        pause = !(round.unfinished.stopped_early || round.expiry.stopped_early);
                        report(&round, started.elapsed());
                    }
                    Err(e) => {
                        pause = true;
                        tracing::warn!(error = %e, "reconciler round failed");
                    }
                },
            }
        }
    }

    /// One round: every due order of each kind, claimed in batches (see the module docs).
    /// An error means a claim failed; orders claimed before it were still worked on.
    pub async fn round(&self) -> Result<Round> {
        let deadline = Instant::now() + ROUND_BUDGET;
        // One kind of work failing (say, a query) does not hold up the other.
        let unfinished = self.drain(Work::Unfinished, deadline).await;
        let expiry = self.drain(Work::Expiry, deadline).await;
        Ok(Round {
            unfinished: unfinished?,
            expiry: expiry?,
        })
    }

    /// Claims and works on the due orders of one kind until none is left (or the round's
    /// bounds are reached).
    async fn drain(&self, work: Work, deadline: Instant) -> Result<Tally> {
        let due = match work {
            Work::Unfinished => Due::Unfinished {
                idle_since: ago(self.orders.idle_after),
            },
            Work::Expiry => Due::Expiry {
                created_before: ago(self.orders.reservation_ttl),
            },
        };
        let mut walk = Walk::default();
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut in_flight = FuturesUnordered::new();
        // Orders whose lines all ended in inventory, to be cancelled in one statement.
        let mut to_cancel: Vec<Decided> = Vec::new();
        let mut tally = Tally::default();
        let mut failure = None;
        loop {
            while in_flight.len() < CONCURRENCY {
                let Some(job) = queue.pop_front() else { break };
                in_flight.push(self.handle(work, job));
            }
            let idle = in_flight.is_empty() && queue.is_empty();
            if to_cancel.len() >= BATCH as usize || (idle && !to_cancel.is_empty()) {
                // The work in flight goes on meanwhile (here and for claims below).
                let cancel = self.cancel_ended(std::mem::take(&mut to_cancel));
                let mut cancel = std::pin::pin!(cancel);
                let outcomes = loop {
                    tokio::select! {
                        outcomes = &mut cancel => break outcomes,
                        Some(handled) = in_flight.next(), if !in_flight.is_empty() => {
                            handled.absorb(&mut tally, &mut to_cancel);
                        }
                    }
                };
                for outcome in outcomes {
                    tally.count(outcome);
                }
                continue;
            }
            if queue.is_empty() && !walk.done {
                // The next batch is claimed once the previous one is all under way, so
                // claimed orders never wait long for their turn.
                if walk.claimed >= ROUND_MAX_ORDERS || Instant::now() >= deadline {
                    walk.done = true;
                    tally.stopped_early = true;
                    continue;
                }
                let claim = self.claim(due, walk.after.clone());
                let mut claim = std::pin::pin!(claim);
                let claimed = loop {
                    tokio::select! {
                        claimed = &mut claim => break claimed,
                        Some(handled) = in_flight.next(), if !in_flight.is_empty() => {
                            handled.absorb(&mut tally, &mut to_cancel);
                        }
                    }
                };
                match claimed {
                    Ok(batch) => {
                        walk.done = (batch.len() as u64) < BATCH;
                        walk.claimed += batch.len();
                        if let Some(last) = batch.last() {
                            walk.after = Some(due.position(&last.order));
                        }
                        queue.extend(batch);
                    }
                    Err(e) => {
                        walk.done = true;
                        failure = Some(e);
                    }
                }
                continue;
            }
            match in_flight.next().await {
                Some(handled) => handled.absorb(&mut tally, &mut to_cancel),
                // Nothing in flight, queued, waiting to be cancelled, or left to claim.
                None if to_cancel.is_empty() => break,
                None => {}
            }
        }
        tracing::debug!(
            work = work.label(),
            claimed = tally.claimed,
            ended = tally.ended,
            unchanged = tally.unchanged,
            failed = tally.failed,
            skipped = tally.skipped,
            "reconciler drained due orders"
        );
        match failure {
            Some(e) if tally.claimed == 0 => Err(e),
            Some(e) => {
                tracing::warn!(work = work.label(), error = %e, "reconciler could not claim more orders this round");
                Ok(tally)
            }
            None => Ok(tally),
        }
    }

    /// Claims the next batch after `after`, with the lines of its orders.
    async fn claim(&self, due: Due, after: Option<After>) -> Result<Vec<Job>> {
        let started = Instant::now();
        let now = store::now();
        let until = now + chrono_duration(LEASE);
        let orders =
            store::claim_due(&self.orders.db, due, now, until, after.as_ref(), BATCH).await?;
        let mut items = self.items_of(&orders).await;
        tracing::trace!(
            claimed = orders.len(),
            took_us = started.elapsed().as_micros() as u64,
            "reconciler claimed a batch"
        );
        Ok(orders
            .into_iter()
            .map(|order| Job {
                items: items.remove(&order.id),
                order,
                until,
            })
            .collect())
    }

    /// The lines of a claimed batch in one query; on failure each order reads its own.
    async fn items_of(&self, orders: &[order::Model]) -> HashMap<String, Vec<order_item::Model>> {
        let ids: Vec<String> = orders.iter().map(|o| o.id.clone()).collect();
        match store::items_of(&self.orders.db, &ids).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the lines of a claimed batch at once");
                HashMap::new()
            }
        }
    }

    /// Works on one claimed order (held until `until`): done with it, or decided that it
    /// is to be cancelled with others in one statement.
    async fn handle(&self, work: Work, job: Job) -> Handled {
        let Job {
            order,
            items,
            until,
        } = job;
        let id = order.id.clone();
        let started = store::now();
        let outcome = if started + chrono_duration(ORDER_TIMEOUT + CLOCK_SKEW) >= until {
            Outcome::Skipped
        } else {
            match tokio::time::timeout(ORDER_TIMEOUT, self.work_on(work, order, items)).await {
                Ok(Ok(Worked::Ended)) => Outcome::Ended,
                Ok(Ok(Worked::Unchanged)) => Outcome::Unchanged,
                Ok(Ok(Worked::CancelAt(record))) => {
                    return Handled::Cancel(Decided {
                        record: Box::new(record),
                        until,
                    });
                }
                Ok(Err(e)) => {
                    tracing::warn!(order_id = %id, work = work.label(), error = %e, "cannot reconcile order yet");
                    Outcome::Failed
                }
                Err(_) => {
                    tracing::warn!(order_id = %id, work = work.label(), timeout = ?ORDER_TIMEOUT, "reconciling order took too long; retrying next round");
                    Outcome::Failed
                }
            }
        };
        self.settle(work, &id, until, outcome).await;
        Handled::Done(outcome)
    }

    /// Cancels, in one statement, PENDING orders whose lines all ended in inventory (each
    /// only if still PENDING at the version looked at); settles each.
    async fn cancel_ended(&self, decided: Vec<Decided>) -> Vec<Outcome> {
        let started = Instant::now();
        let seen: Vec<OrderRecord> = decided.iter().map(|d| (*d.record).clone()).collect();
        let moved = match store::cancel_pending(&self.orders.db, &seen, RESERVATION_EXPIRED).await {
            Ok(moved) => {
                if !moved.is_empty() {
                    self.orders.events.committed();
                }
                tracing::trace!(
                    decided = seen.len(),
                    cancelled = moved.len(),
                    took_us = started.elapsed().as_micros() as u64,
                    "reconciler cancelled a batch of expired orders"
                );
                Some(moved)
            }
            Err(e) => {
                tracing::warn!(orders = decided.len(), error = %e, "cannot cancel expired orders yet");
                None
            }
        };
        let mut outcomes = Vec::with_capacity(decided.len());
        for d in decided {
            let id = d.record.order.id;
            let outcome = match &moved {
                Some(moved) if moved.contains(&id) => Outcome::Ended,
                // Changed since it was looked at (a CompleteOrder or CancelOrder got there
                // first): whoever changed it owns it now.
                Some(_) => Outcome::Unchanged,
                None => Outcome::Failed,
            };
            self.settle(Work::Expiry, &id, d.until, outcome).await;
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Counts one order's outcome and hands its row back unless it ended for good.
    async fn settle(
        &self,
        work: Work,
        id: &str,
        until: chrono::DateTime<chrono::Utc>,
        outcome: Outcome,
    ) {
        metrics::counter!(
            "stockmesh_orders_reconciled_total",
            "work" => work.label(),
            "outcome" => outcome.label()
        )
        .increment(1);
        // An expired order that ended is CANCELLED for good: its lease is moot. Anything
        // else is handed back: a skipped one at once, one left as it was from the next
        // round on, and an interrupted creation that became PENDING at once (its expiry
        // check must not wait for the lease).
        let again = match (work, outcome) {
            (Work::Expiry, Outcome::Ended) => None,
            (_, Outcome::Skipped) | (Work::Unfinished, Outcome::Ended) => Some(store::now()),
            (_, Outcome::Unchanged | Outcome::Failed) => {
                Some(store::now() + chrono_duration(self.interval))
            }
        };
        if let Some(again) = again
            && let Err(e) = store::unclaim(&self.orders.db, id, until, again).await
        {
            tracing::debug!(order_id = %id, error = %e, "cannot hand a claimed order back; its claim will lapse");
        }
    }

    /// The work itself.
    async fn work_on(
        &self,
        work: Work,
        order: order::Model,
        items: Option<Vec<order_item::Model>>,
    ) -> Result<Worked> {
        let items = match items {
            Some(items) => items,
            None => store::items(&self.orders.db, &order.id).await?,
        };
        match work {
            Work::Unfinished => Ok(if self.orders.reconcile(order, &items).await? {
                Worked::Ended
            } else {
                Worked::Unchanged
            }),
            Work::Expiry => self.orders.expire_if_lapsed(order, &items).await,
        }
    }
}

/// Logs a round: counts at debug always, a summary at info when something ended or failed.
fn report(round: &Round, took: Duration) {
    let (u, e) = (&round.unfinished, &round.expiry);
    tracing::debug!(
        unfinished_claimed = u.claimed,
        expiry_claimed = e.claimed,
        took_ms = took.as_millis() as u64,
        "reconciler round"
    );
    if round.ended() > 0 || u.failed + e.failed > 0 {
        tracing::info!(
            finished = u.ended,
            expired_cancelled = e.ended,
            unchanged = u.unchanged + e.unchanged,
            failed = u.failed + e.failed,
            skipped = u.skipped + e.skipped,
            took_ms = took.as_millis() as u64,
            "reconciler round brought orders to an end state"
        );
    }
}

/// Where a round's walk over one kind of due rows is.
#[derive(Default)]
struct Walk {
    after: Option<After>,
    claimed: usize,
    done: bool,
}

/// What the work on one order came to.
enum Worked {
    Ended,
    Unchanged,
    /// Every line had already ended in inventory: to be cancelled (PENDING → CANCELLED,
    /// only at the version of this order as read) together with others, in one
    /// statement.
    CancelAt(OrderRecord),
}

/// An order decided to be cancelled with others (see [`Worked::CancelAt`]).
struct Decided {
    /// As read (with its lines, for the event).
    record: Box<OrderRecord>,
    until: chrono::DateTime<chrono::Utc>,
}

/// A claimed order worked on: settled, or waiting for the batch cancellation.
enum Handled {
    Done(Outcome),
    Cancel(Decided),
}

impl Handled {
    fn absorb(self, tally: &mut Tally, to_cancel: &mut Vec<Decided>) {
        match self {
            Handled::Done(outcome) => tally.count(outcome),
            Handled::Cancel(decided) => to_cancel.push(decided),
        }
    }
}

/// One claimed order, with its lines when the batch read them.
struct Job {
    order: order::Model,
    items: Option<Vec<order_item::Model>>,
    /// The claim's `claimed_until`.
    until: chrono::DateTime<chrono::Utc>,
}

/// `d` as a chrono duration (saturating; every constant here is small).
fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The instant `d` before now (the beginning of time if `d` is absurdly long).
fn ago(d: Duration) -> chrono::DateTime<chrono::Utc> {
    store::now()
        .checked_sub_signed(chrono_duration(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

impl Orders {
    /// Drives one unfinished order as far as possible; true when it reached an end state.
    async fn reconcile(&self, order: order::Model, items: &[order_item::Model]) -> Result<bool> {
        let mut record = OrderRecord {
            order,
            items: items.to_vec(),
        };
        let order = &record.order;
        let id = order.id.as_str();
        match order.status {
            Status::Creating => {
                let mut warehouses = Vec::with_capacity(items.len());
                for item in items {
                    match self.upstreams.reservation(&item.reservation_id).await? {
                        Some(r) if r.status == ReservationStatus::Reserved as i32 => {
                            warehouses.push(r.warehouse_id);
                        }
                        _ => break,
                    }
                }
                if warehouses.len() == items.len() {
                    let done = store::mark_pending(
                        &self.db,
                        &record,
                        Some(order.version),
                        &warehouses,
                        store::now(),
                    )
                    .await?
                    .is_some();
                    if done {
                        self.events.committed();
                        tracing::info!(
                            order_id = id,
                            "interrupted order had every line reserved: PENDING"
                        );
                    }
                    return Ok(done);
                }
                let claimed = store::transition(
                    &self.db,
                    id,
                    &[Status::Creating],
                    Some(order.version),
                    Status::Aborting,
                    Some(REASON),
                )
                .await?;
                if !claimed {
                    // The saga moved on after all; look again next round.
                    return Ok(false);
                }
                record.order.cancel_reason = REASON.to_string();
                self.finish_aborting(&record).await
            }
            Status::Aborting => self.finish_aborting(&record).await,
            Status::Completing => match self.finish_completing(&record).await {
                Ok(()) => Ok(true),
                // A reservation expired: the order was cancelled instead (or is being).
                Err(Error::FailedPrecondition(why)) => {
                    tracing::info!(order_id = id, %why, "interrupted completion found an expired reservation");
                    Ok(true)
                }
                Err(e) => Err(e),
            },
            Status::Cancelling => {
                let expired = order.cancel_reason == RESERVATION_EXPIRED;
                self.finish_cancelling(&record, items, expired).await?;
                Ok(true)
            }
            Status::Pending | Status::Completed | Status::Cancelled => Ok(false),
        }
    }

    /// ABORTING → CANCELLED once every line is released: from then on clients see the
    /// order (its event says UNSPECIFIED → CANCELLED).
    async fn finish_aborting(&self, record: &OrderRecord) -> Result<bool> {
        let id = record.order.id.as_str();
        if !self.release_lines(id, &record.items).await {
            return Ok(false);
        }
        let done = self
            .announce(record, &[Status::Aborting], Status::Cancelled)
            .await?
            .is_some();
        if done {
            tracing::info!(order_id = id, "interrupted order rolled back: CANCELLED");
        }
        Ok(done)
    }

    /// Cancels one PENDING order if a line's reservation is no longer held.
    ///
    /// Every line is looked at, so that lines inventory already ended (EXPIRED or
    /// RELEASED: final states, which hold nothing and never will again) are not released
    /// again. After a wave of expiries that is usually every line: then there is no
    /// inventory call left to make, so no CANCELLING state to record one in flight, and the
    /// order goes PENDING → CANCELLED directly, in one statement with the batch's others
    /// ([`Worked::CancelAt`], conditional on the version looked at like every take-over).
    async fn expire_if_lapsed(
        &self,
        order: order::Model,
        items: &[order_item::Model],
    ) -> Result<Worked> {
        let id = order.id.as_str();
        let mut lapsed = None;
        let mut to_release = Vec::with_capacity(items.len());
        for item in items {
            let state = self.upstreams.reservation(&item.reservation_id).await?;
            let status = state.as_ref().map(|r| r.status);
            // COMMITTED cannot happen under PENDING any more, but is no lost hold.
            let held = status.is_some_and(|s| {
                s == ReservationStatus::Reserved as i32 || s == ReservationStatus::Committed as i32
            });
            if !held && lapsed.is_none() {
                let name = status.map_or("NOT_FOUND", crate::upstream::status_name);
                lapsed = Some((item.reservation_id.clone(), name));
            }
            let ended = status.is_some_and(|s| {
                s == ReservationStatus::Expired as i32 || s == ReservationStatus::Released as i32
            });
            // Unknown ones are released too: that leaves a tombstone against a late Reserve.
            if !ended {
                to_release.push(item.clone());
            }
        }
        let Some((reservation_id, status)) = lapsed else {
            return Ok(Worked::Unchanged);
        };
        tracing::debug!(order_id = id, %reservation_id, status, release = to_release.len(), "pending order lost its reservation: cancelling");
        let mut record = OrderRecord {
            order,
            items: items.to_vec(),
        };
        if to_release.is_empty() {
            return Ok(Worked::CancelAt(record));
        }
        // The claim CancelOrder makes, and only on the row as read: a CompleteOrder that
        // claimed it first keeps it (and meets the expired reservation itself).
        let claimed = store::transition(
            &self.db,
            &record.order.id,
            &[Status::Pending],
            Some(record.order.version),
            Status::Cancelling,
            Some(RESERVATION_EXPIRED),
        )
        .await?;
        if !claimed {
            return Ok(Worked::Unchanged);
        }
        record.order.cancel_reason = RESERVATION_EXPIRED.to_string();
        self.finish_cancelling(&record, &to_release, true).await?;
        Ok(Worked::Ended)
    }
}
