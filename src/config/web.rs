//! `[web]`: where the HTTP server listens, who may reach `/metrics`, which
//! Host names it answers to, and the bounds that keep slow or greedy
//! clients from holding it.
//!
//! levee serves plain HTTP. Binding anything but a loopback address is
//! refused unless `allow_remote = true` says the operator means it (a
//! TLS-terminating proxy in front, a management network): the API carries
//! bearer keys, and `/metrics` shows what an attacker would tune an attack
//! to.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use super::reader::{Diags, TableReader};
use super::secrets::{self, Secret};

/// `[web]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Web {
    /// The admin web UI, the API, `/healthz` and (unless `metrics_listen`
    /// is set) `/metrics`.
    pub listen: SocketAddr,
    /// Whether a non-loopback `listen` / `metrics_listen` is meant: levee
    /// serves plain HTTP, so it refuses to bind one without this.
    pub allow_remote: bool,
    /// A separate address for `/metrics` (and `/healthz`); `/metrics` then
    /// leaves `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// A bearer token `/metrics` requires (an API key of any scope does
    /// too); without it `/metrics` is open to whoever reaches it.
    pub metrics_token: Option<Secret>,
    /// Host header names answered besides loopback names (`localhost`)
    /// and IP addresses: a request naming another host is refused (421),
    /// which stops DNS rebinding from a browser.
    pub host_names: Vec<String>,
    /// The request head must arrive within this; also the longest a
    /// kept-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// A request must be answered within this (408), and a read or write
    /// that makes no progress for this long closes the connection.
    pub request_timeout: Duration,
    /// Connections at most (on `listen` and `metrics_listen` together);
    /// when all are taken, a new one takes the place of the idlest.
    pub max_connections: usize,
    /// Connections from one client address at most.
    pub max_connections_per_client: usize,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allow_remote: false,
            metrics_listen: None,
            metrics_token: None,
            host_names: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_connections_per_client: 16,
        }
    }
}

impl Web {
    /// The addresses levee serves HTTP on that are not loopback ones.
    pub fn remote_addresses(&self) -> Vec<SocketAddr> {
        std::iter::once(self.listen)
            .chain(self.metrics_listen)
            .filter(|a| !a.ip().is_loopback())
            .collect()
    }
}

/// Reads `[web]` into `w`, adding its listen addresses to `sockets` (for
/// the clash check).
pub(super) fn read(
    d: &mut Diags,
    t: &mut TableReader<'_, '_>,
    w: &mut Web,
    sockets: &mut Vec<(SocketAddr, Option<Range<usize>>, String)>,
) {
    let mut spans: Vec<(SocketAddr, Range<usize>, &str)> = Vec::new();
    if let Some(s) = t.string(d, "listen") {
        if let Some(a) = super::socket_addr(d, &s, "`listen` in [web]") {
            w.listen = a;
            sockets.push((a, Some(s.span()), "[web] listen".to_owned()));
            spans.push((a, s.span(), "listen"));
        }
    }
    if let Some(s) = t.string(d, "metrics_listen") {
        if let Some(a) = super::socket_addr(d, &s, "`metrics_listen` in [web]") {
            w.metrics_listen = Some(a);
            sockets.push((a, Some(s.span()), "[web] metrics_listen".to_owned()));
            spans.push((a, s.span(), "metrics_listen"));
        }
    }
    if let Some(b) = t.bool(d, "allow_remote") {
        w.allow_remote = b;
    }
    if !w.allow_remote {
        for (a, span, key) in &spans {
            if !a.ip().is_loopback() {
                d.error(
                    span.clone(),
                    format!(
                        "`{key}` in [web] is `{a}`, not a loopback address: levee serves plain \
                         HTTP (API keys, /metrics); put a TLS-terminating proxy in front and \
                         keep it on loopback, or set allow_remote = true in [web] to serve \
                         a management network as it is"
                    ),
                );
            }
        }
    }
    if let Some(tok) = t.string(d, "metrics_token") {
        if let Some(tok) = secrets::token(d, &tok, "`metrics_token` in [web]") {
            if tok.expose().len() < 16 {
                d.error(
                    t.key_span("metrics_token").unwrap_or(0..0),
                    "`metrics_token` in [web] must be at least 16 characters (a random one: \
                     `openssl rand -hex 32`)",
                );
            } else {
                w.metrics_token = Some(tok);
            }
        }
    }
    if let Some(list) = t.strings(d, "host_names") {
        let mut names = Vec::new();
        for n in list {
            let name = n.get_ref().trim().to_ascii_lowercase();
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
            if ok {
                names.push(name);
            } else {
                d.error(
                    n.span(),
                    format!(
                        "`host_names` in [web]: `{}` is not a host name (letters, digits, '.', \
                         '-', '_'; no port)",
                        n.get_ref()
                    ),
                );
            }
        }
        w.host_names = names;
    }
    for (key, slot, max) in [
        (
            "header_read_timeout",
            &mut w.header_read_timeout,
            Duration::from_secs(300),
        ),
        (
            "request_timeout",
            &mut w.request_timeout,
            Duration::from_secs(3600),
        ),
    ] {
        if let Some(v) = t.duration(d, key) {
            if *v.get_ref() > max {
                d.error(
                    v.span(),
                    format!(
                        "`{key}` in [web] is at most {}",
                        humantime::format_duration(max)
                    ),
                );
            } else {
                *slot = v.into_inner();
            }
        }
    }
    for (key, slot, max) in [
        ("max_connections", &mut w.max_connections, 65_536u64),
        (
            "max_connections_per_client",
            &mut w.max_connections_per_client,
            65_536,
        ),
    ] {
        if let Some(n) = t.positive(d, key) {
            if *n.get_ref() > max {
                d.error(n.span(), format!("`{key}` in [web] is at most {max}"));
            } else {
                *slot = usize::try_from(n.into_inner()).unwrap_or(usize::MAX);
            }
        }
    }
}
