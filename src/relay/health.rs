//! What `/health` reports beyond "serving": whether the database still takes writes.
//!
//! The writer reports every write batch's outcome here ([`Health::write_failed`],
//! [`Health::write_succeeded`]); while the last batch failed, `/health` answers 503 with
//! the reason, and the `axon_health_failing{reason}` gauge is 1. The first batch that
//! commits again clears it — no restart, no operator action.

use std::sync::Mutex;

use prometheus::IntGaugeVec;

/// The reason label of a failing database in `axon_health_failing`.
pub const STORAGE: &str = "storage";

/// The relay's health beyond serving or draining.
pub struct Health {
    failing: Mutex<Option<String>>,
    gauge: IntGaugeVec,
}

impl Health {
    /// Healthy, reporting into `gauge` (labelled by reason).
    pub fn new(gauge: IntGaugeVec) -> Health {
        gauge.with_label_values(&[STORAGE]).set(0);
        Health { failing: Mutex::new(None), gauge }
    }

    fn set(&self, reason: Option<String>) {
        let failing = reason.is_some();
        match self.failing.lock() {
            Ok(mut slot) => *slot = reason,
            Err(poisoned) => *poisoned.into_inner() = reason,
        }
        self.gauge.with_label_values(&[STORAGE]).set(i64::from(failing));
    }

    /// A write batch failed: nothing of it was stored.
    pub fn write_failed(&self, error: &dyn std::fmt::Display) {
        self.set(Some(format!("writes are failing: {error}")));
    }

    /// A write batch committed.
    pub fn write_succeeded(&self) {
        // Cheap when healthy: one uncontended lock, no allocation.
        let failing = match self.failing.lock() {
            Ok(slot) => slot.is_some(),
            Err(poisoned) => poisoned.into_inner().is_some(),
        };
        if failing {
            self.set(None);
        }
    }

    /// Why the relay is unhealthy, if it is.
    pub fn problem(&self) -> Option<String> {
        match self.failing.lock() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
