//! Per-email throttling of failed logins, against online password guessing.
//!
//! A GCRA limiter (governor) per normalised email allows `burst` failures, then
//! `per_minute` more per minute. Once a failure is over the limit the email is locked until
//! the limiter would accept the next failure, and *every* login for it — even one with the
//! right password — is refused with RESOURCE_EXHAUSTED during that time, so a guesser
//! cannot learn that a guess was right by getting past the lock. Unknown emails are
//! throttled the same way, so the throttle does not reveal which emails exist.
//!
//! State is per process: a replica set multiplies the allowance by its size, which is
//! acceptable for a guess-rate limit (it still caps guesses at a small constant rate).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Past this many tracked emails, forgotten state is pruned on the next failure.
const PRUNE_ABOVE: usize = 10_000;

pub struct LoginThrottle {
    limiter: DefaultKeyedRateLimiter<String>,
    locked_until: Mutex<HashMap<String, Instant>>,
}

impl LoginThrottle {
    /// `burst` failures at once, `per_minute` more each minute (both at least 1).
    pub fn new(burst: u32, per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            limiter: RateLimiter::keyed(quota),
            locked_until: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `email` may attempt a login now.
    pub fn allowed(&self, email: &str) -> bool {
        let locked = self.locked_until.lock().unwrap_or_else(|p| p.into_inner());
        locked
            .get(email)
            .is_none_or(|until| Instant::now() >= *until)
    }

    /// Records a failed login for `email`; false when it went over the limit (the email is
    /// then locked until the limiter has room again).
    pub fn record_failure(&self, email: &str) -> bool {
        let key = email.to_string();
        let mut locked = self.locked_until.lock().unwrap_or_else(|p| p.into_inner());
        if locked.len() > PRUNE_ABOVE {
            let now = Instant::now();
            locked.retain(|_, until| *until > now);
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&key) {
            Ok(()) => true,
            Err(not_until) => {
                let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
                locked.insert(key, Instant::now() + wait);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_burst_per_email() {
        let t = LoginThrottle::new(3, 1);
        for _ in 0..3 {
            assert!(t.allowed("a@x.io"));
            assert!(t.record_failure("a@x.io"));
        }
        assert!(!t.record_failure("a@x.io"));
        assert!(!t.allowed("a@x.io"));
        assert!(t.allowed("b@x.io"), "other emails are unaffected");
    }
}
