//! The wall clock, in the unit the protocol uses (unix seconds).

use std::time::{SystemTime, UNIX_EPOCH};

/// Current unix time in seconds (0 if the system clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}
