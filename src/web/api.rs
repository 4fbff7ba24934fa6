//! The JSON API under `/api/v1` (UI-2): authentication, and the handlers.
//!
//! Who may call: a bearer API key (`Authorization: Bearer lvk_…`; read keys
//! may GET, write keys may also change things, admin keys may also manage
//! keys and read the configuration), or anyone who can open the admin
//! socket `data_dir/levee.sock` (mode 0600: root and levee's user), which
//! is how the `levee` CLI talks to a running levee. Session cookies for
//! the web UI come with user accounts (their roles map onto the scopes:
//! see `apikeys::Scope`). Every refusal (401, 403) is counted and audited
//! (`crate::web::failures`).
//!
//! Errors are JSON `{"error": "…"}` with the right status; store and
//! internal errors are a 500 whose details go to the log, not the client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use super::failures::Refusal;
use super::state::WebState;
use crate::accounting::class;
use crate::apikeys::{self, KeyError, Scope};
use crate::audit::Actor;
use crate::store::{Cf, Subject};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Through the admin socket.
    Local,
    Key(apikeys::ApiKey),
}

impl Principal {
    fn actor(&self) -> Actor<'_> {
        match self {
            Principal::Local => Actor::System("cli"),
            Principal::Key(k) => Actor::ApiKey(&k.id),
        }
    }
}

/// An API error: a status and a message for the client.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"levee\""
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            );
        }
        r
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            KeyError::BadName => ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            other => internal(other),
        }
    }
}

impl From<crate::mitigation::Error> for ApiError {
    /// 422: the request names a host levee does not protect, or asks for
    /// what the level cannot do as configured or at all; 409: a guard, a
    /// budget or what is in force refuses it (another time it may pass);
    /// 404: no such mitigation; 503: levee cannot carry it out now.
    fn from(e: crate::mitigation::Error) -> Self {
        use crate::mitigation::Error as E;
        let status = match &e {
            E::NotProtected(_) | E::NotConfigured(_) | E::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            E::Guard(_) | E::AlreadyInForce(_) => StatusCode::CONFLICT,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

/// The largest request body the API reads. Its bodies are a few hundred
/// bytes; anything near this is not a request levee understands.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body, or the API's error for it: 413 over [`BODY_LIMIT`], 415
/// without `Content-Type: application/json`, 400 for text that is not
/// JSON, 422 for JSON that is not the request (a missing, unknown or
/// mistyped field).
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match b {
        Ok(Json(t)) => Ok(t),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {BODY_LIMIT} bytes"),
        )),
        Err(e) => Err(ApiError(e.status(), e.body_text())),
    }
}

/// A query string, or a 400 naming what is wrong with it.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "API request failed");
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error".to_owned(),
    )
}

/// The `/api/v1` routes (authentication applied by [`authenticate`]).
pub fn routes(state: WebState) -> Router<WebState> {
    let protected = Router::<WebState>::new()
        .route("/exporters", get(exporters))
        .route("/apikeys", get(list_keys).post(create_key))
        .route("/apikeys/{id}", delete(revoke_key))
        .route("/incidents", get(incidents))
        .route("/incidents/{id}", get(incident))
        .route("/hosts/top", get(top_hosts))
        .route("/hosts/{addr}", get(host))
        .route("/hostgroups", get(hostgroups))
        .route("/hostgroups/{name}", get(hostgroup))
        .route("/mitigations", get(mitigations).post(announce))
        .route("/mitigations/{id}", delete(withdraw))
        .route("/audit", get(audit))
        .route("/config", get(config_view))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::<WebState>::new()
        .route("/openapi.json", get(openapi))
        .merge(protected)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such API path".to_owned()) })
}

/// The client's address (TCP; none on the admin socket).
fn source(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Finds the principal: set already (admin socket), or a valid bearer key
/// whose scope allows the method. Refusals are counted and audited.
pub async fn authenticate(
    State(s): State<WebState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.extensions().get::<Principal>().is_none() {
        let from = source(&req);
        let refuse = |why: apikeys::AuthFailure, id: Option<&str>| {
            s.auth_failures
                .record(from, Refusal::Unauthenticated(why), id);
        };
        let Some(token) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned())
        else {
            refuse(apikeys::AuthFailure::Missing, None);
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "an API key is required (Authorization: Bearer …)".to_owned(),
            ));
        };
        let store = s.store.clone();
        let t = token.clone();
        let key = match tokio::task::spawn_blocking(move || apikeys::check(&store, &t))
            .await
            .map_err(internal)?
        {
            Ok(k) => k,
            Err(why) => {
                refuse(why, apikeys::token_id(&token));
                return Err(ApiError(
                    StatusCode::UNAUTHORIZED,
                    "invalid or revoked API key".to_owned(),
                ));
            }
        };
        let reading = matches!(*req.method(), Method::GET | Method::HEAD);
        if !reading && key.scope < Scope::Write {
            s.auth_failures
                .record(from, Refusal::Forbidden, Some(&key.id));
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "this API key may only read".to_owned(),
            ));
        }
        req.extensions_mut().insert(Principal::Key(key));
        if let Some(ip) = from {
            req.extensions_mut().insert(Source(ip));
        }
    }
    Ok(next.run(req).await)
}

/// The address a key's request came from (for refusals the handlers count).
#[derive(Debug, Clone, Copy)]
pub struct Source(pub std::net::IpAddr);

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

/// One exporter as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ExporterView {
    pub address: String,
    /// Datagrams and records by protocol (only protocols seen).
    pub datagrams: std::collections::BTreeMap<String, u64>,
    pub records: std::collections::BTreeMap<String, u64>,
    /// Decode errors by protocol and kind (only non-zero).
    pub errors: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    pub template_misses: u64,
    pub sequence_lost: u64,
    pub exporter_drops: u64,
    pub clock_skew: u64,
    /// The longest flow its records reported, seconds: about its active
    /// timeout, which bounds how late an attack in long flows is seen.
    #[serde(default)]
    pub longest_flow_s: u16,
    /// RFC 3339 time of the last datagram.
    pub last_seen: Option<String>,
}

async fn exporters(State(s): State<WebState>) -> Json<Vec<ExporterView>> {
    use levee_collectors::{ErrorKind, Protocol};
    let Some(ingest) = &s.ingest else {
        return Json(Vec::new());
    };
    let views = ingest
        .exporters()
        .into_iter()
        .map(|(ip, c)| {
            let mut v = ExporterView {
                address: ip.to_string(),
                datagrams: Default::default(),
                records: Default::default(),
                errors: Default::default(),
                template_misses: c.template_misses,
                sequence_lost: c.lost,
                exporter_drops: c.exporter_drops,
                clock_skew: c.clock_skew,
                longest_flow_s: c.longest_flow_s,
                last_seen: (c.last_seen_ms > 0).then(|| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.last_seen_ms),
                    )
                    .to_string()
                }),
            };
            for p in Protocol::ALL {
                if c.datagrams[p.index()] > 0 {
                    v.datagrams
                        .insert(p.as_str().to_owned(), c.datagrams[p.index()]);
                    v.records
                        .insert(p.as_str().to_owned(), c.records[p.index()]);
                }
                for k in ErrorKind::ALL {
                    let n = c.errors[p.index()][k.index()];
                    if n > 0 {
                        v.errors
                            .entry(p.as_str().to_owned())
                            .or_default()
                            .insert(k.as_str().to_owned(), n);
                    }
                }
            }
            v
        })
        .collect();
    Json(views)
}

async fn list_keys(
    State(s): State<WebState>,
    Extension(who): Extension<Principal>,
    from: Option<Extension<Source>>,
) -> Result<Json<Vec<apikeys::ApiKey>>, ApiError> {
    admin_only(&s, &who, from)?;
    let store = s.store.clone();
    let keys = tokio::task::spawn_blocking(move || apikeys::list(&store))
        .await
        .map_err(internal)??;
    Ok(Json(keys))
}

#[derive(Debug, Deserialize)]
pub struct NewKey {
    pub name: String,
    pub scope: Scope,
}

/// A key just made, with the token shown this once.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: apikeys::ApiKey,
    pub token: String,
}

async fn create_key(
    State(s): State<WebState>,
    Extension(who): Extension<Principal>,
    from: Option<Extension<Source>>,
    new: Result<Json<NewKey>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    admin_only(&s, &who, from)?;
    let new = body(new)?;
    let audit = s.audit.clone();
    let (key, token) = tokio::task::spawn_blocking(move || {
        apikeys::create(&audit, who.actor(), &new.name, new.scope)
    })
    .await
    .map_err(internal)??;
    Ok((StatusCode::CREATED, Json(CreatedKey { key, token })))
}

async fn revoke_key(
    State(s): State<WebState>,
    Extension(who): Extension<Principal>,
    from: Option<Extension<Source>>,
    Path(id): Path<String>,
) -> Result<Json<apikeys::ApiKey>, ApiError> {
    admin_only(&s, &who, from)?;
    let (store, audit) = (s.store.clone(), s.audit.clone());
    let key =
        tokio::task::spawn_blocking(move || apikeys::revoke(&store, &audit, who.actor(), &id))
            .await
            .map_err(internal)??;
    Ok(Json(key))
}

#[derive(Debug, Deserialize)]
pub struct Limit {
    pub limit: Option<usize>,
}

/// What acts against an incident now: its mitigations in force and the
/// share of the attack's recent samples their rules match together.
fn acting_on(s: &WebState, v: &mut serde_json::Value) {
    let (Some(m), Some(id)) = (&s.mitigation, v.get("id").and_then(|i| i.as_str())) else {
        return;
    };
    let active = m.shared.active.lock().unwrap_or_else(|e| e.into_inner());
    let mine: Vec<&crate::mitigation::Mitigation> = active
        .iter()
        .filter(|m| m.incident.as_deref() == Some(id))
        .collect();
    if mine.is_empty() {
        return;
    }
    let coverage = mine.iter().find_map(|m| m.coverage);
    v["mitigation"] = serde_json::json!({
        "coverage": coverage,
        "in_force": mine.iter().map(|m| serde_json::json!({
            "id": m.id,
            "level": m.level,
            "route": m.route.to_string(),
            "shadow": m.shadow,
            "rollback": m.rollback,
        })).collect::<Vec<_>>(),
    });
}

/// Incidents, newest first (active ones included, as they stand).
async fn incidents(
    State(s): State<WebState>,
    axum::extract::Query(q): axum::extract::Query<Limit>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let store = s.store.clone();
    let rows = tokio::task::spawn_blocking(move || store.incidents_newest(limit))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(Json(
        rows.iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r).ok())
            .map(|mut v| {
                // The list is a summary: timelines are on the incident's own
                // page (records stored before timelines had segments of
                // their own still hold one).
                if let Some(o) = v.as_object_mut() {
                    o.remove("timeline");
                }
                acting_on(&s, &mut v);
                v
            })
            .collect(),
    ))
}

/// One incident with its per-second timeline. Its id starts with its start
/// time (13 hex digits of Unix ms), which is how the store finds it.
async fn incident(
    State(s): State<WebState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no incident {id}"));
    let started = id
        .get(..13)
        .filter(|_| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(not_found)?;
    let store = s.store.clone();
    let key = id.clone();
    let (record, segments) = tokio::task::spawn_blocking(move || store.incident_get(started, &key))
        .await
        .map_err(internal)?
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let mut v: serde_json::Value = serde_json::from_slice(&record).map_err(internal)?;
    // The timeline is stored a minute per segment (older records hold it
    // whole).
    if !segments.is_empty() || v.get("timeline").is_none() {
        let mut points = Vec::new();
        for seg in &segments {
            let part: Vec<serde_json::Value> = serde_json::from_slice(seg).map_err(internal)?;
            points.extend(part);
        }
        v["timeline"] = serde_json::Value::Array(points);
    }
    acting_on(&s, &mut v);
    Ok(Json(v))
}

/// The busiest protected hosts of the last second.
async fn top_hosts(
    State(s): State<WebState>,
    axum::extract::Query(q): axum::extract::Query<Limit>,
) -> Json<Vec<serde_json::Value>> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let Some(dp) = &s.dataplane else {
        return Json(Vec::new());
    };
    let top = dp
        .live
        .top
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Json(
        top.into_iter()
            .take(limit)
            .map(|(a, g, pps, bps)| serde_json::json!({ "host": a.to_string(), "hostgroup": g, "pps": pps, "bps": bps }))
            .collect(),
    )
}

/// Every hostgroup's totals in the last second.
async fn hostgroups(State(s): State<WebState>) -> Json<Vec<serde_json::Value>> {
    let Some(dp) = &s.dataplane else {
        return Json(Vec::new());
    };
    let groups = dp
        .live
        .groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Json(
        groups
            .into_iter()
            .map(|(name, g)| {
                let by_class: serde_json::Map<String, serde_json::Value> = class::NAMES
                    .iter()
                    .zip(g.packets)
                    .skip(1)
                    .map(|(n, p)| ((*n).to_owned(), p.into()))
                    .collect();
                serde_json::json!({
                    "name": name,
                    "pps": g.packets[class::ALL],
                    "bps": g.bytes * 8,
                    "flows": g.flows,
                    "by_class": by_class,
                    "out_pps": g.out_packets,
                    "out_bps": g.out_bytes * 8,
                    "out_flows": g.out_flows,
                    "hosts": g.hosts,
                })
            })
            .collect(),
    )
}

#[derive(Deserialize)]
struct Window {
    /// Seconds of per-second history (default 300, at most 3600).
    seconds: Option<u64>,
    /// Minutes of rollups (default 60, at most a week).
    minutes: Option<u64>,
}

/// A subject's recent seconds and minute rollups, oldest first.
async fn history(
    s: &WebState,
    subject: Subject,
    w: &Window,
) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>), ApiError> {
    let now = levee_collectors::clock::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let seconds = w.seconds.unwrap_or(300).clamp(1, 3600);
    let minutes = w.minutes.unwrap_or(60).clamp(1, 7 * 24 * 60);
    let store = s.store.clone();
    let (secs, mins) = tokio::task::spawn_blocking(move || {
        let secs = store.series(
            Cf::Seconds,
            &subject,
            now.saturating_sub(seconds * 1000),
            now,
        )?;
        let mins = store.series(
            Cf::Metrics,
            &subject,
            now.saturating_sub(minutes * 60_000),
            now,
        )?;
        Ok::<_, crate::store::StoreError>((secs, mins))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let rows = |v: Vec<(u64, Vec<u8>)>| -> Vec<serde_json::Value> {
        v.into_iter()
            .filter_map(|(at, b)| {
                let mut row: serde_json::Value = serde_json::from_slice(&b).ok()?;
                row["at"] = crate::report::rfc3339_ms(at).into();
                Some(row)
            })
            .collect()
    };
    Ok((rows(secs), rows(mins)))
}

/// One host's recent seconds (stored for the busiest hosts) and minute
/// rollups.
async fn host(
    State(s): State<WebState>,
    Path(addr): Path<String>,
    axum::extract::Query(w): axum::extract::Query<Window>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ip: std::net::IpAddr = addr.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{addr:?} is not an IP address"),
        )
    })?;
    let a = levee_collectors::Addr::from(ip);
    let (seconds, minutes) = history(&s, Subject::Host(a.0), &w).await?;
    let group = s.dataplane.as_ref().and_then(|dp| dp.hostgroup_of(&a));
    let legit = match &s.dataplane {
        Some(dp) => dp.legit(a).await,
        None => None,
    };
    Ok(Json(serde_json::json!({
        "host": a.to_string(),
        "hostgroup": group,
        "seconds": seconds,
        "minutes": minutes,
        "legit": legit.as_ref().map(legit_json),
    })))
}

/// A host's legitimate-traffic profile (MIT-11): packets per second by
/// class, the seconds it was learnt from, and whether that is enough for
/// mitigation to judge rules by it (`[detection] legit_learning`).
fn legit_json(l: &crate::detect::Legit) -> serde_json::Value {
    let round = |p: f32| (f64::from(p) * 10.0).round() / 10.0;
    let by_class: serde_json::Map<String, serde_json::Value> = class::NAMES
        .iter()
        .zip(l.pps)
        .skip(1)
        .filter(|(_, p)| round(*p) > 0.0)
        .map(|(n, p)| ((*n).to_owned(), round(p).into()))
        .collect();
    serde_json::json!({
        "learnt": l.learnt,
        "seconds": l.seconds,
        "pps": round(l.pps[class::ALL]),
        "by_class": by_class,
    })
}

/// One hostgroup's recent seconds and minute rollups.
async fn hostgroup(
    State(s): State<WebState>,
    Path(name): Path<String>,
    axum::extract::Query(w): axum::extract::Query<Window>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let known = s
        .dataplane
        .as_ref()
        .is_some_and(|dp| dp.hostgroups().contains(&name));
    let (seconds, minutes) = history(&s, Subject::Group(name.clone()), &w).await?;
    if !known && seconds.is_empty() && minutes.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no hostgroup {name:?}"),
        ));
    }
    Ok(Json(serde_json::json!({
        "name": name,
        "seconds": seconds,
        "minutes": minutes,
    })))
}

fn decided_by(who: &Principal) -> String {
    match who {
        Principal::Local => "system:cli".to_owned(),
        Principal::Key(k) => format!("apikey:{}", k.id),
    }
}

fn mitigation_task(s: &WebState) -> Result<&crate::mitigation::service::Handle, ApiError> {
    s.mitigation.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "mitigation is not running".to_owned(),
        )
    })
}

/// Sends a command to the mitigation task and waits for its answer.
async fn mitigation_command<T>(
    s: &WebState,
    make: impl FnOnce(
        tokio::sync::oneshot::Sender<Result<T, crate::mitigation::Error>>,
    ) -> crate::mitigation::service::Command,
) -> Result<T, ApiError> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    mitigation_task(s)?.command(make(reply)).await?;
    // A task that stops before it answers drops the reply.
    Ok(rx
        .await
        .map_err(|_| crate::mitigation::service::stopped())??)
}

/// The mitigations in force and the newest entries of the mitigation log.
async fn mitigations(
    State(s): State<WebState>,
    Query(q): Query<LogQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = scrubbing_token(&s);
    let (active, bgp_up) = match &s.mitigation {
        Some(h) => (
            h.shared
                .active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            h.shared.bgp_up.load(std::sync::atomic::Ordering::Relaxed),
        ),
        None => (Vec::new(), false),
    };
    let active: Vec<serde_json::Value> = active
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            v["created"] = serde_json::json!(crate::report::rfc3339_ms(m.created_ms));
            v["expires"] = serde_json::json!(crate::report::rfc3339_ms(m.expires_ms));
            v["text"] = serde_json::json!(m.route.to_string());
            redact_mitigation(&mut v, token.as_deref());
            v
        })
        .collect();
    let store = s.store.clone();
    let limit = q.log.unwrap_or(100).min(10_000);
    let log = tokio::task::spawn_blocking(move || store.mitigation_log_newest(limit))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let log: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .map(|mut v| {
            redact_mitigation(&mut v, token.as_deref());
            v
        })
        .collect();
    Ok(Json(serde_json::json!({
        "bgp_up": bgp_up,
        "active": active,
        "log": log,
    })))
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    /// How many log entries (default 100).
    log: Option<usize>,
}

/// A manual announcement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Announce {
    host: std::net::IpAddr,
    level: crate::config::Level,
    /// Humantime, default one hour.
    ttl: Option<String>,
    /// FlowSpec only: narrow the rule (default: all traffic to the host).
    #[serde(default)]
    protocols: Vec<u8>,
    #[serde(default)]
    src_ports: Vec<u16>,
    #[serde(default)]
    dst_ports: Vec<u16>,
    /// FlowSpec only: rate-limit to bytes/s instead of discarding.
    rate_limit: Option<u32>,
}

/// Values per FlowSpec component (protocols, source ports, destination
/// ports) a manual rule may list at most: the bound every rule levee
/// draws keeps ([`crate::mitigation::rules::MAX_VALUES`]). A component
/// with more values is not a rule levee would draw, and each value is a
/// term every router must evaluate.
pub const MAX_COMPONENT_VALUES: usize = crate::mitigation::rules::MAX_VALUES;

/// The shortest TTL a manual mitigation may have.
const MIN_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// A manual mitigation's TTL: humantime, default one hour, at least a
/// second and at most `[mitigation] max_manual_ttl`, and ending at a time
/// levee can count to (checked arithmetic: an absurd TTL is an error, not
/// a wrapped expiry).
fn manual_ttl(s: &WebState, ttl: Option<&str>) -> Result<std::time::Duration, ApiError> {
    let bad = |m: String| ApiError(StatusCode::UNPROCESSABLE_ENTITY, m);
    let ttl = match ttl {
        Some(t) => humantime::parse_duration(t).map_err(|e| bad(format!("ttl `{t}`: {e}")))?,
        None => std::time::Duration::from_secs(3600),
    };
    let max = s
        .config
        .as_ref()
        .map(|c| c.borrow().config.mitigation.max_manual_ttl)
        .unwrap_or(crate::config::Config::default().mitigation.max_manual_ttl);
    if ttl < MIN_TTL {
        return Err(bad("ttl must be at least 1s".to_owned()));
    }
    if ttl > max {
        return Err(bad(format!(
            "ttl {} is over [mitigation] max_manual_ttl ({})",
            humantime::format_duration(ttl),
            humantime::format_duration(max)
        )));
    }
    if ends_ms(levee_collectors::clock::now(), ttl).is_none() {
        return Err(bad("ttl ends at a time levee cannot count to".to_owned()));
    }
    Ok(ttl)
}

/// When a mitigation of `ttl` made at `now` expires, as Unix ms — `None`
/// past what a `u64` of milliseconds (or the clock) can count to.
fn ends_ms(now: std::time::SystemTime, ttl: std::time::Duration) -> Option<u64> {
    now.checked_add(ttl)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

/// A component's values, sorted and without repeats, or a 422 when there
/// are more than [`MAX_COMPONENT_VALUES`].
fn component<T: Ord + Copy>(name: &str, values: &[T]) -> Result<Vec<T>, ApiError> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.len() > MAX_COMPONENT_VALUES {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{name}: {} values; a rule matches at most {MAX_COMPONENT_VALUES} (leave it out to match all)",
                v.len()
            ),
        ));
    }
    Ok(v)
}

async fn announce(
    State(s): State<WebState>,
    Extension(who): Extension<Principal>,
    a: Result<Json<Announce>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let mut a = body(a)?;
    let ttl = manual_ttl(&s, a.ttl.as_deref())?;
    a.protocols = component("protocols", &a.protocols)?;
    a.src_ports = component("src_ports", &a.src_ports)?;
    a.dst_ports = component("dst_ports", &a.dst_ports)?;
    let narrowed = !(a.protocols.is_empty() && a.src_ports.is_empty() && a.dst_ports.is_empty())
        || a.rate_limit.is_some();
    let rule = if matches!(
        a.level,
        crate::config::Level::Flowspec | crate::config::Level::Firewall
    ) {
        let action = match a.rate_limit {
            Some(b) => levee_bgp::FlowAction::rate_limit(b),
            None => levee_bgp::FlowAction::Discard,
        };
        let one = |p: &Vec<u16>| p.iter().map(|p| levee_bgp::Range::one(*p)).collect();
        Some(levee_bgp::FlowSpecRule {
            protocols: a.protocols.clone(),
            src_ports: one(&a.src_ports),
            dst_ports: one(&a.dst_ports),
            ..levee_bgp::FlowSpecRule::to(crate::mitigation::rules::host_net(a.host), action)
        })
    } else if narrowed {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "protocols, ports and rate_limit narrow FlowSpec and firewall rules only".to_owned(),
        ));
    } else {
        None
    };
    let made = mitigation_command(&s, |reply| crate::mitigation::service::Command::Announce {
        host: a.host,
        level: a.level,
        rule,
        ttl,
        actor: decided_by(&who),
        reply,
    })
    .await?;
    // As the list shows them: the provider's URL never with its
    // credentials.
    let token = scrubbing_token(&s);
    let mut made = serde_json::to_value(made).unwrap_or_default();
    match &mut made {
        serde_json::Value::Array(list) => {
            for v in list {
                redact_mitigation(v, token.as_deref());
            }
        }
        v => redact_mitigation(v, token.as_deref()),
    }
    Ok((StatusCode::CREATED, Json(made)))
}

async fn withdraw(
    State(s): State<WebState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    mitigation_command(&s, |reply| crate::mitigation::service::Command::Withdraw {
        id: id.clone(),
        actor: decided_by(&who),
        reply,
    })
    .await?;
    Ok(Json(serde_json::json!({ "withdrawn": id })))
}

/// Entries `GET /audit` returns by default, and at most.
const AUDIT_DEFAULT: usize = 100;
const AUDIT_MAX: usize = 1000;

#[derive(Debug, Deserialize)]
struct AuditQuery {
    /// RFC 3339 (UTC, `Z`): entries at or after.
    since: Option<String>,
    /// RFC 3339 (UTC, `Z`): entries before.
    until: Option<String>,
    after_seq: Option<u64>,
    before_seq: Option<u64>,
    /// Action prefix.
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
    limit: Option<usize>,
    /// `newest` (default) or `oldest` first.
    order: Option<String>,
}

/// The audit chain, filtered and paged, with the head to anchor it.
async fn audit(
    State(s): State<WebState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query(q)?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let time = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| {
                humantime::parse_rfc3339(t).map_err(|e| {
                    bad(format!(
                        "{name} `{t}`: {e} (RFC 3339 in UTC, e.g. 2026-12-01T10:00:00Z)"
                    ))
                })
            })
            .transpose()
    };
    let newest_first = match q.order.as_deref() {
        None | Some("newest") => true,
        Some("oldest") => false,
        Some(o) => return Err(bad(format!("order `{o}`: newest or oldest"))),
    };
    let limit = q.limit.unwrap_or(AUDIT_DEFAULT).clamp(1, AUDIT_MAX);
    // The head first: every entry listed is at or before it.
    let (head_seq, head_hash) = s.audit.head();
    let filter = crate::audit::Filter {
        after_seq: q.after_seq.unwrap_or(0),
        before_seq: q
            .before_seq
            .unwrap_or(u64::MAX)
            .min(head_seq.saturating_add(1)),
        since: time("since", &q.since)?,
        until: time("until", &q.until)?,
        action: q.action,
        actor: q.actor,
        target: q.target,
        newest_first,
        limit,
        ..crate::audit::Filter::default()
    };
    let store = s.store.clone();
    let page = tokio::task::spawn_blocking(move || crate::audit::list(&store, &filter))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let next = page.next.map(|seq| {
        if newest_first {
            serde_json::json!({ "before_seq": seq })
        } else {
            serde_json::json!({ "after_seq": seq })
        }
    });
    Ok(Json(serde_json::json!({
        "head": { "seq": head_seq, "hash": head_hash },
        "order": if newest_first { "newest" } else { "oldest" },
        "limit": limit,
        "entries": page.entries,
        "next": next,
    })))
}

/// Key management and the configuration need the admin socket or an
/// admin key: a key that may announce routes is not one that may mint
/// keys or revoke the operators' own. A refusal is counted and audited.
fn admin_only(
    s: &WebState,
    who: &Principal,
    from: Option<Extension<Source>>,
) -> Result<(), ApiError> {
    match who {
        Principal::Local => Ok(()),
        Principal::Key(k) if k.scope >= Scope::Admin => Ok(()),
        Principal::Key(k) => {
            s.auth_failures.record(
                from.map(|Extension(Source(ip))| ip),
                Refusal::Forbidden,
                Some(&k.id),
            );
            Err(ApiError(
                StatusCode::FORBIDDEN,
                "this needs an admin key (API keys and the configuration are managed with \
                 scope admin)"
                    .to_owned(),
            ))
        }
    }
}

/// The running configuration, every secret redacted (admin).
async fn config_view(
    State(s): State<WebState>,
    Extension(who): Extension<Principal>,
    from: Option<Extension<Source>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin_only(&s, &who, from)?;
    let Some(config) = &s.config else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no configuration is loaded".to_owned(),
        ));
    };
    let loaded = config.borrow().clone();
    let settings: serde_json::Map<String, serde_json::Value> =
        crate::config::secrets::view(&loaded.flat)
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
    let id = loaded.identity(&|v| s.audit.secret_mac(v));
    Ok(Json(serde_json::json!({
        "path": loaded.path,
        "sha256": id.sha256,
        "hmac_sha256": id.hmac_sha256,
        "settings": settings,
        "secret_keys": crate::config::secrets::SECRET_KEYS,
        "url_keys": crate::config::secrets::URL_KEYS,
    })))
}

/// The scrubbing provider's token, to be kept out of what is shown.
fn scrubbing_token(s: &WebState) -> Option<String> {
    s.config.as_ref().and_then(|c| {
        c.borrow()
            .config
            .scrubbing
            .http_token
            .as_ref()
            .map(|t| t.expose().to_owned())
    })
}

/// A mitigation or a mitigation-log entry as shown (API, CLI): the
/// provider URL without its credentials, errors and answers without any
/// URL's credentials or the provider token.
pub fn redact_mitigation(v: &mut serde_json::Value, token: Option<&str>) {
    let secrets: Vec<&str> = token.into_iter().collect();
    if let Some(o) = v.as_object_mut() {
        for field in ["http", "error", "response", "url"] {
            if let Some(serde_json::Value::String(t)) = o.get_mut(field) {
                *t = crate::config::secrets::scrub(t, &secrets);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_ttl_ends_only_where_milliseconds_can_count() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            super::ends_ms(now, Duration::from_secs(3600)),
            Some(1_800_003_600_000)
        );
        // A billion years: past u64 milliseconds (~584 million years).
        let eon = Duration::from_secs(1_000_000_000 * 365 * 86_400);
        assert_eq!(super::ends_ms(now, eon), None);
        assert_eq!(super::ends_ms(now, Duration::MAX), None);
    }
}
