//! Prometheus text exposition (format 0.0.4) of everything levee counts.
//!
//! [`render`] reads shared state and writes `/metrics`; it never blocks on
//! the data plane (receivers publish their counters once a second).

use std::fmt::{Display, Write as _};
use std::sync::atomic::Ordering;

use levee_collectors::{ErrorKind, Protocol};

use super::state::{WebState, COMMIT, VERSION};

/// Writes metric families and samples with escaped label values.
struct Prom {
    out: String,
}

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A summary from an HDR histogram of `units` per second (quantiles
    /// 0.5, 0.9, 0.99 and the count), with `decimals` places of seconds.
    fn summary(
        &mut self,
        name: &str,
        help: &str,
        h: &std::sync::Mutex<Option<hdrhistogram::Histogram<u64>>>,
        units: f64,
        decimals: usize,
    ) {
        self.family(name, "summary", help);
        let h = h.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = h.as_ref() {
            for q in [0.5, 0.9, 0.99] {
                self.sample(
                    name,
                    &[("quantile", &q.to_string())],
                    format!("{:.decimals$}", h.value_at_quantile(q) as f64 / units),
                );
            }
            self.sample(&format!("{name}_count"), &[], h.len());
        }
    }
}

/// The whole `/metrics` page. `store_size` is passed in because measuring it
/// reads the file system (done off the async workers by the caller).
pub fn render(s: &WebState, store_size: u64) -> String {
    let mut p = Prom {
        out: String::with_capacity(4096),
    };
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
        let live = &dp.live;
        p.family(
            "levee_ring_drops_total",
            "counter",
            "Records dropped because a shard ring was full.",
        );
        p.sample(
            "levee_ring_drops_total",
            &[],
            dp.ring_drops.load(Ordering::Relaxed),
        );
        p.family("levee_incidents_active", "gauge", "Incidents in progress.");
        p.sample(
            "levee_incidents_active",
            &[],
            live.incidents_active.load(Ordering::Relaxed),
        );
        p.family("levee_incidents_total", "counter", "Incidents started.");
        p.sample(
            "levee_incidents_total",
            &[],
            live.incidents_started.load(Ordering::Relaxed),
        );
        p.summary(
            "levee_detection_delay_seconds",
            "From the record that crossed a threshold to its incident being recorded.",
            &live.delay,
            1e3,
            3,
        );
        p.family(
            "levee_hosts_tracked",
            "gauge",
            "Protected hosts with traffic being accounted.",
        );
        p.sample(
            "levee_hosts_tracked",
            &[],
            live.hosts.load(Ordering::Relaxed),
        );
        p.family(
            "levee_hosts_detailed",
            "gauge",
            "Hosts with detailed statistics (busy enough to classify).",
        );
        p.sample(
            "levee_hosts_detailed",
            &[],
            live.detailed.load(Ordering::Relaxed),
        );
        p.family(
            "levee_hosts_refused_total",
            "counter",
            "Records for new hosts refused because max_hosts was reached.",
        );
        p.sample(
            "levee_hosts_refused_total",
            &[],
            live.refused.load(Ordering::Relaxed),
        );
        p.family(
            "levee_hosts_evicted_total",
            "counter",
            "Hosts forgotten after host_idle without traffic.",
        );
        p.sample(
            "levee_hosts_evicted_total",
            &[],
            live.evicted.load(Ordering::Relaxed),
        );
        p.family(
            "levee_hosts_details_refused_total",
            "counter",
            "Host-seconds busy enough for detailed statistics that found max_detailed reached.",
        );
        p.sample(
            "levee_hosts_details_refused_total",
            &[],
            live.details_refused.load(Ordering::Relaxed),
        );
        p.family(
            "levee_hosts_details_replaced_total",
            "counter",
            "Detailed statistics taken from a far quieter host for a busier one when max_detailed was reached.",
        );
        p.sample(
            "levee_hosts_details_replaced_total",
            &[],
            live.details_replaced.load(Ordering::Relaxed),
        );
        for (name, kind, help, value) in [
            (
                "levee_prefixes_tracked",
                "gauge",
                "Prefix aggregates with recent traffic being accounted ([hostgroup.prefix_thresholds]).",
                &live.prefixes,
            ),
            (
                "levee_prefixes_refused_total",
                "counter",
                "Host-seconds left out of their prefix aggregate: the shard held as many aggregates as it may, none idle.",
                &live.prefixes_refused,
            ),
            (
                "levee_prefixes_evicted_total",
                "counter",
                "Idle prefix aggregates forgotten early to make room for a new one.",
                &live.prefixes_evicted,
            ),
            (
                "levee_prefix_details_replaced_total",
                "counter",
                "Detailed statistics taken from a far quieter prefix for a busier one when the pool was full.",
                &live.prefix_details_replaced,
            ),
        ] {
            p.family(name, kind, help);
            p.sample(name, &[], value.load(Ordering::Relaxed));
        }
        let groups = live
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        p.family(
            "levee_hostgroup_packets_per_second",
            "gauge",
            "A hostgroup's packets in the last second, inbound by class (all, tcp, tcp_syn, udp, icmp, fragment, other) and outbound.",
        );
        for (name, g) in &groups {
            for (class, n) in crate::accounting::class::NAMES.iter().zip(g.packets) {
                p.sample(
                    "levee_hostgroup_packets_per_second",
                    &[("hostgroup", name), ("direction", "in"), ("class", class)],
                    n,
                );
            }
            p.sample(
                "levee_hostgroup_packets_per_second",
                &[("hostgroup", name), ("direction", "out"), ("class", "all")],
                g.out_packets,
            );
        }
        p.family(
            "levee_hostgroup_bits_per_second",
            "gauge",
            "A hostgroup's IP-layer bits in the last second.",
        );
        for (name, g) in &groups {
            for (dir, bytes) in [("in", g.bytes), ("out", g.out_bytes)] {
                p.sample(
                    "levee_hostgroup_bits_per_second",
                    &[("hostgroup", name), ("direction", dir)],
                    bytes * 8,
                );
            }
        }
        p.family(
            "levee_hostgroup_flows_per_second",
            "gauge",
            "Flow records (sFlow samples, packets of a capture) for a hostgroup in the last second.",
        );
        for (name, g) in &groups {
            for (dir, flows) in [("in", g.flows), ("out", g.out_flows)] {
                p.sample(
                    "levee_hostgroup_flows_per_second",
                    &[("hostgroup", name), ("direction", dir)],
                    flows,
                );
            }
        }
        p.family(
            "levee_hostgroup_hosts_active",
            "gauge",
            "Hosts of a hostgroup with traffic in the last second.",
        );
        for (name, g) in &groups {
            p.sample(
                "levee_hostgroup_hosts_active",
                &[("hostgroup", name)],
                g.hosts,
            );
        }
    }
    if let Some(m) = &s.mitigation {
        mitigation(&mut p, &m.shared);
    }
    let Some(ingest) = &s.ingest else {
        return p.out;
    };
    let exporters = ingest.exporters();
    let mut errors = [[0u64; ErrorKind::COUNT]; Protocol::COUNT];
    p.family(
        "levee_datagrams_total",
        "counter",
        "Flow-export datagrams received, by protocol and exporter.",
    );
    for (ip, c) in &exporters {
        let ip = ip.to_string();
        for proto in Protocol::ALL {
            let n = c.datagrams[proto.index()];
            if n > 0 {
                p.sample(
                    "levee_datagrams_total",
                    &[("protocol", proto.as_str()), ("exporter", &ip)],
                    n,
                );
            }
        }
        for (row, other) in errors.iter_mut().zip(&c.errors) {
            for (a, b) in row.iter_mut().zip(other) {
                *a += b;
            }
        }
    }
    for c in &ingest.captures {
        let n = c.published.frames.load(Ordering::Relaxed);
        p.sample(
            "levee_datagrams_total",
            &[("protocol", "pcap"), ("exporter", &c.interface)],
            n,
        );
        errors[Protocol::Pcap.index()][ErrorKind::BadPacket.index()] +=
            c.published.bad_packets.load(Ordering::Relaxed);
    }
    p.family(
        "levee_records_total",
        "counter",
        "Flow records decoded (sFlow: flow samples; pcap: packets), by protocol and exporter.",
    );
    for c in &ingest.captures {
        let n = c.published.records.load(Ordering::Relaxed);
        p.sample(
            "levee_records_total",
            &[("protocol", "pcap"), ("exporter", &c.interface)],
            n,
        );
    }
    for (ip, c) in &exporters {
        let ip = ip.to_string();
        for proto in Protocol::ALL {
            let n = c.records[proto.index()];
            if n > 0 {
                p.sample(
                    "levee_records_total",
                    &[("protocol", proto.as_str()), ("exporter", &ip)],
                    n,
                );
            }
        }
    }
    p.family(
        "levee_decode_errors_total",
        "counter",
        "Decode errors by protocol and kind.",
    );
    for proto in Protocol::ALL {
        for kind in ErrorKind::ALL {
            let n = errors[proto.index()][kind.index()];
            if n > 0 {
                p.sample(
                    "levee_decode_errors_total",
                    &[("protocol", proto.as_str()), ("kind", kind.as_str())],
                    n,
                );
            }
        }
    }
    for (name, help, get) in [
        (
            "levee_template_misses_total",
            "Data sets whose template was unknown, by exporter.",
            (|c| c.template_misses) as fn(&levee_collectors::exporter::Counters) -> u64,
        ),
        (
            "levee_sequence_lost_total",
            "Loss told by sequence numbers, by exporter (sFlow and NetFlow v9: datagrams; NetFlow v5: flows; IPFIX: records).",
            |c| c.lost,
        ),
        (
            "levee_exporter_clock_skew_total",
            "Records placed at their arrival because the exporter's header and flow times disagree, by exporter.",
            |c| c.clock_skew,
        ),
        (
            "levee_exporter_drops_total",
            "Packets the exporter reports it could not sample (sFlow drops), by exporter.",
            |c| c.exporter_drops,
        ),
    ] {
        p.family(name, "counter", help);
        for (ip, c) in &exporters {
            p.sample(name, &[("exporter", &ip.to_string())], get(c));
        }
    }
    p.family(
        "levee_exporter_longest_flow_seconds",
        "gauge",
        "The longest flow an exporter's records reported: about its active timeout, which bounds how late an attack carried in long flows is seen.",
    );
    for (ip, c) in &exporters {
        if c.longest_flow_s > 0 {
            p.sample(
                "levee_exporter_longest_flow_seconds",
                &[("exporter", &ip.to_string())],
                u64::from(c.longest_flow_s),
            );
        }
    }
    p.family(
        "levee_socket_drops_total",
        "counter",
        "Datagrams the kernel dropped on levee's sockets (receive buffer full).",
    );
    for l in &ingest.listeners {
        p.sample(
            "levee_socket_drops_total",
            &[("listener", &format!("{}/{}", l.kind, l.addr))],
            l.published.socket_drops.load(Ordering::Relaxed),
        );
    }
    for c in &ingest.captures {
        p.sample(
            "levee_socket_drops_total",
            &[("listener", &format!("pcap/{}", c.interface))],
            c.published.kernel_drops.load(Ordering::Relaxed),
        );
    }
    p.family(
        "levee_capture_interface_drops_total",
        "counter",
        "Packets the capture interface or its driver dropped.",
    );
    for c in &ingest.captures {
        p.sample(
            "levee_capture_interface_drops_total",
            &[("interface", &c.interface)],
            c.published.interface_drops.load(Ordering::Relaxed),
        );
    }
    p.family(
        "levee_exporter_refused_total",
        "counter",
        "Datagrams refused: source not allowed, or the exporter limit reached.",
    );
    let sum = |f: fn(&levee_collectors::listen::Published) -> u64| -> u64 {
        ingest.listeners.iter().map(|l| f(&l.published)).sum()
    };
    p.sample(
        "levee_exporter_refused_total",
        &[("reason", "not_allowed")],
        sum(|p| p.refused_not_allowed.load(Ordering::Relaxed)),
    );
    p.sample(
        "levee_exporter_refused_total",
        &[("reason", "limit")],
        sum(|p| p.refused_limit.load(Ordering::Relaxed)),
    );
    p.family(
        "levee_exporters_evicted_total",
        "counter",
        "Exporters silent for exporter_idle forgotten to make room for a new source.",
    );
    p.sample(
        "levee_exporters_evicted_total",
        &[],
        sum(|p| p.evicted.load(Ordering::Relaxed)),
    );
    p.family(
        "levee_records_refused_total",
        "counter",
        "Flow records dropped before accounting: a sampling rate above max_sampling_rate.",
    );
    p.sample(
        "levee_records_refused_total",
        &[("reason", "sampling")],
        sum(|p| p.implausible_sampling.load(Ordering::Relaxed)),
    );
    p.family(
        "levee_datagrams_truncated_total",
        "counter",
        "Datagrams larger than a receive slot (64 KiB), cut before decoding.",
    );
    p.sample(
        "levee_datagrams_truncated_total",
        &[],
        sum(|p| p.truncated.load(Ordering::Relaxed)),
    );
    p.out
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

fn mitigation(p: &mut Prom, m: &crate::mitigation::service::Shared) {
    use crate::config::Level;
    p.family(
        "levee_bgp_up",
        "gauge",
        "1 while levee is connected to its gobgpd.",
    );
    p.sample(
        "levee_bgp_up",
        &[],
        u64::from(m.bgp_up.load(Ordering::Relaxed)),
    );
    p.family(
        "levee_mitigations_active",
        "gauge",
        "Mitigations in force, by level (shadowed ones under shadow=\"true\").",
    );
    let active = m.active.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for level in Level::ALL {
        for shadow in [false, true] {
            let n = active
                .iter()
                .filter(|a| a.level == level && a.shadow == shadow)
                .count();
            p.sample(
                "levee_mitigations_active",
                &[("level", level.as_str()), ("shadow", &shadow.to_string())],
                n,
            );
        }
    }
    p.family(
        "levee_mitigation_updates_total",
        "counter",
        "Announcements and withdrawals levee decided (sent, shadowed or failed).",
    );
    p.sample(
        "levee_mitigation_updates_total",
        &[("action", "announce")],
        m.announced.load(Ordering::Relaxed),
    );
    p.sample(
        "levee_mitigation_updates_total",
        &[("action", "withdraw")],
        m.withdrawn.load(Ordering::Relaxed),
    );
    p.family(
        "levee_mitigation_failures_total",
        "counter",
        "Updates gobgpd refused or could not be sent (reconciliation retries them).",
    );
    p.sample(
        "levee_mitigation_failures_total",
        &[],
        m.failed.load(Ordering::Relaxed),
    );
    p.family(
        "levee_mitigation_refusals_total",
        "counter",
        "Levels skipped for a host: guards, budgets, nothing to announce.",
    );
    p.sample(
        "levee_mitigation_refusals_total",
        &[],
        m.refused.load(Ordering::Relaxed),
    );
    p.family(
        "levee_mitigation_repairs_total",
        "counter",
        "Routes reconciliation announced again or withdrawn as orphans.",
    );
    p.sample(
        "levee_mitigation_repairs_total",
        &[],
        m.repaired.load(Ordering::Relaxed),
    );
    p.family(
        "levee_mitigation_events_dropped_total",
        "counter",
        "Incident updates lost because the mitigation queue was full.",
    );
    p.sample(
        "levee_mitigation_events_dropped_total",
        &[],
        m.dropped.load(Ordering::Relaxed),
    );
    p.summary(
        "levee_bgp_round_trip_seconds",
        "Time gobgpd took to answer an announcement or withdrawal.",
        &m.round_trip,
        1e6,
        6,
    );
}
