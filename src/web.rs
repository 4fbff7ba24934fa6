//! The HTTP side: the axum router with `/healthz` and `/metrics` (UI-2).
//!
//! Only this module knows HTTP. [`router`] builds the whole app from a
//! [`WebState`], so tests drive it with `tower::ServiceExt::oneshot` and no
//! socket. Handlers read shared state; they never write the store.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::audit::AuditLog;
use crate::store::Store;

/// Counters the control plane bumps and `/metrics` reports.
#[derive(Debug, Default)]
pub struct Counters {
    pub config_reloads_ok: AtomicU64,
    pub config_reloads_rejected: AtomicU64,
}

/// What the handlers see.
#[derive(Clone)]
pub struct WebState {
    pub started: Instant,
    pub store: Arc<Store>,
    pub audit: Arc<AuditLog>,
    pub counters: Arc<Counters>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
}

/// The version and commit this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("LEVEE_GIT_COMMIT");

async fn metrics(State(s): State<WebState>) -> impl IntoResponse {
    // Store size walks a directory; keep it off the async workers.
    let store = s.store.clone();
    let size = tokio::task::spawn_blocking(move || store.size_bytes())
        .await
        .unwrap_or(0);
    let (head_seq, head_hash) = s.audit.head();
    let mut out = String::with_capacity(1024);
    let mut gauge = |name: &str, help: &str, labels: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {value}"
        );
    };
    gauge(
        "levee_build_info",
        "Version and commit of the running levee.",
        &format!("{{version=\"{VERSION}\",commit=\"{COMMIT}\"}}"),
        "1".into(),
    );
    gauge(
        "levee_uptime_seconds",
        "Seconds since levee started.",
        "",
        format!("{:.3}", s.started.elapsed().as_secs_f64()),
    );
    gauge(
        "levee_store_size_bytes",
        "Bytes the RocksDB store occupies on disk.",
        "",
        size.to_string(),
    );
    gauge(
        "levee_audit_head_seq",
        "Sequence number of the newest audit entry.",
        "",
        head_seq.to_string(),
    );
    gauge(
        "levee_audit_head_info",
        "SHA-256 of the newest audit entry, to anchor with `levee audit verify --head`.",
        &format!("{{seq=\"{head_seq}\",sha256=\"{head_hash}\"}}"),
        "1".into(),
    );
    let _ = writeln!(
        out,
        "# HELP levee_config_reloads_total Config reloads by result.\n# TYPE levee_config_reloads_total counter\n\
         levee_config_reloads_total{{result=\"ok\"}} {}\nlevee_config_reloads_total{{result=\"rejected\"}} {}",
        s.counters.config_reloads_ok.load(Ordering::Relaxed),
        s.counters.config_reloads_rejected.load(Ordering::Relaxed),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
