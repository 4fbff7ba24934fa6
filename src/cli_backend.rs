//! How the CLI reads and changes things: through the admin socket of a
//! running levee, or directly in the store when levee is not answering.
//! Either way the same functions run and the same audit entries are
//! written; the CLI does not need to know which.
//!
//! The store has one writer, and a levee that is starting needs it, so the
//! CLI is careful with it:
//!
//! - **Reads** (`mitigation list`, `apikey list`, `status`) ask levee when
//!   it answers, and otherwise open the store **read-only**, which takes no
//!   lock: a read never stands in the way of a levee that is starting (it
//!   used to open the store for writing, and took the lock at the moment a
//!   restarting levee needed it). A read whose answer is cut off because
//!   levee went away is read from the store instead.
//! - **Changes** go to levee when it answers. When it does not, the store
//!   is opened for writing, the change made and the store closed at once:
//!   the lock is held only as long as the write takes. When the lock is
//!   held — levee starting and not yet answering, another command writing
//!   — the change waits (bounded), and goes to levee as soon as it answers.
//!
//! The socket speaks the HTTP API (`/api/v1`) with the local-administrator
//! principal; this module is its small HTTP/1.1 client.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::apikeys::{self, ApiKey, Scope};
use crate::audit::{Actor, AuditLog};
use crate::store::{Store, StoreError};
use crate::web::api::CreatedKey;

/// How long a change waits for the store's lock (or for a starting levee
/// to answer) before it gives up, naming the holder.
pub const CHANGE_PATIENCE: Duration = Duration::from_secs(30);

/// A way to administer levee.
pub enum Admin {
    /// levee answers on its admin socket: talk to it.
    Socket { socket: PathBuf, data_dir: PathBuf },
    /// levee does not answer: use the store (read-only to read, for one
    /// write to change).
    Offline { socket: PathBuf, data_dir: PathBuf },
}

/// Why a command could not read or change what it asked for.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// levee (or the store) refused it, saying why.
    #[error("{0}")]
    Refused(String),
    /// The request went to levee but its answer was cut off.
    #[error("the change may or may not have been made; look before trying again")]
    MaybeMade(#[source] RequestError),
    /// levee did not answer and the store could not be read.
    #[error("opening the store")]
    ReadStore(#[source] StoreError),
    /// levee did not answer and the store could not be opened to write.
    #[error("opening the store (levee does not answer on its admin socket)")]
    WriteStore(#[source] StoreError),
    /// What only a running levee can do.
    #[error("levee is not running; {0}")]
    NotRunning(&'static str),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Key(#[from] apikeys::KeyError),
}

/// Why a request over the admin socket failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Nothing was sent: no levee listens.
    #[error("connecting to {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// Sent, but the answer did not come (levee stopped or died meanwhile).
    #[error("levee did not answer on {socket}: {source}")]
    Cut {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// levee answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// Whether a levee answers on `socket` (something accepts connections).
fn answers(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

impl Admin {
    /// Picks the socket when a levee answers on it, the store otherwise.
    /// Opens nothing yet.
    pub fn connect(data_dir: &Path) -> Result<Admin, AdminError> {
        let socket = crate::app::admin_socket_path(data_dir);
        let data_dir = data_dir.to_owned();
        Ok(if answers(&socket) {
            Admin::Socket { socket, data_dir }
        } else {
            Admin::Offline { socket, data_dir }
        })
    }

    /// Whether levee answered when this was made.
    pub fn levee_running(&self) -> bool {
        matches!(self, Admin::Socket { .. })
    }

    fn data_dir(&self) -> &Path {
        match self {
            Admin::Socket { data_dir, .. } | Admin::Offline { data_dir, .. } => data_dir,
        }
    }

    /// A read: from levee when it answers, else from a read-only store
    /// (also when levee's answer is cut off).
    fn read<T: DeserializeOwned>(
        &self,
        path: &str,
        offline: impl FnOnce(&Store) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        if let Admin::Socket { socket, .. } = self {
            match request(socket, "GET", path, None) {
                Ok(v) => return Ok(v),
                Err(RequestError::Refused(msg)) => return Err(AdminError::Refused(msg)),
                // levee went away: what it would have said is in the store.
                Err(RequestError::Connect { .. } | RequestError::Cut { .. }) => {}
            }
        }
        let store = Store::open_read_only(self.data_dir()).map_err(AdminError::ReadStore)?;
        offline(&store)
    }

    /// A change: through levee when it answers; otherwise in the store,
    /// opened for this one write and closed at once. While the store is
    /// locked (levee starting, another command writing), waits up to
    /// [`CHANGE_PATIENCE`], going to levee as soon as it answers.
    fn change<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        offline: impl FnOnce(&Store, &AuditLog) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let (socket, data_dir) = match self {
            Admin::Socket { socket, data_dir } | Admin::Offline { socket, data_dir } => {
                (socket, data_dir)
            }
        };
        let start = Instant::now();
        loop {
            if answers(socket) {
                match request(socket, method, path, body) {
                    Ok(v) => return Ok(v),
                    // It stopped before we asked: nothing was sent, so the
                    // change can still be made in the store.
                    Err(RequestError::Connect { .. }) => {}
                    Err(e @ RequestError::Cut { .. }) => return Err(AdminError::MaybeMade(e)),
                    Err(RequestError::Refused(msg)) => return Err(AdminError::Refused(msg)),
                }
            }
            match Store::open(data_dir) {
                Ok(store) => {
                    let store = Arc::new(store);
                    let audit = AuditLog::open(store.clone())?;
                    return offline(&store, &audit);
                    // The store is closed here: the lock is free again.
                }
                Err(StoreError::Locked { .. }) if start.elapsed() < CHANGE_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(StoreError::Locked { path, holder, .. }) => {
                    return Err(AdminError::WriteStore(StoreError::Locked {
                        path,
                        holder,
                        waited: Some(start.elapsed()),
                    }))
                }
                Err(e) => return Err(AdminError::WriteStore(e)),
            }
        }
    }

    pub fn create_key(&self, name: &str, scope: Scope) -> Result<CreatedKey, AdminError> {
        self.change(
            "POST",
            "/api/v1/apikeys",
            Some(&serde_json::json!({ "name": name, "scope": scope })),
            |_store, audit| {
                let (key, token) = apikeys::create(audit, Actor::System("cli"), name, scope)?;
                Ok(CreatedKey { key, token })
            },
        )
    }

    pub fn list_keys(&self) -> Result<Vec<ApiKey>, AdminError> {
        self.read("/api/v1/apikeys", |store| Ok(apikeys::list(store)?))
    }

    pub fn revoke_key(&self, id: &str) -> Result<ApiKey, AdminError> {
        self.change(
            "DELETE",
            &format!("/api/v1/apikeys/{id}"),
            None,
            |store, audit| Ok(apikeys::revoke(store, audit, Actor::System("cli"), id)?),
        )
    }
}

impl Admin {
    /// The mitigations in force and the newest log entries. With levee
    /// not answering: the intents it will restore, and the stored log.
    pub fn mitigations(&self, log: usize) -> Result<serde_json::Value, AdminError> {
        self.read(&format!("/api/v1/mitigations?log={log}"), |store| {
            // Shown as the API shows them: no URL credentials.
            let shown = |mut v: serde_json::Value| {
                crate::web::api::redact_mitigation(&mut v, None);
                v
            };
            let active: Vec<serde_json::Value> = store
                .intents()?
                .iter()
                .filter_map(|(_, v)| serde_json::from_slice(v).ok())
                .map(shown)
                .collect();
            let log: Vec<serde_json::Value> = store
                .mitigation_log_newest(log)?
                .iter()
                .filter_map(|v| serde_json::from_slice(v).ok())
                .map(shown)
                .collect();
            Ok(serde_json::json!({ "bgp_up": false, "active": active, "log": log }))
        })
    }

    /// Announces a mitigation by hand; levee must be running.
    pub fn announce(&self, body: &serde_json::Value) -> Result<serde_json::Value, AdminError> {
        match self {
            Admin::Socket { socket, .. } => {
                Ok(request(socket, "POST", "/api/v1/mitigations", Some(body))?)
            }
            Admin::Offline { .. } => Err(AdminError::NotRunning(
                "mitigations are announced by the running levee",
            )),
        }
    }

    /// Withdraws a mitigation by id; levee must be running.
    pub fn withdraw(&self, id: &str) -> Result<serde_json::Value, AdminError> {
        match self {
            Admin::Socket { socket, .. } => Ok(request(
                socket,
                "DELETE",
                &format!("/api/v1/mitigations/{id}"),
                None,
            )?),
            Admin::Offline { .. } => Err(AdminError::NotRunning(
                "its routes are withdrawn by the running levee (or by gobgpd's dead-man when levee stays down)",
            )),
        }
    }

    /// `GET path` from the running levee, as JSON (`None` when levee does
    /// not answer).
    pub fn get(&self, path: &str) -> Result<Option<serde_json::Value>, AdminError> {
        match self {
            Admin::Socket { socket, .. } => match request(socket, "GET", path, None) {
                Ok(v) => Ok(Some(v)),
                Err(RequestError::Refused(msg)) => Err(AdminError::Refused(msg)),
                Err(_) => Ok(None),
            },
            Admin::Offline { .. } => Ok(None),
        }
    }
}

/// One HTTP/1.1 request over the admin socket; the JSON answer, or why not.
fn request<T: DeserializeOwned>(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<T, RequestError> {
    let mut s = UnixStream::connect(socket).map_err(|source| RequestError::Connect {
        socket: socket.to_owned(),
        source,
    })?;
    let cut = |source: std::io::Error| RequestError::Cut {
        socket: socket.to_owned(),
        source,
    };
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(cut)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: levee\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(cut)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(cut)?;
    let Some(Answer { status, body, .. }) = Answer::read(&raw) else {
        // The connection closed before a whole answer: levee went away.
        return Err(cut(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed before a whole answer",
        )));
    };
    let payload = body.as_str();
    if !(200..300).contains(&status) {
        let msg = serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| payload.trim().to_owned());
        return Err(RequestError::Refused(format!("{msg} (HTTP {status})")));
    }
    serde_json::from_str(payload)
        .map_err(|e| RequestError::Refused(format!("reading levee's answer ({e}): {payload}")))
}

/// An HTTP/1.1 answer read to the end of a `Connection: close` exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    /// The body, de-chunked when it came in chunks.
    pub body: String,
}

impl Answer {
    /// Reads `raw` (everything the server sent): `None` when it holds no
    /// status line, or a chunked body cut short.
    pub fn read(raw: &[u8]) -> Option<Answer> {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let rest = &raw[split + 4..];
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let chunked = head.lines().skip(1).any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
            })
        });
        let body = if chunked {
            dechunk(rest)?
        } else {
            rest.to_vec()
        };
        Some(Answer {
            status,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A chunked body (RFC 9112 §7.1) as one: `None` when cut short.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line]).ok()?;
        let size = size.split(';').next()?.trim();
        let n = usize::from_str_radix(size, 16).ok()?;
        rest = &rest[line + 2..];
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..n)?);
        rest = rest.get(n + 2..)?;
    }
}

#[cfg(test)]
mod answer_tests {
    use super::Answer;

    #[test]
    fn answers_are_read_whole_with_a_length_or_in_chunks() {
        let plain = Answer::read(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((plain.status, plain.body.as_str()), (200, "{}"));
        let chunked = Answer::read(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n5;x=y\r\n: 1}\n\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (chunked.status, chunked.body.as_str()),
            (404, "{\"a\": 1}\n")
        );
        // Cut short: no answer to trust.
        assert!(
            Answer::read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc")
                .is_none()
        );
        assert!(Answer::read(b"").is_none());
        assert!(Answer::read(b"garbage\r\n\r\n").is_none());
    }
}
