//! Circuit breaker: stop calling an endpoint that is failing, fail fast meanwhile, and
//! let exactly one probe find out when it is back.
//!
//! The state machine is `failsafe`'s (closed → open → half-open → closed/open), driven by
//! a failure policy made here:
//! * it opens after `STOCKMESH_BREAKER_FAILURES` consecutive failures, or when the success
//!   rate over `STOCKMESH_BREAKER_WINDOW_SECS` falls below
//!   `STOCKMESH_BREAKER_SUCCESS_RATE_PERCENT` (given enough calls);
//! * it stays open `STOCKMESH_BREAKER_OPEN_MS`, doubling with every failed probe up to
//!   `STOCKMESH_BREAKER_MAX_OPEN_MS` ([`open_duration`]); a successful probe resets that.
//!
//! What counts is decided by [`classify`](super::classify): UNAVAILABLE,
//! DEADLINE_EXCEEDED and transport errors are failures; business answers (NOT_FOUND,
//! FAILED_PRECONDITION…) are successes, since the upstream did answer.
//!
//! failsafe admits *every* call while half-open. Here a [`BreakerState`] serialises its
//! state machine behind one lock and adds a probe gate: while half-open, one call (the
//! probe) is admitted and the others are refused until its result is known. Results of
//! calls admitted before the last transition are stale and ignored (a slow success from
//! before the trip must not close the breaker), which a per-transition epoch tracks.
//!
//! [`BreakerLayer`] is the fail-fast face used in front of a single-endpoint upstream: a
//! refused call ends at once with UNAVAILABLE naming the upstream. Behind a balancer the
//! same state instead makes the endpoint not ready, so the balancer picks another
//! ([`super::balance`]). Transitions are logged at WARN and exported as metrics
//! (`stockmesh_upstream_breaker_state`: 0 closed, 1 half-open, 2 open;
//! `stockmesh_upstream_breaker_transitions_total`; `stockmesh_upstream_breaker_rejected_total`).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Context;
use std::time::{Duration, Instant};

use failsafe::failure_policy::{ConsecutiveFailures, consecutive_failures};
use failsafe::{FailurePolicy, Instrument, StateMachine};
use futures::task::AtomicWaker;
use tonic::{Code, Status};

use super::Route;
use super::classify::{Failure, Outcome, Rejected};

mod layer;
mod settings;
#[cfg(test)]
mod tests;

pub use layer::{Breaker, BreakerLayer, Recorded};
use settings::OpenBackoff;
pub use settings::{BreakerSettings, open_duration};

// === state shared with failsafe's callbacks ===

const CLOSED: u8 = 0;
const HALF_OPEN: u8 = 1;
const OPEN: u8 = 2;

/// A breaker's state, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerStatus {
    Closed,
    HalfOpen,
    Open,
}

struct Shared {
    route: Route,
    endpoint: Arc<str>,
    state: AtomicU8,
    /// Bumped on every transition; results of calls admitted in an older epoch are stale.
    epoch: AtomicU64,
    /// Open period chosen by the policy for the trip in progress (nanoseconds).
    last_open_ns: AtomicU64,
    /// When the current open period ends.
    open_until: Mutex<Option<Instant>>,
    probe_in_flight: AtomicBool,
    /// Set while recording a failure that must open the breaker at once.
    trip_now: AtomicBool,
    /// Woken when a probe finishes, for an ejected endpoint waiting to be ready.
    waker: AtomicWaker,
}

impl Shared {
    fn status(&self) -> BreakerStatus {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerStatus::Closed,
            HALF_OPEN => BreakerStatus::HalfOpen,
            _ => BreakerStatus::Open,
        }
    }

    fn open_until(&self) -> Option<Instant> {
        *self
            .open_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn transition(&self, to: u8) -> u8 {
        let from = self.state.swap(to, Ordering::AcqRel);
        if from != to {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            let name = match to {
                CLOSED => "closed",
                HALF_OPEN => "half_open",
                _ => "open",
            };
            metrics::gauge!(
                "stockmesh_upstream_breaker_state",
                "caller" => self.route.caller,
                "upstream" => self.route.upstream,
                "endpoint" => self.endpoint.to_string()
            )
            .set(f64::from(to));
            metrics::counter!(
                "stockmesh_upstream_breaker_transitions_total",
                "caller" => self.route.caller,
                "upstream" => self.route.upstream,
                "endpoint" => self.endpoint.to_string(),
                "to" => name
            )
            .increment(1);
        }
        from
    }
}

/// failsafe's instrument: mirrors the state, logs transitions.
struct Tracker(Arc<Shared>);

impl Instrument for Tracker {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        let s = &self.0;
        let open_for = Duration::from_nanos(s.last_open_ns.load(Ordering::Acquire));
        *s.open_until.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + open_for);
        s.transition(OPEN);
        tracing::warn!(
            upstream = s.route.upstream,
            endpoint = %s.endpoint,
            open_for_ms = open_for.as_millis() as u64,
            "circuit breaker opened: calls fail fast until a probe succeeds"
        );
    }

    fn on_half_open(&self) {
        let s = &self.0;
        s.transition(HALF_OPEN);
        tracing::warn!(
            upstream = s.route.upstream,
            endpoint = %s.endpoint,
            "circuit breaker half-open: admitting one probe"
        );
    }

    fn on_closed(&self) {
        let s = &self.0;
        *s.open_until.lock().unwrap_or_else(PoisonError::into_inner) = None;
        if s.transition(CLOSED) != CLOSED {
            tracing::warn!(
                upstream = s.route.upstream,
                endpoint = %s.endpoint,
                "circuit breaker closed: probe succeeded, traffic flows again"
            );
        }
    }
}

/// The failure policy: failsafe's consecutive-failures and success-rate rules with this
/// module's open periods, plus "open now" for a refused connection behind a balancer. It
/// also records the open period it picks, which failsafe does not tell its instrument.
struct Policy {
    rules: Box<dyn FailurePolicy + Send>,
    forced: OpenBackoff,
    fresh_forced: OpenBackoff,
    shared: Arc<Shared>,
}

impl FailurePolicy for Policy {
    fn record_success(&mut self) {
        self.rules.record_success();
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        let mut open_for = self.rules.mark_dead_on_failure();
        if open_for.is_none() && self.shared.trip_now.load(Ordering::Acquire) {
            open_for = self.forced.next();
        }
        if let Some(d) = open_for {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            self.shared.last_open_ns.store(ns, Ordering::Release);
        }
        open_for
    }

    fn revived(&mut self) {
        self.rules.revived();
        self.forced = self.fresh_forced.clone();
    }
}

fn rules(settings: &BreakerSettings) -> Box<dyn FailurePolicy + Send> {
    let backoff = OpenBackoff {
        base: settings.open,
        max: settings.max_open,
        trip: 0,
    };
    let consecutive: ConsecutiveFailures<OpenBackoff> =
        consecutive_failures(settings.failures, backoff.clone());
    match settings.success_rate {
        Some(rate) => Box::new(consecutive.or_else(
            failsafe::failure_policy::success_rate_over_time_window(
                rate,
                settings.min_requests,
                settings.window,
                backoff,
            ),
        )),
        None => Box::new(consecutive),
    }
}

// === impl BreakerState ===

struct Core {
    machine: StateMachine<Policy, Tracker>,
}

/// One breaker: failsafe's state machine, a one-probe gate, and the labels it reports
/// under. Shared (`Arc`) by every clone of the service it guards.
pub struct BreakerState {
    shared: Arc<Shared>,
    core: Mutex<Core>,
    /// Behind a balancer a refused connection opens the breaker at once: other endpoints
    /// can serve, and the balancer must stop picking this one (it fails fastest).
    open_on_connect_error: bool,
}

impl std::fmt::Debug for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerState")
            .field("route", &self.shared.route)
            .field("endpoint", &self.shared.endpoint)
            .field("status", &self.shared.status())
            .finish()
    }
}

impl BreakerState {
    pub fn new(
        route: Route,
        endpoint: impl Into<Arc<str>>,
        settings: &BreakerSettings,
        open_on_connect_error: bool,
    ) -> Arc<Self> {
        let shared = Arc::new(Shared {
            route,
            endpoint: endpoint.into(),
            state: AtomicU8::new(CLOSED),
            epoch: AtomicU64::new(0),
            last_open_ns: AtomicU64::new(0),
            open_until: Mutex::new(None),
            probe_in_flight: AtomicBool::new(false),
            trip_now: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let forced = OpenBackoff {
            base: settings.open,
            max: settings.max_open,
            trip: 0,
        };
        let policy = Policy {
            rules: rules(settings),
            forced: forced.clone(),
            fresh_forced: forced,
            shared: shared.clone(),
        };
        let machine = failsafe::Config::new()
            .failure_policy(policy)
            .instrument(Tracker(shared.clone()))
            .build();
        metrics::gauge!(
            "stockmesh_upstream_breaker_state",
            "caller" => route.caller,
            "upstream" => route.upstream,
            "endpoint" => shared.endpoint.to_string()
        )
        .set(f64::from(CLOSED));
        Arc::new(Self {
            shared,
            core: Mutex::new(Core { machine }),
            open_on_connect_error,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn route(&self) -> Route {
        self.shared.route
    }

    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    pub fn status(&self) -> BreakerStatus {
        self.shared.status()
    }

    /// Asks to make a call. The permit must be given the call's outcome
    /// ([`Permit::record`]); dropped without one it only frees the probe slot.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        // Closed (nearly always): admit without the lock. failsafe admits every call when
        // closed, without side effects, so this is the locked path's answer at the moment
        // of the loads. The epoch is read first: if a transition runs between the two
        // loads, the call carries the older epoch and its result is ignored as stale, as
        // for any call admitted just before a transition.
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if self.shared.state.load(Ordering::Acquire) == CLOSED {
            return Ok(Permit {
                state: self.clone(),
                epoch,
                probe: false,
                done: false,
            });
        }
        let core = self.lock();
        if !core.machine.is_call_permitted() {
            drop(core);
            self.count_rejected();
            return Err(Rejected::BreakerOpen);
        }
        let probe = match self.shared.status() {
            BreakerStatus::Closed => false,
            BreakerStatus::HalfOpen | BreakerStatus::Open => {
                if self.shared.probe_in_flight.swap(true, Ordering::AcqRel) {
                    drop(core);
                    self.count_rejected();
                    return Err(Rejected::BreakerOpen);
                }
                true
            }
        };
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        drop(core);
        Ok(Permit {
            state: self.clone(),
            epoch,
            probe,
            done: false,
        })
    }

    fn count_rejected(&self) {
        metrics::counter!(
            "stockmesh_upstream_breaker_rejected_total",
            "caller" => self.shared.route.caller,
            "upstream" => self.shared.route.upstream
        )
        .increment(1);
    }

    /// Whether a call now would be refused, without changing any state.
    pub fn is_refusing(&self) -> bool {
        match self.shared.status() {
            BreakerStatus::Closed => false,
            BreakerStatus::HalfOpen => self.shared.probe_in_flight.load(Ordering::Acquire),
            BreakerStatus::Open => match self.shared.open_until() {
                Some(until) => Instant::now() <= until,
                None => true,
            },
        }
    }

    /// When a refused caller should ask again: the end of the open period, or `None`
    /// while a probe is in flight (the [`register`](Self::register)ed waker fires when it
    /// ends).
    pub fn retry_at(&self) -> Option<Instant> {
        match self.shared.status() {
            BreakerStatus::Open => self.shared.open_until(),
            _ => None,
        }
    }

    /// Registers the task to wake when a probe finishes.
    pub fn register(&self, cx: &Context<'_>) {
        self.shared.waker.register(cx.waker());
    }

    /// Closes the breaker now, whatever its state: the endpoint said it is healthy again
    /// (its `grpc.health.v1` Watch answered SERVING), which is better evidence than
    /// waiting out the open period for a probe. Results of calls admitted before stay
    /// stale (the transition bumps the epoch), and a probe in flight loses its slot.
    pub fn reset(&self) {
        let core = self.lock();
        if self.shared.status() != BreakerStatus::Closed {
            core.machine.reset();
        }
        self.shared.probe_in_flight.store(false, Ordering::Release);
        drop(core);
        self.shared.waker.wake();
    }

    /// The status a refused caller gets.
    pub fn rejection(&self) -> Status {
        Rejected::BreakerOpen.status(
            Code::Unavailable,
            format!(
                "upstream {} unavailable: circuit breaker open for {}",
                self.shared.route.upstream, self.shared.endpoint
            ),
        )
    }

    fn record(&self, epoch: u64, probe: bool, outcome: Outcome) {
        let core = self.lock();
        if epoch == self.shared.epoch.load(Ordering::Acquire) {
            match outcome {
                Outcome::Success => core.machine.on_success(),
                Outcome::Failure(failure) => {
                    let trip_now = failure == Failure::Connect && self.open_on_connect_error;
                    self.shared.trip_now.store(trip_now, Ordering::Release);
                    core.machine.on_error();
                    self.shared.trip_now.store(false, Ordering::Release);
                }
                Outcome::Neutral => {}
            }
        }
        if probe {
            self.shared.probe_in_flight.store(false, Ordering::Release);
        }
        drop(core);
        if probe {
            self.shared.waker.wake();
        }
    }
}

/// Leave to make one call; see [`BreakerState::try_acquire`].
#[derive(Debug)]
pub struct Permit {
    state: Arc<BreakerState>,
    epoch: u64,
    probe: bool,
    done: bool,
}

impl Permit {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The breaker this permit belongs to.
    pub fn state(&self) -> &Arc<BreakerState> {
        &self.state
    }

    /// Reports the call's outcome to the breaker.
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.state.record(self.epoch, self.probe, outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.probe {
            // The probe was cancelled before an answer: no verdict, free the slot.
            self.state.record(self.epoch, true, Outcome::Neutral);
        }
    }
}
