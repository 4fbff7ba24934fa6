//! The receive loop: one thread per [`Receiver`], from socket to records.
//!
//! For each batch of datagrams: admit the source (allow-list, exporter
//! limit), decode with that exporter's state into a reused buffer, hand the
//! records to the [`Sink`], and count. Counters live in the thread and are
//! published to [`Published`] once a second (a lock per second, never per
//! datagram or record).
//!
//! Lifecycle: [`run`] returns when `stop` is set (checked at least every poll
//! interval of the receiver), after a last publish.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::now_ms;

use ipnet::IpNet;

use crate::exporter::{Exporter, ExporterCounts};
use crate::receiver::Receiver;
use crate::record::{flags, FlowRecord};
use crate::Datagram;

/// Where decoded records go (the accounting rings, in levee).
pub trait Sink {
    fn accept(&mut self, records: &[FlowRecord]);
}

/// Which sources may export to levee, how many exporters it tracks, and
/// which of their records may be the ground for a mitigation.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Prefixes allowed to send; empty allows every source.
    pub allow: Vec<IpNet>,
    /// Exporters tracked at most. When full, the exporter idle longest
    /// (past `idle`) makes room for a new source; only when none is idle
    /// are datagrams from further sources refused — so sources that send
    /// once (forged, or gone) cannot lock real routers out.
    pub max_exporters: usize,
    /// An exporter silent this long may be forgotten to make room.
    pub idle: Duration,
    /// Trust every admitted exporter even without an allow-list. With an
    /// allow-list, the admitted exporters are the trusted ones; without
    /// one and without this, records are marked [`flags::UNTRUSTED`]:
    /// detected and alerted on, never mitigated on.
    pub trust_unlisted: bool,
    /// A sampling rate above this is no router's: records claiming it are
    /// dropped and counted (one forged sample at 1:100000 would stand for
    /// a flood).
    pub max_sampling: u32,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            allow: Vec::new(),
            max_exporters: 4096,
            idle: Duration::from_secs(300),
            trust_unlisted: false,
            max_sampling: 65_536,
        }
    }
}

impl Admission {
    /// Whether records from admitted exporters are trusted.
    pub fn trusted(&self) -> bool {
        !self.allow.is_empty() || self.trust_unlisted
    }
}

/// Counters one receive loop publishes.
#[derive(Debug, Default)]
pub struct Published {
    /// Per exporter, as of the last publish.
    pub exporters: Mutex<HashMap<IpAddr, ExporterCounts>>,
    /// Datagrams the kernel dropped on this socket (its `sk_drops`).
    pub socket_drops: AtomicU64,
    /// Datagrams from sources outside the allow-list.
    pub refused_not_allowed: AtomicU64,
    /// Datagrams from new sources past the exporter limit.
    pub refused_limit: AtomicU64,
    /// Idle exporters forgotten to make room for new sources.
    pub evicted: AtomicU64,
    /// Records dropped for a sampling rate above `max_sampling`.
    pub implausible_sampling: AtomicU64,
    /// Datagrams larger than a receive slot (cut, then decoded as far as possible).
    pub truncated: AtomicU64,
}

/// The exporters one receive loop knows.
#[derive(Debug)]
pub struct Exporters {
    map: HashMap<IpAddr, (Exporter, u64)>,
    admission: Admission,
    refused_not_allowed: u64,
    refused_limit: u64,
    evicted: u64,
}

impl Exporters {
    pub fn new(admission: Admission) -> Exporters {
        Exporters {
            map: HashMap::new(),
            admission,
            refused_not_allowed: 0,
            refused_limit: 0,
            evicted: 0,
        }
    }

    /// The state of `source` (heard from at `now_ms`), admitting it if
    /// allowed and there is room — made, when full, by forgetting the
    /// exporter idle longest if it has been idle past `idle`.
    pub fn admit(&mut self, source: IpAddr, now_ms: u64) -> Option<&mut Exporter> {
        if !self.map.contains_key(&source) {
            let a = &self.admission;
            if !a.allow.is_empty() && !a.allow.iter().any(|n| n.contains(&source)) {
                self.refused_not_allowed += 1;
                return None;
            }
            if self.map.len() >= a.max_exporters {
                let idle_ms = a.idle.as_millis() as u64;
                let oldest = self
                    .map
                    .iter()
                    .min_by_key(|(_, (_, seen))| *seen)
                    .filter(|(_, (_, seen))| now_ms.saturating_sub(*seen) >= idle_ms)
                    .map(|(ip, _)| *ip);
                match oldest {
                    Some(ip) => {
                        self.map.remove(&ip);
                        self.evicted += 1;
                    }
                    None => {
                        self.refused_limit += 1;
                        return None;
                    }
                }
            }
        }
        let e = self
            .map
            .entry(source)
            .or_insert_with(|| (Exporter::default(), now_ms));
        e.1 = now_ms;
        Some(&mut e.0)
    }

    /// What records from admitted exporters become: trusted or not, and
    /// the highest plausible sampling rate.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn get(&self, source: &IpAddr) -> Option<&Exporter> {
        self.map.get(source).map(|(e, _)| e)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Exporter)> {
        self.map.iter().map(|(ip, (e, _))| (ip, e))
    }

    /// Replaces the admission policy (config reload); known exporters that
    /// the new allow-list excludes are forgotten.
    pub fn set_admission(&mut self, admission: Admission) {
        if !admission.allow.is_empty() {
            self.map
                .retain(|ip, _| admission.allow.iter().any(|n| n.contains(ip)));
        }
        self.admission = admission;
    }
}

const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Runs the receive loop until `stop` is set.
pub fn run(
    mut rx: Receiver,
    mut exporters: Exporters,
    sink: &mut dyn Sink,
    published: &Published,
    stop: &AtomicBool,
) {
    let mut out: Vec<FlowRecord> = Vec::with_capacity(4096);
    let mut truncated = 0u64;
    let mut implausible = 0u64;
    let mut last_publish = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let n = match rx.recv() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(listener = %rx.local_addr(), error = %e, "Receive failed");
                std::thread::sleep(Duration::from_millis(100));
                0
            }
        };
        if n > 0 {
            let received_ms = now_ms();
            for i in 0..n {
                let Some(d) = rx.get(i) else { continue };
                truncated += u64::from(d.truncated);
                let Some(exporter) = exporters.admit(d.source.ip(), received_ms) else {
                    continue;
                };
                let dg = Datagram {
                    data: d.data,
                    source: d.source.ip(),
                    received_ms,
                };
                if let Err(e) = exporter.decode(&dg, &mut out) {
                    tracing::debug!(exporter = %d.source, error = %e, "Decode error");
                }
            }
            if !out.is_empty() {
                implausible += vet(&mut out, exporters.admission());
                sink.accept(&out);
                out.clear();
            }
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            published
                .implausible_sampling
                .store(implausible, Ordering::Relaxed);
            publish(&rx, &exporters, truncated, published);
            last_publish = Instant::now();
        }
    }
    published
        .implausible_sampling
        .store(implausible, Ordering::Relaxed);
    publish(&rx, &exporters, truncated, published);
}

/// Drops records whose sampling rate no router uses and marks the rest
/// untrusted when the admission says so; returns the records dropped.
pub fn vet(out: &mut Vec<FlowRecord>, a: &Admission) -> u64 {
    let before = out.len();
    let max = a.max_sampling.max(1);
    if out.iter().any(|r| r.sampling > max) {
        out.retain(|r| r.sampling <= max);
    }
    if !a.trusted() {
        for r in out.iter_mut() {
            r.flags |= flags::UNTRUSTED;
        }
    }
    (before - out.len()) as u64
}

fn publish(rx: &Receiver, exporters: &Exporters, truncated: u64, p: &Published) {
    p.socket_drops
        .store(u64::from(rx.kernel_drops()), Ordering::Relaxed);
    p.refused_not_allowed
        .store(exporters.refused_not_allowed, Ordering::Relaxed);
    p.refused_limit
        .store(exporters.refused_limit, Ordering::Relaxed);
    p.evicted.store(exporters.evicted, Ordering::Relaxed);
    p.truncated.store(truncated, Ordering::Relaxed);
    let mut map = p.exporters.lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|ip, _| exporters.map.contains_key(ip));
    for (ip, (e, _)) in &exporters.map {
        map.insert(*ip, e.counters());
    }
}

/// A sink that only counts; used until accounting consumes the records.
#[derive(Debug, Default)]
pub struct CountingSink {
    pub records: Arc<AtomicU64>,
}

impl Sink for CountingSink {
    fn accept(&mut self, records: &[FlowRecord]) {
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
    }
}

/// Counters one live capture publishes.
#[derive(Debug, Default)]
pub struct CapturePublished {
    /// Frames read from the interface.
    pub frames: AtomicU64,
    /// IP packets turned into records.
    pub records: AtomicU64,
    /// Frames that were not IP (ARP, LLDP, …).
    pub non_ip: AtomicU64,
    /// IP headers too short or invalid.
    pub bad_packets: AtomicU64,
    /// Packets the kernel dropped (buffer full) and the interface dropped.
    pub kernel_drops: AtomicU64,
    pub interface_drops: AtomicU64,
}

/// Runs a live capture until `stop` is set: each IP packet becomes one
/// record; records go to the sink in batches.
pub fn run_capture(
    mut cap: crate::capture::LiveCapture,
    sink: &mut dyn Sink,
    published: &CapturePublished,
    stop: &AtomicBool,
) {
    use crate::packet::{self, PacketError};
    let mut out: Vec<FlowRecord> = Vec::with_capacity(1024);
    let (mut frames, mut records, mut non_ip, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut last_publish = Instant::now();
    let exporter = crate::record::Addr::UNSPECIFIED;
    while !stop.load(Ordering::Relaxed) {
        match cap.next_frame() {
            Ok(Some(f)) => {
                frames += 1;
                // Parsed in place into the record it becomes (see packet::parse_into).
                out.push(crate::capture::captured(f.time_us / 1000, exporter));
                let slot = out.len() - 1;
                match packet::parse_into(f.link, f.data, &mut out[slot]) {
                    Ok(_) => records += 1,
                    Err(e) => {
                        out.pop();
                        match e {
                            PacketError::NotIp(_) => non_ip += 1,
                            _ => bad += 1,
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(interface = cap.interface(), error = %e, "Capture failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if out.len() >= 1024
            || (!out.is_empty() && last_publish.elapsed() >= Duration::from_millis(100))
        {
            sink.accept(&out);
            out.clear();
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            let d = cap.drops();
            published
                .kernel_drops
                .store(u64::from(d.kernel), Ordering::Relaxed);
            published
                .interface_drops
                .store(u64::from(d.interface), Ordering::Relaxed);
            published.frames.store(frames, Ordering::Relaxed);
            published.records.store(records, Ordering::Relaxed);
            published.non_ip.store(non_ip, Ordering::Relaxed);
            published.bad_packets.store(bad, Ordering::Relaxed);
            last_publish = Instant::now();
        }
    }
    if !out.is_empty() {
        sink.accept(&out);
    }
    published.frames.store(frames, Ordering::Relaxed);
    published.records.store(records, Ordering::Relaxed);
    published.non_ip.store(non_ip, Ordering::Relaxed);
    published.bad_packets.store(bad, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_sources_cannot_lock_real_exporters_out() {
        let mut e = Exporters::new(Admission {
            max_exporters: 2,
            idle: Duration::from_secs(60),
            ..Admission::default()
        });
        let (a, b, c) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            "192.0.2.3".parse().unwrap(),
        );
        assert!(e.admit(a, 0).is_some());
        assert!(e.admit(b, 1_000).is_some());
        // Full, nobody idle: refused.
        assert!(e.admit(c, 30_000).is_none());
        assert_eq!(e.refused_limit, 1);
        // The one silent for a minute makes room; the busy one stays.
        assert!(e.admit(b, 59_000).is_some());
        assert!(e.admit(c, 61_000).is_some());
        assert_eq!(e.evicted, 1);
        assert!(e.get(&a).is_none() && e.get(&b).is_some());
    }

    #[test]
    fn records_are_vetted_for_sampling_and_trust() {
        let rec = |sampling| FlowRecord {
            sampling,
            packets: u64::from(sampling),
            ..FlowRecord::default()
        };
        let mut out = vec![rec(1), rec(4096), rec(100_000)];
        let open = Admission::default();
        assert_eq!(vet(&mut out, &open), 1, "1:100000 is no router's");
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.flags & flags::UNTRUSTED != 0));
        let listed = Admission {
            allow: vec!["192.0.2.0/24".parse().unwrap()],
            ..Admission::default()
        };
        let mut out = vec![rec(1)];
        vet(&mut out, &listed);
        assert_eq!(out[0].flags & flags::UNTRUSTED, 0);
        let trusting = Admission {
            trust_unlisted: true,
            ..Admission::default()
        };
        let mut out = vec![rec(1)];
        vet(&mut out, &trusting);
        assert_eq!(out[0].flags & flags::UNTRUSTED, 0);
    }
}
