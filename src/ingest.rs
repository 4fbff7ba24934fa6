//! Starting and stopping the flow collectors of `[collector]`: a receive
//! thread per socket (see `levee_collectors::listen`), and the counters they
//! publish, gathered for `/metrics`.
//!
//! Threads are plain OS threads (the data plane never runs on tokio). They
//! stop when [`Ingest::stop`] sets their flag; each notices within its poll
//! interval and publishes its counters a last time.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use levee_collectors::capture::LiveCapture;
use levee_collectors::exporter::ExporterCounts;
use levee_collectors::listen::{self, Admission, CapturePublished, Exporters, Published, Sink};
use levee_collectors::receiver::{self, Receiver};

use crate::config::Collectors;

/// One socket levee reads flow export from.
#[derive(Debug)]
pub struct Listener {
    /// `sflow` or `netflow` (the config section it came from).
    pub kind: &'static str,
    pub addr: SocketAddr,
    pub published: Arc<Published>,
}

/// One interface levee captures packets on.
#[derive(Debug)]
pub struct Capture {
    pub interface: String,
    pub published: Arc<CapturePublished>,
}

/// The running collectors.
pub struct Ingest {
    pub listeners: Vec<Listener>,
    pub captures: Vec<Capture>,
    /// Whether flow export may move routes (an allow-list, or
    /// `trust_any_exporter`); local capture always may.
    pub exporters_trusted: bool,
    /// Whether flow export from any source, listed or not, may move
    /// routes (`trust_any_exporter`): said at start and on `/healthz`.
    pub any_exporter_trusted: bool,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Why the collectors could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A listen address could not be bound (in use, not on this box, a
    /// privileged port).
    #[error("binding the {kind} collector to {addr}")]
    Bind {
        kind: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// An interface could not be captured on (no such interface, no
    /// CAP_NET_RAW, a filter libpcap refuses).
    #[error("capturing on {interface}")]
    Capture {
        interface: String,
        #[source]
        source: levee_collectors::capture::CaptureError,
    },
    /// The operating system would not start a thread.
    #[error("starting a collector thread")]
    Thread(#[source] std::io::Error),
}

impl Ingest {
    /// Binds every listen address (`receivers` sockets each) and starts a
    /// thread per socket, each with a sink from `sinks` (the data plane's
    /// rings). Fails if any address cannot be bound.
    pub fn start(
        cfg: &Collectors,
        trust_any_exporter: bool,
        sinks: &mut dyn FnMut() -> Box<dyn Sink + Send>,
    ) -> Result<Ingest, IngestError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut ingest = Ingest {
            listeners: Vec::new(),
            captures: Vec::new(),
            exporters_trusted: !cfg.allowed_exporters.is_empty() || trust_any_exporter,
            any_exporter_trusted: trust_any_exporter,
            stop: stop.clone(),
            threads: Mutex::new(Vec::new()),
        };
        let opts = receiver::Options {
            receive_buffer: cfg.receive_buffer,
            ..receiver::Options::default()
        };
        let admission = Admission {
            allow: cfg.allowed_exporters.clone(),
            max_exporters: cfg.max_exporters,
            idle: cfg.exporter_idle,
            trust_unlisted: trust_any_exporter,
            max_sampling: cfg.max_sampling_rate,
        };
        let exports = !(cfg.sflow.listen.is_empty() && cfg.netflow.listen.is_empty());
        if exports && !admission.trusted() {
            tracing::warn!(
                "No exporter is trusted to move routes: without [collector] allowed_exporters, \
                 levee detects and alerts on flow export but mitigates only on local capture \
                 (set [mitigation] trust_any_exporter = true to trust every source)"
            );
        }
        if exports && trust_any_exporter {
            tracing::warn!(
                "[mitigation] trust_any_exporter = true: flow export from any source, listed or \
                 not, may move routes — one forged datagram can announce a rule; prefer \
                 [collector] allowed_exporters"
            );
        }
        for (kind, addrs) in [
            ("sflow", &cfg.sflow.listen),
            ("netflow", &cfg.netflow.listen),
        ] {
            for addr in addrs {
                let mut bound = *addr;
                for i in 0..cfg.receivers.max(1) {
                    // Port 0: the first socket picks the port, the others join it.
                    let rx = Receiver::bind(bound, opts).map_err(|source| IngestError::Bind {
                        kind,
                        addr: *addr,
                        source,
                    })?;
                    bound = rx.local_addr();
                    if i == 0 {
                        tracing::info!(kind, addr = %bound, receive_buffer = rx.receive_buffer(), "Collector listening");
                    }
                    let published = Arc::new(Published::default());
                    ingest.listeners.push(Listener {
                        kind,
                        addr: bound,
                        published: published.clone(),
                    });
                    let exporters = Exporters::new(admission.clone());
                    let stop = stop.clone();
                    let mut sink = sinks();
                    let handle = std::thread::Builder::new()
                        .name(format!("levee-rx-{kind}-{i}"))
                        .spawn(move || listen::run(rx, exporters, &mut *sink, &published, &stop))
                        .map_err(IngestError::Thread)?;
                    ingest
                        .threads
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(handle);
                }
            }
        }
        for iface in &cfg.pcap.interfaces {
            let cap = LiveCapture::open(
                iface,
                &cfg.pcap.filter,
                cfg.pcap.snaplen,
                cfg.receive_buffer,
                200,
            )
            .map_err(|source| IngestError::Capture {
                interface: iface.clone(),
                source,
            })?;
            tracing::info!(interface = %iface, filter = %cfg.pcap.filter, "Capturing");
            let published = Arc::new(CapturePublished::default());
            ingest.captures.push(Capture {
                interface: iface.clone(),
                published: published.clone(),
            });
            let stop = stop.clone();
            let mut sink = sinks();
            let handle = std::thread::Builder::new()
                .name(format!("levee-cap-{iface}"))
                .spawn(move || listen::run_capture(cap, &mut *sink, &published, &stop))
                .map_err(IngestError::Thread)?;
            ingest
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle);
        }
        Ok(ingest)
    }

    /// Stops every receive thread and waits for them.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Counters per exporter, summed over the receivers that saw it.
    pub fn exporters(&self) -> BTreeMap<IpAddr, ExporterCounts> {
        let mut all: BTreeMap<IpAddr, ExporterCounts> = BTreeMap::new();
        for l in &self.listeners {
            let map = l
                .published
                .exporters
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (ip, c) in map.iter() {
                all.entry(*ip).or_default().add(c);
            }
        }
        all
    }
}

impl Ingest {
    /// Writes the collectors' metrics: exporters, datagrams, records and
    /// decode errors by protocol, captures, sockets.
    pub fn write_metrics(&self, p: &mut crate::exposition::Prom) {
        use levee_collectors::{ErrorKind, Protocol};
        let ingest = self;

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
            (|c| c.template_misses) as fn(&levee_collectors::exporter::ExporterCounts) -> u64,
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
    }
}
