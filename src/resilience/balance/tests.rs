//! Unit tests of endpoint choice and of the endpoint set.

use super::*;
use crate::resilience::Route;
use crate::resilience::breaker::BreakerSettings;
use crate::resilience::breaker::BreakerState;
use crate::resilience::classify::Failure;
use crate::resilience::health_watch::EndpointHealth;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn settings() -> BreakerSettings {
    BreakerSettings {
        failures: 1,
        open: Duration::from_secs(60),
        max_open: Duration::from_secs(60),
        success_rate: None,
        window: Duration::from_secs(10),
        min_requests: 20,
    }
}

fn endpoint(addr: &'static str) -> Arc<Endpoint<()>> {
    Arc::new(Endpoint::new(
        addr,
        (),
        BreakerState::new(Route::new("test", "t"), addr, &settings(), true),
        Arc::new(EndpointHealth::new()),
        CancellationToken::new(),
    ))
}

fn picks(endpoints: &[Arc<Endpoint<()>>], avoid: &[&'static str]) -> Vec<&'static str> {
    let mut seen: Vec<&'static str> = (0..200)
        .filter_map(|_| pick(endpoints, avoid).ok().map(|e| e.addr))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

fn open(e: &Endpoint<()>) {
    e.breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::Failure(Failure::Unavailable));
}

#[test]
fn every_ready_endpoint_gets_picked() {
    let eps = [endpoint("a"), endpoint("b"), endpoint("c")];
    assert_eq!(picks(&eps, &[]), ["a", "b", "c"]);
}

#[test]
fn a_retry_avoids_the_endpoint_it_failed_on_while_others_remain() {
    let eps = [endpoint("a"), endpoint("b")];
    assert_eq!(picks(&eps, &["a"]), ["b"]);
    assert_eq!(picks(&eps, &["a", "b"]), ["a", "b"]);
    // Avoiding is a preference: a lone endpoint is still used.
    assert_eq!(picks(&eps[..1], &["a"]), ["a"]);
}

#[test]
fn not_serving_and_open_endpoints_are_out_of_rotation() {
    let eps = [endpoint("a"), endpoint("b"), endpoint("c")];
    eps[0]
        .health
        .force(crate::resilience::health_watch::Health::NotServing);
    open(&eps[1]);
    assert_eq!(picks(&eps, &[]), ["c"]);
    // A retry that failed on the only one in rotation still prefers health over
    // variety.
    assert_eq!(picks(&eps, &["c"]), ["c"]);
}

#[test]
fn when_none_is_in_rotation_draining_ones_still_serve() {
    let eps = [endpoint("a"), endpoint("b")];
    eps[0]
        .health
        .force(crate::resilience::health_watch::Health::NotServing);
    eps[1]
        .health
        .force(crate::resilience::health_watch::Health::NotServing);
    assert_eq!(picks(&eps, &[]), ["a", "b"]);
    open(&eps[0]);
    assert_eq!(picks(&eps, &[]), ["b"]);
    open(&eps[1]);
    assert_eq!(pick(&eps, &[]).err(), Some(Some(())));
    assert_eq!(pick::<()>(&[], &[]).err(), Some(None));
}

#[test]
fn the_less_loaded_of_two_wins() {
    let eps = [endpoint("a"), endpoint("b")];
    eps[0].in_flight.store(50, Ordering::Relaxed);
    assert_eq!(picks(&eps, &[]), ["b"]);
    eps[0].in_flight.store(0, Ordering::Relaxed);
    eps[0].observe(1_000_000);
    eps[1].observe(500_000_000);
    assert_eq!(picks(&eps, &[]), ["a"]);
}

#[test]
fn the_set_keeps_known_endpoints_and_stops_removed_ones() {
    let table: Arc<Endpoints<()>> = Endpoints::new(Route::new("test", "t"), "dns:///x:1".into());
    let make = |addr: &'static str| {
        Endpoint::new(
            addr,
            (),
            BreakerState::new(Route::new("test", "t"), addr, &settings(), true),
            Arc::new(EndpointHealth::new()),
            CancellationToken::new(),
        )
    };
    assert!(!table.known.is_cancelled());
    let (added, removed) = table.set_addrs(&["a", "b"], make);
    assert_eq!((added, removed), (vec!["a", "b"], vec![]));
    assert!(table.known.is_cancelled());
    let a = table.snapshot()[0].clone();
    open(&a);
    let (added, removed) = table.set_addrs(&["a", "c"], make);
    assert_eq!((added, removed), (vec!["c"], vec!["b"]));
    let now = table.snapshot();
    assert!(Arc::ptr_eq(&now[0], &a), "a kept with its breaker");
    assert!(now[0].breaker.is_refusing());
    assert_eq!(now[1].addr, "c");
}
