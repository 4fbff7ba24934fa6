//! The wall clock, read in one place for the whole workspace.
//!
//! levee has two clocks: the input's (a capture's timestamps, what `levee
//! replay` and the pipeline run on) and the wall clock (`levee run`, the
//! audit chain, API keys, TTLs). Only this module reads the wall clock
//! (`clippy.toml` bans `SystemTime::now` elsewhere), so where time comes
//! from is always visible at the call: `clock::now_ms()` is the wall.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, on the wall clock.
#[allow(clippy::disallowed_methods)] // the one place that may
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Now as Unix milliseconds (0 on a clock set before 1970).
pub fn now_ms() -> u64 {
    unix_ms(now())
}

/// `t` as Unix milliseconds (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now as Unix seconds (0 on a clock set before 1970).
pub fn now_s() -> u64 {
    now_ms() / 1000
}
