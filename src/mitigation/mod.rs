//! Mitigation (MIT-1…12): from incidents to routes at the border routers.
//!
//! - [`rules`] — what each level would announce for an incident (FlowSpec
//!   rules from the classification, RTBH and scrubbing routes).
//! - [`engine`] — the escalation ladder, its guards and budgets, TTLs and
//!   stepping down; pure, driven by incidents and time.
//! - [`service`] — the control-plane task that carries the engine's
//!   decisions out through gobgpd: intent first (RocksDB, durable), then
//!   the route; every step in the mitigation log and the audit chain;
//!   reconciliation of gobgpd's RIB with the intents at start-up, on every
//!   reconnection and periodically.

pub mod engine;
pub mod rules;
pub mod service;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use levee_bgp::Route;
use serde::{Deserialize, Serialize};

use crate::config::Level;

/// Who decides automatic mitigations; the engine renews, escalates and
/// steps down only these. Anyone else's are manual: kept until withdrawn or
/// expired.
pub const AUTO: &str = "system:escalator";

/// One route levee has decided to have announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mitigation {
    pub id: String,
    pub host: IpAddr,
    pub hostgroup: String,
    /// The incident that caused it (none for manual ones).
    pub incident: Option<String>,
    pub level: Level,
    pub route: Route,
    /// Unix ms.
    pub created_ms: u64,
    /// Withdrawn at this time unless renewed (Unix ms).
    pub expires_ms: u64,
    /// `system:escalator`, `user:…` or `apikey:…`.
    pub decided_by: String,
    pub reason: String,
    /// Evaluated and logged, never sent (shadow mode or dry run).
    pub shadow: bool,
}

/// The adapter a level is carried out by.
pub fn adapter(level: Level) -> &'static str {
    match level {
        Level::Firewall => "nftables",
        Level::Flowspec | Level::Rtbh | Level::Scrubbing => "gobgp",
    }
}
