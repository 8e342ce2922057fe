//! Circuit breakers (`extended_paths.circuit_breakers`), with the rules of
//! the rate breaker Tyk uses (rubyist/circuitbreaker's `NewRateBreaker`):
//! over the last `WINDOW`, once at least `samples` requests were counted
//! and the share that failed (an upstream error or a 5xx) reaches
//! `threshold_percent`, the breaker trips. Tripped, requests are refused
//! (503 "Service temporarily unavailable.") until `return_to_service_after`
//! seconds pass, except one trial request at a time after a short back-off
//! (half-open; `disable_half_open_state` turns that off): its success
//! closes the breaker, its failure trips it again.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The span over which failures are counted (rubyist's default).
pub const WINDOW: Duration = Duration::from_secs(10);
/// Wait before a half-open trial, doubling after each failed one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Breaker {
    threshold: f64,
    samples: usize,
    return_after: Duration,
    half_open: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// (when, failed) of recent outcomes, oldest first.
    outcomes: VecDeque<(Instant, bool)>,
    tripped: Option<Trip>,
}

#[derive(Debug, Clone, Copy)]
struct Trip {
    at: Instant,
    /// When the next half-open trial may go.
    next_trial: Instant,
    backoff: Duration,
    /// A trial is in flight.
    trying: bool,
}

impl Breaker {
    pub fn new(threshold: f64, samples: i64, return_after_secs: i64, half_open: bool) -> Breaker {
        Breaker {
            threshold,
            samples: usize::try_from(samples).unwrap_or(0).max(1),
            return_after: Duration::from_secs(u64::try_from(return_after_secs).unwrap_or(0)),
            half_open,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a request go to the upstream now?
    pub fn ready(&self, now: Instant) -> bool {
        let mut st = self.state();
        let Some(trip) = st.tripped.as_mut() else {
            return true;
        };
        if now.duration_since(trip.at) >= self.return_after {
            // Back in service (Tyk resets the breaker after the wait).
            st.tripped = None;
            st.outcomes.clear();
            return true;
        }
        if self.half_open && !trip.trying && now >= trip.next_trial {
            trip.trying = true;
            return true;
        }
        false
    }

    /// Counts an outcome; `failed`: an upstream error or a 5xx.
    pub fn record(&self, failed: bool, now: Instant) {
        let mut st = self.state();
        if let Some(trip) = st.tripped.as_mut() {
            if !trip.trying {
                return;
            }
            if failed {
                trip.trying = false;
                trip.backoff = (trip.backoff * 2).min(Duration::from_secs(60));
                trip.next_trial = now + trip.backoff;
            } else {
                st.tripped = None;
                st.outcomes.clear();
                log::info!("circuit breaker closed after a successful trial");
            }
            return;
        }
        st.outcomes.push_back((now, failed));
        while st
            .outcomes
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            st.outcomes.pop_front();
        }
        let total = st.outcomes.len();
        let failures = st.outcomes.iter().filter(|(_, f)| *f).count();
        if total >= self.samples && failures as f64 / total as f64 >= self.threshold {
            log::warn!(
                "circuit breaker tripped: {failures} of the last {total} requests failed; refusing for {} s",
                self.return_after.as_secs()
            );
            st.tripped = Some(Trip {
                at: now,
                next_trial: now + FIRST_BACKOFF,
                backoff: FIRST_BACKOFF,
                trying: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_on_the_failure_rate_after_enough_samples() {
        let b = Breaker::new(0.5, 4, 30, false);
        let t = Instant::now();
        b.record(true, t);
        b.record(true, t);
        b.record(true, t);
        assert!(b.ready(t), "3 samples are fewer than 4");
        b.record(false, t);
        assert!(!b.ready(t), "3 of 4 failed");
        assert!(!b.ready(t + Duration::from_secs(29)));
        assert!(b.ready(t + Duration::from_secs(30)));
    }

    #[test]
    fn a_half_open_trial_closes_or_trips_again() {
        let b = Breaker::new(0.5, 2, 60, true);
        let t = Instant::now();
        b.record(true, t);
        b.record(true, t);
        assert!(!b.ready(t));
        let trial = t + FIRST_BACKOFF;
        assert!(b.ready(trial), "one trial after the back-off");
        assert!(!b.ready(trial), "only one at a time");
        b.record(true, trial);
        assert!(!b.ready(trial + FIRST_BACKOFF), "the back-off doubled");
        let second = trial + FIRST_BACKOFF * 2;
        assert!(b.ready(second));
        b.record(false, second);
        assert!(b.ready(second), "closed again");
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let b = Breaker::new(0.5, 2, 60, false);
        let t = Instant::now();
        b.record(true, t);
        b.record(false, t + WINDOW + Duration::from_secs(1));
        assert!(b.ready(t + WINDOW + Duration::from_secs(1)));
    }
}
