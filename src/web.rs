//! The HTTP side: the axum router — `/healthz`, `/metrics` and the JSON
//! API under `/api/v1` (`crate::api`) — served on `[web] listen` and, for the
//! CLI, on the admin socket.
//!
//! Only this module knows HTTP. [`router`] builds the whole app from a
//! [`WebState`], so tests drive it with `tower::ServiceExt::oneshot` and no
//! socket. Handlers read shared state; they never write the store.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::audit::AuditLog;
use crate::ingest::Ingest;
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
    /// The running collectors (absent in tests that start none).
    pub ingest: Option<Arc<Ingest>>,
    /// Accounting and detection (absent in tests that start none).
    pub dataplane: Option<Arc<crate::dataplane::Dataplane>>,
    /// The mitigation task (absent in tests that start none).
    pub mitigation: Option<crate::mitigation::service::Handle>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", crate::api::routes(state.clone()))
        .with_state(state)
}

/// The same app for the admin socket: whoever can open the socket is the
/// local administrator (the `levee` CLI), no API key needed.
pub fn admin_router(state: WebState) -> Router {
    router(state).layer(axum::Extension(crate::api::Principal::Local))
}

async fn healthz(State(s): State<WebState>) -> impl IntoResponse {
    // The first line is what liveness checks read; the second says whose
    // traffic may move routes, so an operator sees a detect-only box.
    let trust = match &s.ingest {
        Some(i) if !i.exporters_trusted && !i.listeners.is_empty() => {
            "mitigation: on local capture only; flow export is detected and alerted on, \
             not trusted to move routes (set [collector] allowed_exporters or \
             [mitigation] trust_any_exporter)\n"
        }
        _ => "",
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("ok\n{trust}"),
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
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&s, size),
    )
}
