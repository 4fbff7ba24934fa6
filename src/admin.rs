//! How the CLI changes things: through the admin socket of a running levee
//! (the store is locked by it), or directly in the store when levee is
//! stopped. Either way the same functions run and the same audit entries
//! are written; the CLI does not need to know which.
//!
//! The socket speaks the HTTP API (`/api/v1`) with the local-administrator
//! principal; this module is its small HTTP/1.1 client.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;

use crate::api::CreatedKey;
use crate::apikeys::{self, ApiKey, Scope};
use crate::audit::{Actor, AuditLog};
use crate::store::Store;

/// A way to administer levee.
pub enum Admin {
    /// levee runs: talk to it.
    Socket(PathBuf),
    /// levee is stopped: open the store.
    Store { store: Arc<Store>, audit: AuditLog },
}

impl Admin {
    /// Picks the socket when a levee answers on it, the store otherwise.
    pub fn connect(data_dir: &Path) -> anyhow::Result<Admin> {
        let socket = crate::app::admin_socket_path(data_dir);
        if UnixStream::connect(&socket).is_ok() {
            return Ok(Admin::Socket(socket));
        }
        let store =
            Arc::new(Store::open(data_dir).context("opening the store (levee is not running)")?);
        let audit = AuditLog::open(store.clone())?;
        Ok(Admin::Store { store, audit })
    }

    pub fn create_key(&self, name: &str, scope: Scope) -> anyhow::Result<CreatedKey> {
        match self {
            Admin::Socket(p) => request(
                p,
                "POST",
                "/api/v1/apikeys",
                Some(&serde_json::json!({ "name": name, "scope": scope })),
            ),
            Admin::Store { store, audit } => {
                let (key, token) =
                    apikeys::create(store, audit, Actor::System("cli"), name, scope)?;
                Ok(CreatedKey { key, token })
            }
        }
    }

    pub fn list_keys(&self) -> anyhow::Result<Vec<ApiKey>> {
        match self {
            Admin::Socket(p) => request(p, "GET", "/api/v1/apikeys", None),
            Admin::Store { store, .. } => Ok(apikeys::list(store)?),
        }
    }

    pub fn revoke_key(&self, id: &str) -> anyhow::Result<ApiKey> {
        match self {
            Admin::Socket(p) => request(p, "DELETE", &format!("/api/v1/apikeys/{id}"), None),
            Admin::Store { store, audit } => {
                Ok(apikeys::revoke(store, audit, Actor::System("cli"), id)?)
            }
        }
    }
}

impl Admin {
    /// The mitigations in force and the newest log entries. With levee
    /// stopped: the intents it will restore, and the stored log.
    pub fn mitigations(&self, log: usize) -> anyhow::Result<serde_json::Value> {
        match self {
            Admin::Socket(p) => request(p, "GET", &format!("/api/v1/mitigations?log={log}"), None),
            Admin::Store { store, .. } => {
                let active: Vec<serde_json::Value> = store
                    .intents()?
                    .iter()
                    .filter_map(|(_, v)| serde_json::from_slice(v).ok())
                    .collect();
                let log: Vec<serde_json::Value> = store
                    .mitigation_log_newest(log)?
                    .iter()
                    .filter_map(|v| serde_json::from_slice(v).ok())
                    .collect();
                Ok(serde_json::json!({ "bgp_up": false, "active": active, "log": log }))
            }
        }
    }

    /// Announces a mitigation by hand; levee must be running.
    pub fn announce(&self, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        match self {
            Admin::Socket(p) => request(p, "POST", "/api/v1/mitigations", Some(body)),
            Admin::Store { .. } => {
                bail!("levee is not running; mitigations are announced by the running levee")
            }
        }
    }

    /// Withdraws a mitigation by id; levee must be running.
    pub fn withdraw(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        match self {
            Admin::Socket(p) => request(p, "DELETE", &format!("/api/v1/mitigations/{id}"), None),
            Admin::Store { .. } => {
                bail!("levee is not running; its routes are withdrawn by the running levee (or by gobgpd's dead-man when levee stays down)")
            }
        }
    }
}

/// One HTTP/1.1 request over the admin socket; the JSON answer, or the
/// API's error message.
fn request<T: DeserializeOwned>(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<T> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: levee\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // axum answers with a length, not chunks, for these small JSON bodies.
    if !(200..300).contains(&status) {
        let msg = serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| payload.trim().to_owned());
        bail!("{msg} (HTTP {status})");
    }
    serde_json::from_str(payload).with_context(|| format!("reading levee's answer: {payload}"))
}
