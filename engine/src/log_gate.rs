//! A log line that would repeat under load (one per refused write, one per
//! copy turned away) is written at most once per period.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Opens at most once per `every`; the first call opens it.
pub struct LogGate {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl LogGate {
    pub const fn new(every: Duration) -> LogGate {
        LogGate {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether the line may be written now; if so, the period starts again.
    pub fn open(&self) -> bool {
        // A panic while holding it leaves only a time stamp behind.
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < self.every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_once_per_period() {
        let gate = LogGate::new(Duration::from_millis(200));
        assert!(gate.open());
        assert!(!gate.open());
        std::thread::sleep(Duration::from_millis(250));
        assert!(gate.open());
        assert!(!gate.open());
    }
}
