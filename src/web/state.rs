//! What the HTTP side's handlers share: the state every request sees,
//! the control plane's counters `/metrics` reports, and the build's
//! version. The router (`web`), the API (`web::api`) and `/metrics`
//! (`web::metrics`) all read it; it reads none of them.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::failures::AuthFailures;
use super::serve;
use crate::audit::AuditLog;
use crate::config::Loaded;
use crate::ingest::Ingest;
use crate::store::Store;

/// Counters the control plane bumps and `/metrics` reports.
#[derive(Debug, Default)]
pub struct ControlCounters {
    pub config_reloads_ok: AtomicU64,
    pub config_reloads_rejected: AtomicU64,
    /// Requests refused for their Host header (421).
    pub host_refused: AtomicU64,
}

/// What the handlers see.
#[derive(Clone)]
pub struct WebState {
    pub started: Instant,
    pub store: Arc<Store>,
    pub audit: Arc<AuditLog>,
    pub counters: Arc<ControlCounters>,
    /// The running collectors (absent in tests that start none).
    pub ingest: Option<Arc<Ingest>>,
    /// Accounting and detection (absent in tests that start none).
    pub dataplane: Option<Arc<crate::dataplane::Dataplane>>,
    /// The mitigation task (absent in tests that start none).
    pub mitigation: Option<crate::mitigation::service::Handle>,
    /// The running configuration (absent in tests that have none).
    pub config: Option<watch::Receiver<Arc<Loaded>>>,
    /// `[web]` as levee started with it (it takes effect at start only).
    pub web: Arc<crate::config::Web>,
    /// Failed authentications: counted, audited per source per minute.
    pub auth_failures: Arc<AuthFailures>,
    /// The connection gates of the listeners, for `/metrics`.
    pub gates: Vec<Arc<serve::Gate>>,
}

impl WebState {
    /// A state for `store` and `audit` with nothing else running (tests).
    pub fn bare(store: Arc<Store>, audit: Arc<AuditLog>) -> WebState {
        WebState {
            started: Instant::now(),
            store,
            audit,
            counters: Arc::default(),
            ingest: None,
            dataplane: None,
            mitigation: None,
            config: None,
            web: Arc::default(),
            auth_failures: Arc::default(),
            gates: Vec::new(),
        }
    }
}

/// The version and commit this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("LEVEE_GIT_COMMIT");
