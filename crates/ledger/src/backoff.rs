//! Exponential back-off between attempts at something that failed (the database, the spool), so
//! that an outage costs a retry now and then rather than a busy loop of errors.

use std::time::{Duration, Instant};

/// The first delay after a failure; each further failure doubles it, up to the maximum.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub(crate) struct Backoff {
    max: Duration,
    delay: Duration,
    next_try: Option<Instant>,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            max: max.max(FIRST_BACKOFF),
            delay: FIRST_BACKOFF,
            next_try: None,
        }
    }

    /// How long until the next attempt is due; zero when it is.
    pub fn remaining(&self) -> Duration {
        self.next_try.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        })
    }

    pub fn ready(&self) -> bool {
        self.remaining().is_zero()
    }

    pub fn failed(&mut self) {
        self.next_try = Some(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(self.max);
    }

    pub fn succeeded(&mut self) {
        self.delay = FIRST_BACKOFF;
        self.next_try = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_reset_on_success() {
        let mut backoff = Backoff::new(Duration::from_millis(150));
        assert!(backoff.ready());
        backoff.failed();
        assert!(!backoff.ready() && backoff.remaining() <= FIRST_BACKOFF);
        backoff.failed();
        backoff.failed();
        assert_eq!(backoff.delay, Duration::from_millis(150));
        backoff.succeeded();
        assert!(backoff.ready());
        assert_eq!(backoff.delay, FIRST_BACKOFF);
    }
}
