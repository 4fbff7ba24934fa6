//! Serving the app on a listener so that slow and greedy clients cannot
//! hold it: levee sits on the network an intruder reaches first, and a
//! server that stops answering takes `/metrics`, the API and the CLI with
//! it.
//!
//! Each connection is served by hyper's HTTP/1 connection with a timer, so
//! that:
//!
//! - the request head must arrive whole within `header_read_timeout` of
//!   the connection waiting for it — which is also the longest a kept-alive
//!   connection idles between requests (hyper arms the same timer);
//! - a read or a write that makes no progress for `request_timeout` closes
//!   the connection (a body trickled in, a response never read);
//! - a request must be answered within `request_timeout` (408 otherwise:
//!   `tower_http::timeout`, applied by the caller to the app).
//!
//! and a [`Gate`] bounds the connections of a listener: at most
//! `max_per_client` from one address (an IPv6 client by its /64; more
//! are closed at once), at most
//! `max_connections` in all. When all are taken, a new connection takes
//! the place of the one that has waited longest without a request in
//! progress — an idle keep-alive, a head not yet complete, a response not
//! being read — so a flood of idle connections cannot lock the operator
//! out; only a request being answered is never cut. The caller sizes the
//! caps to the open-files limit, so accept(2) never fails for want of a
//! file handle.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};
use tower::ServiceExt as _;

/// The bounds of one listener (or of listeners that share a [`Gate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// Connections from one client address at most (unused on the admin
    /// socket, whose clients have none).
    pub max_per_client: usize,
}

/// The largest request head (and read buffer) a connection keeps; the
/// API's requests are a few hundred bytes.
const MAX_BUF: usize = 64 * 1024;

/// Counts a [`Gate`] keeps, for `/metrics`.
#[derive(Debug, Default)]
pub struct GateStats {
    pub accepted: AtomicU64,
    /// Closed at once: the client had `max_per_client` already.
    pub refused_per_client: AtomicU64,
    /// Closed at once: `max_connections` taken, none of them idle.
    pub refused_full: AtomicU64,
    /// Closed to make room for a new connection (the idlest).
    pub evicted: AtomicU64,
    /// accept(2) failures (out of file handles, …).
    pub accept_errors: AtomicU64,
}

/// One connection's place.
struct Slot {
    client: Option<IpAddr>,
    /// Requests in progress (more than one only when pipelined).
    busy: AtomicUsize,
    /// When it last started waiting for a request, ms since the gate was made.
    idle_since_ms: AtomicU64,
    evict: Notify,
}

#[derive(Default)]
struct Held {
    next: u64,
    slots: HashMap<u64, Arc<Slot>>,
    per_client: HashMap<IpAddr, usize>,
}

impl Held {
    fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        if let Some(ip) = slot.client {
            if let Some(n) = self.per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(&ip);
                }
            }
        }
        true
    }
}

/// The connection caps of a listener (or of several sharing them).
pub struct Gate {
    pub name: &'static str,
    pub limits: Limits,
    pub stats: GateStats,
    held: Mutex<Held>,
    epoch: Instant,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("open", &self.open())
            .finish()
    }
}

/// A connection's place in its gate, given back when dropped.
struct Admitted {
    gate: Arc<Gate>,
    id: u64,
    slot: Arc<Slot>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.lock().remove(self.id);
    }
}

impl Gate {
    pub fn new(name: &'static str, limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            name,
            limits,
            stats: GateStats::default(),
            held: Mutex::new(Held::default()),
            epoch: Instant::now(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().slots.len()
    }

    /// A place for a connection from `client`, making room if it must;
    /// `None` when it is to be closed at once.
    fn admit(self: &Arc<Gate>, client: Option<IpAddr>) -> Option<Admitted> {
        let client = client.map(client_of);
        let mut held = self.lock();
        if let Some(ip) = client {
            if held.per_client.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_client {
                self.stats
                    .refused_per_client
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        if held.slots.len() >= self.limits.max_connections {
            // The connection that has waited longest without a request in
            // progress gives way.
            let victim = held
                .slots
                .iter()
                .filter(|(_, s)| s.busy.load(Ordering::Relaxed) == 0)
                .min_by_key(|(id, s)| (s.idle_since_ms.load(Ordering::Relaxed), **id))
                .map(|(id, s)| (*id, s.clone()));
            match victim {
                Some((id, slot)) => {
                    held.remove(id);
                    slot.evict.notify_one();
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        held.next += 1;
        let id = held.next;
        let slot = Arc::new(Slot {
            client,
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
        });
        held.slots.insert(id, slot.clone());
        if let Some(ip) = client {
            *held.per_client.entry(ip).or_insert(0) += 1;
        }
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            gate: self.clone(),
            id,
            slot,
        })
    }
}

/// A listener the server accepts from: TCP (clients have an address) or
/// the admin socket (they have none).
pub trait Listen: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(
        &mut self,
    ) -> impl std::future::Future<Output = std::io::Result<(Self::Io, Option<SocketAddr>)>> + Send;
}

impl Listen for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<(Self::Io, Option<SocketAddr>)> {
        let (s, a) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, Some(a)))
    }
}

impl Listen for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> std::io::Result<(Self::Io, Option<SocketAddr>)> {
        let (s, _) = tokio::net::UnixListener::accept(self).await?;
        Ok((s, None))
    }
}

/// Serves `app` on `listener` within `gate`'s bounds until `stop` turns
/// true; then lets the requests in progress finish (the caller bounds how
/// long it waits) and returns.
pub async fn serve<L: Listen>(
    mut listener: L,
    app: Router,
    gate: Arc<Gate>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut told = None::<Instant>;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (io, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file handles (EMFILE/ENFILE) or a connection
                // reset before it was taken: wait a moment rather than
                // spin, and say so (at most every ten seconds).
                gate.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if told.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::error!(listener = gate.name, error = %e, "Cannot accept a connection");
                    told = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(admitted) = gate.admit(peer.map(|a| a.ip())) else {
            drop(io); // closed at once
            continue;
        };
        let limits = gate.limits;
        let mut timed = tokio_io_timeout::TimeoutStream::new(io);
        timed.set_read_timeout(Some(limits.request_timeout));
        timed.set_write_timeout(Some(limits.request_timeout));
        let io = TokioIo::new(Box::pin(timed));
        let slot = admitted.slot.clone();
        let epoch = gate.epoch;
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            if let Some(addr) = peer {
                req.extensions_mut().insert(ConnectInfo(addr));
            }
            slot.busy.fetch_add(1, Ordering::Relaxed);
            let slot = slot.clone();
            let answer = app.clone().oneshot(req);
            async move {
                let r = answer.await;
                slot.idle_since_ms
                    .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                slot.busy.fetch_sub(1, Ordering::Relaxed);
                r
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .max_buf_size(MAX_BUF)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = admitted.slot.evict.notified() => {
                    tracing::debug!("HTTP connection closed to make room");
                }
            }
            drop(admitted);
        });
    }
    drop(listener); // no new connections from here on
    graceful.shutdown().await;
}

/// Whom a connection counts against for the per-client cap: an IPv4
/// address, or an IPv6 address's /64 (one host holds a whole /64 and
/// may send from any address of it).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let gate = Gate::new("test", limits(10, 2));
        let at = |a: &str| gate.admit(Some(a.parse().unwrap()));
        let _a = at("2001:db8:1:2::1").unwrap();
        let _b = at("2001:db8:1:2:ffff::9").unwrap();
        assert!(at("2001:db8:1:2::abcd").is_none(), "the same /64");
        let _c = at("2001:db8:1:3::1").unwrap();
        // A v4-mapped address is its IPv4 address.
        let _d = at("::ffff:192.0.2.1").unwrap();
        let _e = at("192.0.2.1").unwrap();
        assert!(at("192.0.2.1").is_none());
    }

    fn limits(max: usize, per: usize) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: max,
            max_per_client: per,
        }
    }

    #[test]
    fn a_full_gate_evicts_the_idlest_and_a_client_over_its_cap_is_refused() {
        let gate = Gate::new("test", limits(3, 2));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = gate.admit(Some(a)).unwrap();
        let second = gate.admit(Some(a)).unwrap();
        assert!(gate.admit(Some(a)).is_none(), "per-client cap");
        assert_eq!(gate.stats.refused_per_client.load(Ordering::Relaxed), 1);
        // The first is busy: the full gate evicts the second, not it.
        first.slot.busy.fetch_add(1, Ordering::Relaxed);
        let third = gate.admit(Some(b)).unwrap();
        let fourth = gate.admit(Some(b)).unwrap();
        assert_eq!(gate.stats.evicted.load(Ordering::Relaxed), 1);
        assert!(!gate.lock().slots.contains_key(&second.id));
        assert_eq!(gate.open(), 3);
        // Dropping an evicted connection does not free another's place.
        drop(second);
        assert_eq!(gate.open(), 3);
        assert_eq!(gate.lock().per_client.get(&a), Some(&1));
        // All busy: refused.
        third.slot.busy.fetch_add(1, Ordering::Relaxed);
        fourth.slot.busy.fetch_add(1, Ordering::Relaxed);
        assert!(gate.admit(None).is_none());
        assert_eq!(gate.stats.refused_full.load(Ordering::Relaxed), 1);
        drop((first, third, fourth));
        assert_eq!(gate.open(), 0);
        assert!(gate.lock().per_client.is_empty());
    }
}
