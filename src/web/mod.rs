//! The HTTP side: the axum router — `/healthz`, `/metrics` and the JSON
//! API under `/api/v1` (`web::api`) — served on `[web] listen` (with
//! `/metrics` on `[web] metrics_listen` when that is set) and, for the
//! CLI, on the admin socket.
//!
//! Only this module knows HTTP. [`router`] builds the whole app from a
//! [`WebState`], so tests drive it with `tower::ServiceExt::oneshot` and no
//! socket; [`serve`] serves it on a listener with the timeouts and
//! connection caps that keep slow clients from holding it. Handlers read
//! shared state; they never write the store.
//!
//! Every TCP request's Host header is checked (DNS rebinding: a page a
//! browser loaded from an attacker's name must not reach levee through
//! it): IP addresses, `localhost` and `[web] host_names` are answered,
//! other names get 421. `/metrics` needs `[web] metrics_token` (or an API
//! key) when one is set.

pub mod api;
pub mod failures;
pub mod metrics;
pub mod serve;
pub mod state;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use api::Principal;

pub use failures::{AuthFailures, Refusal};
pub use state::{ControlCounters, WebState, COMMIT, VERSION};

/// The app for `[web] listen`: `/healthz`, the API and — unless `[web]
/// metrics_listen` moves it there — `/metrics`.
pub fn router(state: WebState) -> Router {
    let mut r = Router::new().route("/healthz", get(healthz));
    if state.web.metrics_listen.is_none() {
        r = r.route("/metrics", get(metrics));
    }
    finish(r.nest("/api/v1", api::routes(state.clone())), state)
}

/// The app for `[web] metrics_listen`: `/healthz` and `/metrics` only.
pub fn metrics_router(state: WebState) -> Router {
    finish(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics)),
        state,
    )
}

/// The same app for the admin socket: whoever can open the socket is the
/// local administrator (the `levee` CLI), no API key needed.
pub fn admin_router(state: WebState) -> Router {
    finish(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .nest("/api/v1", api::routes(state.clone())),
        state,
    )
    .layer(Extension(Principal::Local))
}

/// The layers every app has: the Host check (TCP only) and the request
/// timeout.
fn finish(r: Router<WebState>, state: WebState) -> Router {
    let timeout = state.web.request_timeout;
    r.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        check_host,
    ))
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        timeout,
    ))
    .with_state(state)
}

/// Whether a Host header names levee as it may be named: an IP address
/// (no DNS, so no rebinding), `localhost` (and `*.localhost`), or one of
/// `names`. The port, if any, is not checked.
pub fn host_allowed(host: &str, names: &[String]) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((ip, _)) => return ip.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        }
    };
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || names.contains(&name)
}

/// Refuses (421) a TCP request whose Host header names another host.
async fn check_host(State(s): State<WebState>, req: Request, next: Next) -> Response {
    if req.extensions().get::<Principal>().is_none() {
        if let Some(host) = req.headers().get(header::HOST) {
            let ok = host
                .to_str()
                .is_ok_and(|h| host_allowed(h, &s.web.host_names));
            if !ok {
                s.counters.host_refused.fetch_add(1, Ordering::Relaxed);
                return (
                    StatusCode::MISDIRECTED_REQUEST,
                    axum::Json(serde_json::json!({
                        "error": "this Host is not one levee answers to; add it to [web] host_names"
                    })),
                )
                    .into_response();
            }
        }
    }
    next.run(req).await
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
        Some(i) if i.any_exporter_trusted && !i.listeners.is_empty() => {
            "mitigation: flow export from any source may move routes \
             ([mitigation] trust_any_exporter = true): a forged datagram can announce a rule\n"
        }
        _ => "",
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("ok\n{trust}"),
    )
}

/// Whether a `/metrics` request may read: always on the admin socket and
/// when no token is set; otherwise with the token or a valid API key.
async fn metrics_allowed(
    s: &WebState,
    headers: &HeaderMap,
    local: bool,
    peer: Option<SocketAddr>,
) -> bool {
    let Some(token) = s.web.metrics_token.clone() else {
        return true;
    };
    if local {
        return true;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned());
    if let Some(given) = given {
        if crate::apikeys::constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            return true;
        }
        let store = s.store.clone();
        let g = given.clone();
        if tokio::task::spawn_blocking(move || crate::apikeys::check(&store, &g).is_ok())
            .await
            .unwrap_or(false)
        {
            return true;
        }
        let id = crate::apikeys::token_id(&given);
        s.auth_failures
            .record(peer.map(|p| p.ip()), Refusal::MetricsToken, id);
    } else {
        s.auth_failures
            .record(peer.map(|p| p.ip()), Refusal::MetricsToken, None);
    }
    false
}

async fn metrics(
    State(s): State<WebState>,
    headers: HeaderMap,
    local: Option<Extension<Principal>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    if !metrics_allowed(&s, &headers, local.is_some(), peer).await {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            "/metrics needs its token ([web] metrics_token) or an API key: Authorization: Bearer …\n",
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"levee-metrics\""),
        );
        return r;
    }
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
        metrics::render(&s, size),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_answered_by_address_loopback_name_or_configured_name() {
        let names = vec!["levee.example.net".to_owned()];
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "192.0.2.7:8080",
            "localhost:8080",
            "LOCALHOST",
            "grafana.localhost",
            "levee.example.net",
            "Levee.Example.Net.:443",
        ] {
            assert!(host_allowed(ok, &names), "{ok}");
        }
        for refused in [
            "attacker.example",
            "attacker.example:8080",
            "levee.example.net.attacker.example",
            "localhost.attacker.example",
            "[not-an-address]:80",
            "",
        ] {
            assert!(!host_allowed(refused, &names), "{refused}");
        }
    }
}
