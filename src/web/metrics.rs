//! Prometheus text exposition (format 0.0.4) of everything levee counts.
//!
//! [`render`] puts `/metrics` together: levee's own process, store, audit
//! and HTTP metrics here, and each subsystem's from its `write_metrics`
//! (the data plane, the collectors, the mitigation task). It never blocks
//! on the data plane (receivers publish their counters once a second).

use std::sync::atomic::Ordering;

use super::state::{WebState, COMMIT, VERSION};
use crate::exposition::Prom;

/// The whole `/metrics` page. `store_size` is passed in because measuring it
/// reads the file system (done off the async workers by the caller).
pub fn render(s: &WebState, store_size: u64) -> String {
    let mut p = Prom::new();
    p.family(
        "levee_build_info",
        "gauge",
        "Version and commit of the running levee.",
    );
    p.sample(
        "levee_build_info",
        &[("version", VERSION), ("commit", COMMIT)],
        1,
    );
    p.family(
        "levee_uptime_seconds",
        "gauge",
        "Seconds since levee started.",
    );
    p.sample(
        "levee_uptime_seconds",
        &[],
        format!("{:.3}", s.started.elapsed().as_secs_f64()),
    );
    p.family(
        "levee_store_size_bytes",
        "gauge",
        "Bytes the RocksDB store occupies on disk.",
    );
    p.sample("levee_store_size_bytes", &[], store_size);

    let (head_seq, head_hash) = s.audit.head();
    p.family(
        "levee_audit_head_seq",
        "gauge",
        "Sequence number of the newest audit entry.",
    );
    p.sample("levee_audit_head_seq", &[], head_seq);
    p.family(
        "levee_audit_head_info",
        "gauge",
        "SHA-256 of the newest audit entry, to anchor with `levee audit verify --head`.",
    );
    p.sample(
        "levee_audit_head_info",
        &[("seq", &head_seq.to_string()), ("sha256", &head_hash)],
        1,
    );
    p.family(
        "levee_config_reloads_total",
        "counter",
        "Config reloads by result.",
    );
    p.sample(
        "levee_config_reloads_total",
        &[("result", "ok")],
        s.counters.config_reloads_ok.load(Ordering::Relaxed),
    );
    p.sample(
        "levee_config_reloads_total",
        &[("result", "rejected")],
        s.counters.config_reloads_rejected.load(Ordering::Relaxed),
    );
    http(&mut p, s);

    if let Some(dp) = &s.dataplane {
        dp.write_metrics(&mut p);
    }
    if let Some(m) = &s.mitigation {
        m.shared.write_metrics(&mut p);
    }
    if let Some(ingest) = &s.ingest {
        ingest.write_metrics(&mut p);
    }
    p.finish()
}

/// The HTTP server's connections and refusals, and failed
/// authentications.
fn http(p: &mut Prom, s: &WebState) {
    p.family(
        "levee_http_connections",
        "gauge",
        "HTTP connections open, by listener (web: [web] listen and metrics_listen; admin: the admin socket).",
    );
    for g in &s.gates {
        p.sample("levee_http_connections", &[("listener", g.name)], g.open());
    }
    p.family(
        "levee_http_connections_total",
        "counter",
        "HTTP connections by listener and outcome: accepted; closed at once because the client had max_connections_per_client (refused_per_client) or every place was busy (refused_full); closed to make room for a new one (evicted).",
    );
    for g in &s.gates {
        let st = &g.stats;
        for (outcome, n) in [
            ("accepted", &st.accepted),
            ("refused_per_client", &st.refused_per_client),
            ("refused_full", &st.refused_full),
            ("evicted", &st.evicted),
        ] {
            p.sample(
                "levee_http_connections_total",
                &[("listener", g.name), ("outcome", outcome)],
                n.load(Ordering::Relaxed),
            );
        }
    }
    p.family(
        "levee_http_accept_errors_total",
        "counter",
        "Connections the kernel could not hand over (accept(2) failed: out of file handles, …).",
    );
    for g in &s.gates {
        p.sample(
            "levee_http_accept_errors_total",
            &[("listener", g.name)],
            g.stats.accept_errors.load(Ordering::Relaxed),
        );
    }
    p.family(
        "levee_http_host_refused_total",
        "counter",
        "Requests refused (421) because their Host header named a host levee does not answer to.",
    );
    p.sample(
        "levee_http_host_refused_total",
        &[],
        s.counters.host_refused.load(Ordering::Relaxed),
    );
    p.family(
        "levee_auth_failures_total",
        "counter",
        "Refused requests by reason: no or a malformed, unknown, wrong or revoked key (401), a key whose scope does not allow the request (forbidden, 403), a wrong /metrics token.",
    );
    let counts = s.auth_failures.counts();
    for r in super::failures::Refusal::all() {
        p.sample(
            "levee_auth_failures_total",
            &[("reason", r.as_str())],
            counts.get(r.as_str()).copied().unwrap_or(0),
        );
    }
}
