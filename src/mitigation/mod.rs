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
//! - [`firewall`] — the local firewall level: nftables table `inet levee`,
//!   replaced whole and atomically.
//! - [`deadman`] — `levee deadman`: withdraws levee's routes when levee has
//!   been down too long.

pub mod deadman;
pub mod engine;
pub mod firewall;
pub mod rules;
pub mod service;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use ipnet::IpNet;

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
    /// Other attacked hosts this mitigation protects: a FlowSpec rule
    /// aggregated to fit the budget covers several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covers: Vec<IpAddr>,
    /// A diversion requested from the scrubbing provider's HTTP endpoint
    /// (this URL) rather than announced over BGP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// FlowSpec and firewall: the share of the attack's recent sampled
    /// packets that the host's rules in force match together (updated as
    /// the attack goes on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// For an attack spread over a prefix (DET-6): the prefix it protects
    /// (`host` is then its network address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<IpNet>,
    /// FlowSpec and firewall (MIT-7): how levee watches the rule for harm
    /// to the host's legitimate traffic, or why it cannot ("unknown: …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

/// Whether `t` is one address (/32, /128).
pub fn is_host(t: IpNet) -> bool {
    t.prefix_len() == t.max_prefix_len()
}

/// A target as people read it: the address of a host, else the prefix.
pub fn shown(t: IpNet) -> String {
    if is_host(t) {
        t.addr().to_string()
    } else {
        t.to_string()
    }
}

impl Mitigation {
    /// Whether it protects `host` (its own or one it covers; a prefix's
    /// mitigation protects the hosts inside it).
    pub fn protects(&self, host: IpAddr) -> bool {
        self.host == host
            || self.covers.contains(&host)
            || self.prefix.is_some_and(|p| p.contains(&host))
    }

    /// What it was decided for: the host, or the prefix.
    pub fn target(&self) -> IpNet {
        self.prefix.unwrap_or_else(|| IpNet::from(self.host))
    }

    /// Whether it serves the case of `t` (a host's own or one it covers,
    /// or the prefix's).
    pub fn serves(&self, t: IpNet) -> bool {
        self.target() == t || (is_host(t) && self.covers.contains(&t.addr()))
    }

    /// `"host"` or `"prefix"`.
    pub fn scope(&self) -> &'static str {
        if self.prefix.is_some() {
            "prefix"
        } else {
            "host"
        }
    }

    /// The adapter that carries it out: `nftables`, `gobgp` or `http`.
    pub fn adapter(&self) -> &'static str {
        if self.http.is_some() {
            "http"
        } else {
            adapter(self.level)
        }
    }

    /// Its identity in the intent store and among the mitigations in force.
    pub fn key(&self) -> String {
        key(self.level, &self.route)
    }
}

/// The identity of `route` at `level`: the route's NLRI identity for BGP
/// levels (one NLRI, one route), prefixed for the local firewall, whose
/// rules share the FlowSpec model but not gobgpd's RIB.
pub fn key(level: Level, route: &Route) -> String {
    match level {
        Level::Firewall => format!("firewall {}", route.key()),
        _ => route.key(),
    }
}

/// The JSON body of a scrubbing provider call.
pub fn provider_request(m: &Mitigation, divert: bool) -> serde_json::Value {
    serde_json::json!({
        "action": if divert { "divert" } else { "undivert" },
        "prefix": m.route.prefix().to_string(),
        "host": m.host.to_string(),
        "scope": m.scope(),
        "hostgroup": m.hostgroup,
        "incident": m.incident,
        "mitigation": m.id,
        "expires": crate::report::rfc3339_ms(m.expires_ms),
    })
}

/// Why a manual mitigation (announce or withdraw) was not carried out.
///
/// The API answers each kind with its own status (`api.rs`): the request
/// names nothing levee protects or asks for what levee cannot do as
/// configured (422), a guard or the state of what is in force refuses it
/// (409), there is no such mitigation (404), or levee cannot carry it out
/// now (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The host is in no hostgroup: levee protects only its hostgroups.
    #[error("{0} is in no hostgroup: levee protects only its hostgroups")]
    NotProtected(IpAddr),
    /// A guard refused the route (never-mitigate list, a prefix too short
    /// or outside the protected hostgroups) or the level's budget is full.
    #[error("{0}")]
    Guard(String),
    /// The same route is in force already.
    #[error("already in force: {0}")]
    AlreadyInForce(String),
    /// The level cannot act as levee is configured: the firewall is off,
    /// RTBH has no next hop, scrubbing has nothing to steer with.
    #[error("{0}")]
    NotConfigured(String),
    /// The rule asked for is not one levee can carry out (nft cannot
    /// express it, or it does not cover the host).
    #[error("{0}")]
    Invalid(String),
    /// No mitigation with that id is in force.
    #[error("no mitigation {0} is in force")]
    NotFound(String),
    /// levee cannot carry it out now: the mitigation task has stopped, or
    /// gobgpd is not connected for a route that must go through it.
    #[error("{0}")]
    Unavailable(String),
}

/// The adapter a level is carried out by.
pub fn adapter(level: Level) -> &'static str {
    match level {
        Level::Firewall => "nftables",
        Level::Flowspec | Level::Rtbh | Level::Scrubbing => "gobgp",
    }
}
