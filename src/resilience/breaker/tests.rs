//! Unit tests of the breaker state machine, its open periods and its one-probe gate.

use super::*;
use crate::resilience::ResilienceArgs;
use crate::resilience::Route;
use proptest::prelude::*;

fn settings(failures: u32, open_ms: u64) -> BreakerSettings {
    BreakerSettings {
        failures,
        open: Duration::from_millis(open_ms),
        max_open: Duration::from_millis(open_ms * 8),
        success_rate: None,
        window: Duration::from_secs(10),
        min_requests: 20,
    }
}

fn fail(state: &Arc<BreakerState>) {
    state
        .try_acquire()
        .unwrap()
        .record(Outcome::Failure(Failure::Unavailable));
}

#[test]
fn opens_after_consecutive_failures_only() {
    let state = BreakerState::new(Route::new("test", "test"), "e", &settings(3, 60_000), false);
    fail(&state);
    fail(&state);
    state.try_acquire().unwrap().record(Outcome::Success);
    fail(&state);
    fail(&state);
    assert_eq!(state.status(), BreakerStatus::Closed);
    fail(&state);
    assert_eq!(state.status(), BreakerStatus::Open);
    assert_eq!(state.try_acquire().unwrap_err(), Rejected::BreakerOpen);
    assert!(state.is_refusing());
}

#[test]
fn reset_closes_an_open_breaker_at_once() {
    let state = BreakerState::new(Route::new("test", "test"), "e", &settings(1, 60_000), false);
    let stale = state.try_acquire().unwrap();
    fail(&state);
    assert_eq!(state.status(), BreakerStatus::Open);
    assert!(state.is_refusing());
    state.reset();
    assert_eq!(state.status(), BreakerStatus::Closed);
    assert!(!state.is_refusing());
    // A failure admitted before the reset is stale: it does not reopen it.
    stale.record(Outcome::Failure(Failure::Unavailable));
    assert_eq!(state.status(), BreakerStatus::Closed);
    // The breaker still guards: a new failure opens it again.
    fail(&state);
    assert_eq!(state.status(), BreakerStatus::Open);
}

#[test]
fn business_and_neutral_outcomes_never_open() {
    let state = BreakerState::new(Route::new("test", "test"), "e", &settings(2, 60_000), false);
    for _ in 0..100 {
        state.try_acquire().unwrap().record(Outcome::Success);
        state.try_acquire().unwrap().record(Outcome::Neutral);
    }
    assert_eq!(state.status(), BreakerStatus::Closed);
}

#[test]
fn half_open_admits_one_probe_then_closes() {
    let state = BreakerState::new(Route::new("test", "test"), "e", &settings(1, 1), false);
    fail(&state);
    assert_eq!(state.status(), BreakerStatus::Open);
    std::thread::sleep(Duration::from_millis(5));
    let probe = state.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(state.status(), BreakerStatus::HalfOpen);
    for _ in 0..10 {
        assert!(state.try_acquire().is_err());
    }
    probe.record(Outcome::Success);
    assert_eq!(state.status(), BreakerStatus::Closed);
    assert!(!state.try_acquire().unwrap().is_probe());
}

#[test]
fn a_cancelled_probe_frees_the_slot() {
    let state = BreakerState::new(Route::new("test", "test"), "e", &settings(1, 1), false);
    fail(&state);
    std::thread::sleep(Duration::from_millis(5));
    drop(state.try_acquire().unwrap());
    assert_eq!(state.status(), BreakerStatus::HalfOpen);
    assert!(state.try_acquire().unwrap().is_probe());
}

#[test]
fn stale_results_are_ignored() {
    let state = BreakerState::new(Route::new("test", "test"), "e", &settings(1, 1), false);
    let early = state.try_acquire().unwrap();
    fail(&state);
    std::thread::sleep(Duration::from_millis(5));
    let probe = state.try_acquire().unwrap();
    // A success admitted before the trip must not close the breaker.
    early.record(Outcome::Success);
    assert_eq!(state.status(), BreakerStatus::HalfOpen);
    probe.record(Outcome::Failure(Failure::Transport));
    assert_eq!(state.status(), BreakerStatus::Open);
}

#[test]
fn failed_probes_lengthen_the_open_period() {
    let state = BreakerState::new(Route::new("test", "test"), "e", &settings(1, 20), false);
    fail(&state);
    let first = state.retry_at().unwrap();
    std::thread::sleep(Duration::from_millis(25));
    let before = Instant::now();
    let probe = state.try_acquire().unwrap();
    probe.record(Outcome::Failure(Failure::Unavailable));
    let second = state.retry_at().unwrap();
    assert!(second > first);
    // The second period is 40 ms (doubled), the first was 20 ms.
    assert!(second.duration_since(before) >= Duration::from_millis(35));
}

#[test]
fn connect_errors_open_at_once_when_asked() {
    let state = BreakerState::new(Route::new("test", "test"), "e", &settings(5, 60_000), true);
    state
        .try_acquire()
        .unwrap()
        .record(Outcome::Failure(Failure::Connect));
    assert_eq!(state.status(), BreakerStatus::Open);

    let state = BreakerState::new(Route::new("test", "test"), "e", &settings(5, 60_000), false);
    state
        .try_acquire()
        .unwrap()
        .record(Outcome::Failure(Failure::Connect));
    assert_eq!(state.status(), BreakerStatus::Closed);
}

#[test]
fn settings_validation() {
    let args = ResilienceArgs::default();
    let s = BreakerSettings::try_new(&args).unwrap();
    assert_eq!(s.failures, 5);
    assert_eq!(s.open, Duration::from_secs(5));
    assert_eq!(s.max_open, Duration::from_secs(60));
    assert_eq!(s.success_rate, Some(0.5));
    let bad = ResilienceArgs {
        breaker_failures: 0,
        ..ResilienceArgs::default()
    };
    assert!(BreakerSettings::try_new(&bad).is_err());
}

proptest! {
    #[test]
    fn open_duration_grows_to_the_cap(
        base_ms in 1u64..100_000,
        extra_ms in 0u64..1_000_000,
        trip in 0u32..200,
    ) {
        let base = Duration::from_millis(base_ms);
        let max = base + Duration::from_millis(extra_ms);
        let d = open_duration(base, max, trip);
        let next = open_duration(base, max, trip + 1);
        prop_assert!(d >= base);
        prop_assert!(d <= max);
        prop_assert!(next >= d);
        prop_assert!(next <= d * 2 || d == max);
        prop_assert_eq!(open_duration(base, max, 0), base);
        if trip < 20 {
            let exact = base * (1u32 << trip);
            prop_assert_eq!(d, exact.min(max));
        }
    }
}

#[test]
fn a_low_success_rate_opens_without_consecutive_failures() {
    // failsafe's success rate is a moving average over time: its clock is frozen and
    // moved 100 ms per call, so the test is exact and instant.
    failsafe::clock::freeze(|clock| {
        let settings = BreakerSettings {
            failures: 1_000,
            success_rate: Some(0.5),
            min_requests: 10,
            window: Duration::from_secs(10),
            ..settings(1_000, 60_000)
        };
        let state = BreakerState::new(Route::new("test", "test"), "e", &settings, false);
        // Two in three calls fail: never a run of 1,000, but a success rate far under 50 %.
        let mut opened_at = None;
        for i in 0..300 {
            clock.advance(Duration::from_millis(100));
            if i % 3 == 0 {
                state.try_acquire().unwrap().record(Outcome::Success);
            } else {
                fail(&state);
            }
            if state.status() == BreakerStatus::Open {
                opened_at = Some(i);
                break;
            }
        }
        let at = opened_at.expect("the success-rate rule opened the breaker");
        assert!(
            at >= 9,
            "not before min_requests calls: opened at call {at}"
        );
    });
}

#[test]
fn a_healthy_success_rate_stays_closed() {
    failsafe::clock::freeze(|clock| {
        let settings = BreakerSettings {
            failures: 1_000,
            success_rate: Some(0.5),
            min_requests: 10,
            window: Duration::from_secs(10),
            ..settings(1_000, 60_000)
        };
        let state = BreakerState::new(Route::new("test", "test"), "e", &settings, false);
        // One in three fails: 67 % success, above the 50 % floor. (failsafe seeds its
        // moving average with the first call's result, so the run starts with a success.)
        for i in 0..300 {
            clock.advance(Duration::from_millis(100));
            if i % 3 == 2 {
                fail(&state);
            } else {
                state.try_acquire().unwrap().record(Outcome::Success);
            }
        }
        assert_eq!(state.status(), BreakerStatus::Closed);
    });
}
