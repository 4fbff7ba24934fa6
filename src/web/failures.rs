//! Failed authentications: counted for `/metrics` at once, and audited —
//! aggregated per source address per minute, so that a guessing attacker
//! leaves a record of every source and attempt count but cannot flood the
//! chain (which keeps every entry for ever).
//!
//! A failure is a request without a valid credential (401: no key, a
//! malformed, unknown, wrong or revoked key, a wrong `/metrics` token) or
//! with a key whose scope does not allow what it asked (403). The entry,
//! `auth.failure` by `system:web` with the source address as target, says
//! how many, why (by reason), which key ids were named (ids are public;
//! the secret tried is never recorded), and the first and last time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::json;

use crate::apikeys::AuthFailure;
use crate::audit::{Actor, AuditLog};

/// Sources tracked per window at most; failures from further ones are
/// aggregated under the source `other`.
const MAX_SOURCES: usize = 1024;
/// Key ids named per source and window at most.
const MAX_IDS: usize = 16;

/// Why a request was refused, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid credential (401).
    Unauthenticated(AuthFailure),
    /// A valid key whose scope does not allow the request (403).
    Forbidden,
    /// A wrong or missing `/metrics` token (401).
    MetricsToken,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthenticated(f) => f.as_str(),
            Refusal::Forbidden => "forbidden",
            Refusal::MetricsToken => "metrics_token",
        }
    }

    /// Every reason, for `/metrics` (each always present, 0 or more).
    pub fn all() -> impl Iterator<Item = Refusal> {
        AuthFailure::ALL
            .into_iter()
            .map(Refusal::Unauthenticated)
            .chain([Refusal::Forbidden, Refusal::MetricsToken])
    }
}

struct Pending {
    failures: u64,
    reasons: BTreeMap<&'static str, u64>,
    key_ids: BTreeSet<String>,
    first: SystemTime,
    last: SystemTime,
}

/// The counts and the window being gathered.
#[derive(Default)]
pub struct AuthFailures {
    by_reason: Mutex<BTreeMap<&'static str, u64>>,
    total: AtomicU64,
    pending: Mutex<BTreeMap<String, Pending>>,
}

impl std::fmt::Debug for AuthFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFailures")
            .field("total", &self.total.load(Ordering::Relaxed))
            .finish()
    }
}

impl AuthFailures {
    /// Counts a refusal from `source` (none on the admin socket, which
    /// never refuses) naming `key_id` when the token had a key's form.
    pub fn record(&self, source: Option<IpAddr>, why: Refusal, key_id: Option<&str>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self
            .by_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(why.as_str())
            .or_insert(0) += 1;
        let now = levee_collectors::clock::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut source = source.map_or_else(|| "local".to_owned(), |ip| ip.to_string());
        if !pending.contains_key(&source) && pending.len() >= MAX_SOURCES {
            source = "other".to_owned();
        }
        let p = pending.entry(source).or_insert_with(|| Pending {
            failures: 0,
            reasons: BTreeMap::new(),
            key_ids: BTreeSet::new(),
            first: now,
            last: now,
        });
        p.failures += 1;
        *p.reasons.entry(why.as_str()).or_insert(0) += 1;
        if let Some(id) = key_id {
            if p.key_ids.len() < MAX_IDS {
                p.key_ids.insert(id.to_owned());
            }
        }
        p.last = now;
    }

    /// Refusals counted since start, by reason.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.by_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Audits the window gathered so far — one `auth.failure` entry per
    /// source — and starts a new one. Returns how many entries it wrote.
    pub fn flush(&self, audit: &AuditLog) -> usize {
        let window = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut written = 0;
        for (source, p) in window {
            let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
            let details = json!({
                "failures": p.failures,
                "reasons": p.reasons,
                "key_ids": p.key_ids,
                "first": time(p.first),
                "last": time(p.last),
            });
            match audit.append(Actor::System("web"), "auth.failure", &source, details) {
                Ok(_) => written += 1,
                Err(e) => {
                    tracing::error!(error = %e, %source, "Cannot audit failed authentications")
                }
            }
            tracing::warn!(
                %source,
                failures = p.failures,
                "Failed authentications in the last minute"
            );
        }
        written
    }
}
