//! `levee run`'s data plane: receive threads → SPSC rings → shard threads →
//! the detector thread.
//!
//! - Each receive or capture thread routes its records ([`Routing`]) and
//!   pushes them into one bounded single-producer/single-consumer ring
//!   (`rtrb`) per shard. A full ring drops the record and counts it: a
//!   receiver never blocks.
//! - Each shard thread owns one [`Shard`] outright and drains its rings (one
//!   per receiver). It keeps the wall clock: when a second ends it sends the
//!   second's [`Snapshot`], and a threshold crossing is sent as a
//!   [`Trigger`] at once, followed by [`Peek`]s at the host's details
//!   while the evidence for a rule comes in.
//! - The detector thread merges the shards' seconds, runs the [`Detector`],
//!   and hands every event to the [`Outcomes`]: the store (incidents,
//!   per-second host metrics, minute rollups, baselines), the audit chain,
//!   and the live state the API and `/metrics` read.
//!
//! No lock is taken per record. Threads stop when the stop flag is set;
//! shard threads end their current second first so nothing counted is lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use levee_collectors::listen::Sink;
use levee_collectors::{Addr, FlowRecord};
use serde_json::json;

use crate::accounting::{
    class, GroupSecond, HostSecond, Peek, PrefixPeek, Rec, Shard, ShardStats, Snapshot, Trigger,
};
use crate::audit::{Actor, AuditLog};
use crate::config::Config;
use crate::detect::{Detector, Event, Incident, Legit, Settings, Timeline};
use crate::hostgroups::{GroupId, Hostgroups};
use crate::pipeline::{bounds, judge, limits, merge, Merged, Routing};
use crate::report::incident_json;
use crate::store::{IncidentWrite, Store, Subject};

/// Records each ring holds.
pub const RING: usize = 262_144;

/// A receive thread's end of the rings.
pub struct RingSink {
    routing: Arc<ArcSwap<Routing>>,
    producers: Vec<rtrb::Producer<Rec>>,
    /// Per shard, the records of the current datagram bound for it: (index
    /// in the datagram, hostgroup, outbound).
    staged: Vec<Vec<(u32, GroupId, bool)>>,
    drops: Arc<AtomicU64>,
}

impl Sink for RingSink {
    /// Routes a datagram's records, then writes each shard's share into its
    /// ring as one chunk: one publication per datagram and shard, not one
    /// per record, so the ring's indices bounce between cores less.
    fn accept(&mut self, records: &[FlowRecord]) {
        let routing = self.routing.load();
        let staged = &mut self.staged;
        for (i, r) in records.iter().enumerate() {
            routing.route(r, |shard, _, group, outbound| {
                staged[shard].push((i as u32, group, outbound));
            });
        }
        let mut dropped = 0u64;
        for (producer, routes) in self.producers.iter_mut().zip(&mut self.staged) {
            if routes.is_empty() {
                continue;
            }
            let n = routes.len().min(producer.slots());
            if let Ok(chunk) = producer.write_chunk_uninit(n) {
                chunk.fill_from_iter(
                    routes.iter().map(|&(i, group, outbound)| {
                        Rec::new(&records[i as usize], group, outbound)
                    }),
                );
            }
            dropped += (routes.len() - n) as u64;
            routes.clear();
        }
        if dropped > 0 {
            self.drops.fetch_add(dropped, Ordering::Relaxed);
        }
    }
}

enum Msg {
    Second(Snapshot),
    Triggers(Vec<Trigger>),
    Peeks(Vec<Peek>),
    /// Looks at busy prefixes, from shard `.0`.
    PrefixPeeks(usize, Vec<PrefixPeek>),
}

/// What the API and `/metrics` read, refreshed by the detector thread.
#[derive(Debug, Default)]
pub struct Live {
    /// Incidents in progress (the API reads them from the store, where
    /// each is written as it changes).
    pub incidents_active: AtomicU64,
    /// The busiest hosts of the last second: (address, hostgroup, pps, bps).
    pub top: Mutex<Vec<(Addr, String, u64, u64)>>,
    /// Every hostgroup's totals in the last second.
    pub groups: Mutex<Vec<(String, GroupSecond)>>,
    /// Milliseconds from a trigger's record to its incident being recorded.
    pub delay: Mutex<Option<hdrhistogram::Histogram<u64>>>,
    pub incidents_started: AtomicU64,
    pub hosts: AtomicU64,
    pub detailed: AtomicU64,
    pub refused: AtomicU64,
    pub evicted: AtomicU64,
    pub details_refused: AtomicU64,
    pub details_replaced: AtomicU64,
    pub prefixes: AtomicU64,
    pub prefixes_refused: AtomicU64,
    pub prefixes_evicted: AtomicU64,
    pub prefix_details_replaced: AtomicU64,
}

/// A question for the detector thread: a host's legitimate-traffic
/// profile, answered on its next pass (at most 200 ms away).
type LegitQuery = (Addr, tokio::sync::oneshot::Sender<Option<Legit>>);

/// Questions waiting for the detector thread.
const QUERIES: usize = 64;

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `start` was called twice.
    #[error("the data plane is started already")]
    Started,
    /// The operating system would not start a thread.
    #[error("starting a data-plane thread")]
    Thread(#[source] std::io::Error),
}

/// The running data plane.
pub struct Dataplane {
    routing: Arc<ArcSwap<Routing>>,
    pub ring_drops: Arc<AtomicU64>,
    pub live: Arc<Live>,
    shards: usize,
    /// Consumers waiting for their shard thread (filled by `sink()`).
    pending: Mutex<Vec<Vec<rtrb::Consumer<Rec>>>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    settings: Arc<ArcSwap<Settings>>,
    queries: mpsc::SyncSender<LegitQuery>,
    /// The detector thread's end, until it starts.
    query_rx: Mutex<Option<Receiver<LegitQuery>>>,
}

use levee_collectors::clock::now_ms;

impl Dataplane {
    /// The hostgroups of the running configuration.
    pub fn hostgroups(&self) -> Vec<String> {
        self.settings.load().groups.clone()
    }

    /// The hostgroup `a` belongs to under the running configuration.
    pub fn hostgroup_of(&self, a: &Addr) -> Option<String> {
        let g = self.routing.load().groups.lookup(a)?;
        self.settings.load().groups.get(usize::from(g)).cloned()
    }

    /// A host's legitimate-traffic profile as the detector holds it
    /// (`Detector::legit`); `None` for a host it does not track, or when
    /// the detector does not answer within a second.
    pub async fn legit(&self, a: Addr) -> Option<Legit> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queries.try_send((a, tx)).ok()?;
        tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .ok()?
            .ok()?
    }

    /// Shards follow the cores.
    pub fn new(c: &Config) -> Dataplane {
        let shards = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 64);
        let (queries, query_rx) = mpsc::sync_channel(QUERIES);
        Dataplane {
            routing: Arc::new(ArcSwap::from_pointee(Routing {
                groups: Arc::new(Hostgroups::new(&c.hostgroups)),
                shards,
            })),
            ring_drops: Arc::new(AtomicU64::new(0)),
            live: Arc::new(Live::default()),
            shards,
            pending: Mutex::new((0..shards).map(|_| Vec::new()).collect()),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            settings: Arc::new(ArcSwap::from_pointee(Settings::from_config(c))),
            queries,
            query_rx: Mutex::new(Some(query_rx)),
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// A sink for one more receive thread: a ring to every shard.
    pub fn sink(&mut self) -> RingSink {
        let mut producers = Vec::with_capacity(self.shards);
        let mut all = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for pending in all.iter_mut() {
            let (p, c) = rtrb::RingBuffer::new(RING);
            producers.push(p);
            pending.push(c);
        }
        RingSink {
            routing: self.routing.clone(),
            staged: vec![Vec::with_capacity(64); producers.len()],
            producers,
            drops: self.ring_drops.clone(),
        }
    }

    /// Starts the shard threads and the detector thread.
    pub fn start(
        &mut self,
        c: &Config,
        store: Arc<Store>,
        audit: Arc<AuditLog>,
        mitigation: Option<crate::mitigation::service::Handle>,
    ) -> Result<(), StartError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let stats: Vec<Arc<Mutex<ShardStats>>> = (0..self.shards).map(|_| Arc::default()).collect();
        let rings = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (i, consumers) in rings.into_iter().enumerate() {
            let shard = Shard::new(limits(c), bounds(c, self.shards));
            let (tx, stop, stat) = (tx.clone(), self.stop.clone(), stats[i].clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("levee-shard-{i}"))
                    .spawn(move || shard_loop(i, shard, consumers, tx, stop, stat))
                    .map_err(StartError::Thread)?,
            );
        }
        drop(tx);
        let mut detector = Detector::new(Settings::from_config(c));
        restore_baselines(&store, &mut detector);
        let outcomes = Outcomes {
            store,
            audit,
            live: self.live.clone(),
            groups: c.hostgroups.iter().map(|g| g.name.clone()).collect(),
            minute: HashMap::new(),
            group_minute: Vec::new(),
            minute_start: 0,
            mitigation,
            classified: HashMap::new(),
        };
        let (shards, settings) = (self.shards, self.settings.clone());
        let queries = self
            .query_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(StartError::Started)?;
        threads.push(
            std::thread::Builder::new()
                .name("levee-detect".into())
                .spawn(move || {
                    detector_loop(detector, rx, shards, outcomes, settings, stats, queries)
                })
                .map_err(StartError::Thread)?,
        );
        Ok(())
    }

    /// A new config: routing and detection settings change at once; shard
    /// limits follow at the next restart.
    pub fn reconfigure(&self, c: &Config) {
        self.routing.store(Arc::new(Routing {
            groups: Arc::new(Hostgroups::new(&c.hostgroups)),
            shards: self.shards,
        }));
        self.settings.store(Arc::new(Settings::from_config(c)));
    }

    /// Stops every thread; the shards end their second first.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Records a shard takes from one ring before looking at the clock again.
const BATCH: usize = 4096;

fn shard_loop(
    index: usize,
    mut shard: Shard,
    mut rings: Vec<rtrb::Consumer<Rec>>,
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ShardStats>>,
) {
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = now_ms();
        if let Some(snap) = shard.advance(now) {
            *stats.lock().unwrap_or_else(|e| e.into_inner()) = shard.stats;
            if tx.send(Msg::Second(snap)).is_err() {
                return;
            }
        }
        let mut taken = 0;
        for ring in &mut rings {
            let n = ring.slots().min(BATCH);
            if n == 0 {
                continue;
            }
            if let Ok(chunk) = ring.read_chunk(n) {
                let (a, b) = chunk.as_slices();
                shard.account_batch(a.iter().chain(b));
                chunk.commit_all();
            }
            taken += n;
        }
        let triggers = shard.take_triggers();
        if !triggers.is_empty() && tx.send(Msg::Triggers(triggers)).is_err() {
            return;
        }
        let peeks = shard.take_peeks();
        if !peeks.is_empty() && tx.send(Msg::Peeks(peeks)).is_err() {
            return;
        }
        let looks = shard.take_prefix_peeks();
        if !looks.is_empty() && tx.send(Msg::PrefixPeeks(index, looks)).is_err() {
            return;
        }
        if stopping {
            let _ = tx.send(Msg::Second(shard.flush()));
            return;
        }
        if taken == 0 {
            // Every wake-up costs a context switch; the rings hold far more
            // than a few milliseconds of records.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn restore_baselines(store: &Store, detector: &mut Detector) {
    match store.baselines() {
        Ok(rows) => {
            let saved: Vec<(Addr, crate::detect::Saved)> = rows
                .into_iter()
                .filter_map(|(addr, bytes)| {
                    serde_json::from_slice(&bytes).ok().map(|s| (Addr(addr), s))
                })
                .collect();
            let (n, kept) = (saved.len(), detector.restore(saved));
            if n > 0 {
                tracing::info!(
                    hosts = kept,
                    saved = n,
                    "Baselines and traffic profiles restored"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "Cannot read baselines; relearning"),
    }
    match store.prefix_baselines() {
        Ok(rows) => {
            let saved: Vec<(Addr, crate::detect::prefix::SavedPrefix)> = rows
                .into_iter()
                .filter_map(|(addr, _, bytes)| {
                    serde_json::from_slice(&bytes).ok().map(|s| (Addr(addr), s))
                })
                .collect();
            let (n, kept) = (saved.len(), detector.restore_prefixes(saved));
            if n > 0 {
                tracing::info!(prefixes = kept, saved = n, "Prefix baselines restored");
            }
        }
        Err(e) => tracing::error!(error = %e, "Cannot read prefix baselines; relearning"),
    }
}

fn detector_loop(
    mut detector: Detector,
    rx: Receiver<Msg>,
    shards: usize,
    mut out: Outcomes,
    settings: Arc<ArcSwap<Settings>>,
    stats: Vec<Arc<Mutex<ShardStats>>>,
    queries: Receiver<LegitQuery>,
) {
    let mut pending: BTreeMap<u64, Vec<Snapshot>> = BTreeMap::new();
    let mut last_settings = settings.load_full();
    let mut last_save = Instant::now();
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        let now = now_ms();
        match msg {
            Ok(Msg::Triggers(ts)) => {
                for t in &ts {
                    detector.on_trigger(t);
                }
                out.handle(detector.take_events(), Some(&ts), now);
            }
            Ok(Msg::Peeks(ps)) => {
                for p in ps {
                    detector.on_peek(p);
                }
                out.handle(detector.take_events(), None, now);
            }
            Ok(Msg::PrefixPeeks(shard, looks)) => {
                detector.on_prefix_peeks(shard, looks);
                out.handle(detector.take_events(), None, now);
            }
            Ok(Msg::Second(snap)) => {
                pending.entry(snap.second).or_default().push(snap);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Every shard has stopped: judge what is left, save, leave.
                for (_, snaps) in std::mem::take(&mut pending) {
                    run_second(&mut detector, &mut out, merge(snaps), now);
                }
                out.save_baselines(&detector);
                return;
            }
        }
        let current = settings.load_full();
        if !Arc::ptr_eq(&current, &last_settings) {
            out.groups.clone_from(&current.groups);
            out.group_minute.clear();
            detector.reconfigure((*current).clone());
            last_settings = current;
        }
        // A second is judged when every shard has reported it, or when a
        // later second is complete (a stalled shard must not stall detection).
        let complete: Vec<u64> = pending
            .iter()
            .filter(|(s, v)| v.len() >= shards || pending.keys().any(|k| *k > **s + 2))
            .map(|(s, _)| *s)
            .collect();
        for second in complete {
            if let Some(snaps) = pending.remove(&second) {
                run_second(&mut detector, &mut out, merge(snaps), now);
            }
        }
        let total: ShardStats = stats.iter().fold(ShardStats::default(), |mut t, s| {
            let s = *s.lock().unwrap_or_else(|e| e.into_inner());
            t.hosts += s.hosts;
            t.detailed += s.detailed;
            t.refused += s.refused;
            t.evicted += s.evicted;
            t.details_refused += s.details_refused;
            t.details_replaced += s.details_replaced;
            t.prefixes += s.prefixes;
            t.prefixes_refused += s.prefixes_refused;
            t.prefixes_evicted += s.prefixes_evicted;
            t.prefix_details_taken += s.prefix_details_taken;
            t
        });
        let live = &out.live;
        live.prefixes.store(total.prefixes, Ordering::Relaxed);
        live.prefixes_refused
            .store(total.prefixes_refused, Ordering::Relaxed);
        live.prefixes_evicted
            .store(total.prefixes_evicted, Ordering::Relaxed);
        live.prefix_details_replaced
            .store(total.prefix_details_taken, Ordering::Relaxed);
        out.live.hosts.store(total.hosts, Ordering::Relaxed);
        out.live.detailed.store(total.detailed, Ordering::Relaxed);
        out.live.refused.store(total.refused, Ordering::Relaxed);
        out.live.evicted.store(total.evicted, Ordering::Relaxed);
        out.live
            .details_refused
            .store(total.details_refused, Ordering::Relaxed);
        out.live
            .details_replaced
            .store(total.details_replaced, Ordering::Relaxed);
        if last_save.elapsed() >= Duration::from_secs(60) {
            out.save_baselines(&detector);
            last_save = Instant::now();
        }
        while let Ok((host, reply)) = queries.try_recv() {
            let _ = reply.send(detector.legit(&host));
        }
    }
}

fn run_second(detector: &mut Detector, out: &mut Outcomes, m: Merged, now: u64) {
    out.record_second(m.second, &m.hosts);
    judge(detector, m);
    out.handle(detector.take_events(), None, now);
    out.live
        .incidents_active
        .store(detector.active().count() as u64, Ordering::Relaxed);
}

/// A minute's rollup of one host or hostgroup.
#[derive(Debug, Default, Clone, Copy)]
struct Rollup {
    seconds: u32,
    sum_pps: u64,
    max_pps: u64,
    sum_bps: u64,
    max_bps: u64,
}

impl Rollup {
    fn add(&mut self, pps: u64, bps: u64) {
        self.seconds += 1;
        self.sum_pps += pps;
        self.max_pps = self.max_pps.max(pps);
        self.sum_bps += bps;
        self.max_bps = self.max_bps.max(bps);
    }

    fn json(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "avg_pps": self.sum_pps / 60,
            "max_pps": self.max_pps,
            "avg_bps": self.sum_bps / 60,
            "max_bps": self.max_bps,
            "seconds": self.seconds,
        }))
        .unwrap_or_default()
    }
}

/// Hosts whose seconds are stored each second: the busiest by packets and
/// the busiest by bytes (a network may have a million active hosts; an hour
/// of all their seconds would not fit, and nobody looks at the quiet ones).
/// Hosts in an incident keep their timeline in the incident.
const SECOND_ROWS: usize = 1_000;
/// Hosts whose minute rollups are stored, chosen the same way by peak.
const MINUTE_ROWS: usize = 10_000;

/// The indices of the `n` largest items by each key, together.
fn busiest<T>(items: &[T], n: usize, keys: &[fn(&T) -> u64]) -> Vec<usize> {
    if items.len() <= n {
        return (0..items.len()).collect();
    }
    let mut chosen = Vec::with_capacity(n * keys.len());
    for key in keys {
        let mut idx: Vec<usize> = (0..items.len()).collect();
        idx.select_nth_unstable_by_key(n - 1, |&i| std::cmp::Reverse(key(&items[i])));
        chosen.extend_from_slice(&idx[..n]);
    }
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

/// Where detection's results go.
struct Outcomes {
    store: Arc<Store>,
    audit: Arc<AuditLog>,
    live: Arc<Live>,
    groups: Vec<String>,
    minute: HashMap<[u8; 16], Rollup>,
    group_minute: Vec<Rollup>,
    minute_start: u64,
    /// Where incidents go to be mitigated.
    mitigation: Option<crate::mitigation::service::Handle>,
    /// The family and vector each running incident was last reported as.
    classified: HashMap<String, (String, Option<String>)>,
}

/// What to store for an incident event: its record, and the timeline
/// segments that changed — only the last for a running incident (a point
/// a second is added at its end), all of them when it starts or ends (so
/// a segment whose write failed is whole again at the end).
fn incident_write(e: &Event) -> IncidentWrite {
    let (i, all) = match e {
        Event::Started(i) | Event::Ended(i) => (i, true),
        Event::Updated(i) => (i, false),
    };
    IncidentWrite {
        started_ms: i.started_ms,
        id: i.id.clone(),
        record: serde_json::to_vec(&incident_json(i)).unwrap_or_default(),
        segments: segments(&i.timeline, all),
    }
}

/// A timeline's segments (index, JSON array of points): all, or the last.
fn segments(timeline: &Timeline, all: bool) -> Vec<(u32, Vec<u8>)> {
    let n = timeline.len().div_ceil(Timeline::SEGMENT);
    let first = if all { 0 } else { n.saturating_sub(1) };
    timeline
        .segments()
        .enumerate()
        .skip(first)
        .map(|(k, points)| (k as u32, serde_json::to_vec(points).unwrap_or_default()))
        .collect()
}

impl Outcomes {
    fn handle(&mut self, events: Vec<Event>, triggers: Option<&[Trigger]>, now: u64) {
        // Every incident this call touches is written at once, synced once,
        // before anything is audited.
        let writes: Vec<IncidentWrite> = events.iter().map(incident_write).collect();
        if let Err(e) = self.store.incidents_put(&writes) {
            tracing::error!(incidents = writes.len(), error = %e, "Cannot store incidents");
        }
        for e in events {
            if let Some(m) = &self.mitigation {
                match &e {
                    Event::Started(i) | Event::Updated(i) | Event::Ended(i) => m.incident(i),
                }
            }
            match &e {
                Event::Started(i) => {
                    self.live.incidents_started.fetch_add(1, Ordering::Relaxed);
                    let trigger = triggers
                        .filter(|_| i.prefix.is_none())
                        .and_then(|ts| ts.iter().find(|t| t.addr == i.host));
                    if let Some(t) = trigger {
                        let mut d = self.live.delay.lock().unwrap_or_else(|e| e.into_inner());
                        let h = d.get_or_insert_with(|| {
                            hdrhistogram::Histogram::new_with_max(3_600_000, 3)
                                .unwrap_or_else(|_| unreachable!())
                        });
                        let _ = h.record(now.saturating_sub(t.at_ms));
                    }
                    tracing::warn!(incident = %i.id, target = %i.target(), scope = i.scope(), hostgroup = %i.hostgroup, reason = %format!("{} {} {} > {}", i.reason.kind, i.reason.metric, i.reason.value, i.reason.limit), family = %i.verdict.family, why = i.verdict.why.as_deref().unwrap_or(""), "Incident started");
                    self.audit_event("incident.start", i);
                    self.classified.insert(
                        i.id.clone(),
                        (i.verdict.family.clone(), i.verdict.vector.clone()),
                    );
                }
                Event::Updated(i) => {
                    // A verdict that changes is said, and audited: what a
                    // rule was built from must be on record.
                    let now = (i.verdict.family.clone(), i.verdict.vector.clone());
                    if self.classified.get(&i.id) != Some(&now) {
                        tracing::warn!(incident = %i.id, target = %i.target(), family = %i.verdict.family, vector = i.verdict.vector.as_deref().unwrap_or(""), confidence = i.verdict.confidence, samples = i.verdict.samples, "Incident classified");
                        self.audit_event("incident.classify", i);
                        self.classified.insert(i.id.clone(), now);
                    }
                }
                Event::Ended(i) => {
                    tracing::warn!(incident = %i.id, target = %i.target(), family = %i.verdict.family, peak_pps = i.peak_pps, "Incident ended");
                    self.audit_event("incident.end", i);
                    self.classified.remove(&i.id);
                }
            }
        }
    }

    fn audit_event(&self, action: &str, i: &Incident) {
        let mut details = json!({
            "scope": i.scope(),
            "host": i.host.to_string(),
            "hostgroup": i.hostgroup,
            "family": i.verdict.family,
            "vector": i.verdict.vector,
            "confidence": format!("{:.3}", i.verdict.confidence),
            "samples": i.verdict.samples,
            "unclassified_why": i.verdict.why,
            "reason": format!("{} {} {} > {}", i.reason.kind, i.reason.metric, i.reason.value, i.reason.limit),
            "peak_pps": i.peak_pps,
            "peak_bps": i.peak_bps,
        });
        if let Some(p) = i.prefix {
            details["host"] = serde_json::Value::Null;
            details["prefix"] = json!(p.to_string());
            details["hosts_affected"] = json!(i.hosts_affected);
        }
        if !i.linked.is_empty() {
            details["linked"] = json!(i.linked);
        }
        if let Err(e) = self
            .audit
            .append(Actor::System("detector"), action, &i.id, details)
        {
            tracing::error!(incident = %i.id, error = %e, "Cannot audit the incident");
        }
    }

    /// Per-second metrics of the busiest hosts and of every hostgroup (an
    /// hour of them), minute rollups, the live top hosts and group totals.
    fn record_second(&mut self, second: u64, hosts: &[HostSecond]) {
        let name = |g: GroupId| self.groups.get(usize::from(g)).cloned().unwrap_or_default();
        let rate = |h: &HostSecond| {
            (
                u64::from(h.inbound.packets[class::ALL]),
                h.inbound.bytes * 8,
            )
        };
        let mut rows: Vec<(Subject, Vec<u8>)> = Vec::new();
        let keys: [fn(&HostSecond) -> u64; 2] = [
            |h| u64::from(h.inbound.packets[class::ALL]),
            |h| h.inbound.bytes,
        ];
        for i in busiest(hosts, SECOND_ROWS, &keys) {
            let h = &hosts[i];
            let c = &h.inbound;
            let (pps, bps) = rate(h);
            let v = json!({
                "pps": pps,
                "bps": bps,
                "flows": c.flows,
                "by_class": class::NAMES.iter().zip(c.packets).skip(1).filter(|(_, p)| *p > 0).map(|(n, p)| (n.to_string(), p)).collect::<HashMap<_, _>>(),
                "out_pps": h.outbound.packets,
                "out_bps": h.outbound.bytes * 8,
            });
            rows.push((
                Subject::Host(h.addr.0),
                serde_json::to_vec(&v).unwrap_or_default(),
            ));
        }
        let mut top: Vec<(Addr, String, u64, u64)> = busiest(hosts, 100, &keys[..1])
            .into_iter()
            .map(|i| {
                let (pps, bps) = rate(&hosts[i]);
                (hosts[i].addr, name(hosts[i].group), pps, bps)
            })
            .collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.2));
        for h in hosts {
            let (pps, bps) = rate(h);
            self.minute.entry(h.addr.0).or_default().add(pps, bps);
        }
        let totals = GroupSecond::of(hosts, self.groups.len());
        self.group_minute
            .resize(self.groups.len(), Rollup::default());
        for (i, g) in totals.iter().enumerate() {
            let (pps, bps) = (g.packets[class::ALL], g.bytes * 8);
            self.group_minute[i].add(pps, bps);
            let v = json!({
                "pps": pps,
                "bps": bps,
                "flows": g.flows,
                "by_class": class::NAMES.iter().zip(g.packets).skip(1).map(|(n, p)| (n.to_string(), p)).collect::<HashMap<_, _>>(),
                "out_pps": g.out_packets,
                "out_bps": g.out_bytes * 8,
                "out_flows": g.out_flows,
                "hosts": g.hosts,
            });
            rows.push((
                Subject::Group(name(i as GroupId)),
                serde_json::to_vec(&v).unwrap_or_default(),
            ));
        }
        if let Err(e) = self.store.seconds_put(second * 1000, &rows) {
            tracing::error!(error = %e, "Cannot store the second's metrics");
        }
        *self.live.top.lock().unwrap_or_else(|e| e.into_inner()) = top;
        *self.live.groups.lock().unwrap_or_else(|e| e.into_inner()) =
            self.groups.iter().cloned().zip(totals).collect();

        let minute = second / 60 * 60;
        if self.minute_start == 0 {
            self.minute_start = minute;
        }
        if minute > self.minute_start {
            let all: Vec<([u8; 16], Rollup)> =
                std::mem::take(&mut self.minute).into_iter().collect();
            type Row = ([u8; 16], Rollup);
            let keys: [fn(&Row) -> u64; 2] = [|r| r.1.max_pps, |r| r.1.max_bps];
            let mut rows: Vec<(Subject, Vec<u8>)> = busiest(&all, MINUTE_ROWS, &keys)
                .into_iter()
                .map(|i| (Subject::Host(all[i].0), all[i].1.json()))
                .collect();
            for (i, r) in std::mem::take(&mut self.group_minute).iter().enumerate() {
                rows.push((Subject::Group(name(i as GroupId)), r.json()));
            }
            if let Err(e) = self.store.rollups_put(self.minute_start * 1000, &rows) {
                tracing::error!(error = %e, "Cannot store minute rollups");
            }
            self.minute_start = minute;
        }
    }

    fn save_baselines(&self, detector: &Detector) {
        let rows: Vec<([u8; 16], Vec<u8>)> = detector
            .saved()
            .map(|(a, s)| (a.0, serde_json::to_vec(&s).unwrap_or_default()))
            .collect();
        let prefixes: Vec<crate::store::PrefixRow> = detector
            .saved_prefixes()
            .map(|(a, s)| (a.0, s.len, serde_json::to_vec(&s).unwrap_or_default()))
            .collect();
        if let Err(e) = self.store.baselines_replace(&rows, &prefixes) {
            tracing::error!(error = %e, "Cannot save baselines");
        }
    }
}

impl Dataplane {
    /// Writes the data plane's metrics: ring drops, incidents, detection
    /// delay, hosts and prefixes tracked, hostgroups' last second.
    pub fn write_metrics(&self, p: &mut crate::exposition::Prom) {
        let (dp, live) = (self, &self.live);
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
}

#[cfg(test)]
mod tests {
    /// A running incident rewrites only its last minute; its start and
    /// end write every minute; put together they are the whole timeline.
    #[test]
    fn timelines_are_stored_a_minute_at_a_time() {
        use crate::detect::Point;
        let points: Vec<Point> = (0..130u64)
            .map(|second| Point {
                second,
                pps: second * 10,
                bps: second * 80,
                est_tcp: 0,
                samples: 0,
            })
            .collect();
        let timeline = crate::detect::Timeline::from(points.clone());
        let last = super::segments(&timeline, false);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].0, 2);
        let tail: Vec<Point> = serde_json::from_slice(&last[0].1).unwrap();
        assert_eq!(tail, points[120..]);
        let all = super::segments(&timeline, true);
        assert_eq!(all.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);
        let whole: Vec<Point> = all
            .iter()
            .flat_map(|s| serde_json::from_slice::<Vec<Point>>(&s.1).unwrap())
            .collect();
        assert_eq!(whole, points);
        assert!(super::segments(&Timeline::default(), true).is_empty());
        let minute = Timeline::from(points[..60].to_vec());
        assert_eq!(super::segments(&minute, false)[0].0, 0);
    }

    use super::*;
    use levee_collectors::record::proto;

    #[test]
    fn the_busiest_by_either_key_are_kept() {
        // (packets, bytes): 0 and 1 lead by packets, 4 and 3 by bytes.
        let items = [(100u64, 1u64), (90, 2), (1, 3), (2, 500), (3, 900), (4, 4)];
        type Pair = (u64, u64);
        let keys: [fn(&Pair) -> u64; 2] = [|t| t.0, |t| t.1];
        assert_eq!(busiest(&items, 2, &keys), vec![0, 1, 3, 4]);
        assert_eq!(busiest(&items, 2, &keys[..1]), vec![0, 1]);
        assert_eq!(busiest(&items, 10, &keys), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn full_rings_drop_and_count_without_blocking() {
        let c = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[[hostgroup]]\nname = \"c\"\nprefixes = [\"192.0.2.0/24\"]\n",
        )
        .unwrap()
        .config;
        let mut dp = Dataplane::new(&c);
        let mut sink = dp.sink();
        // No shard thread drains the rings: they fill, then every further
        // record is dropped and counted, and `accept` returns at once.
        let records: Vec<FlowRecord> = (0..1024u32)
            .map(|i| FlowRecord {
                dst: Addr::v4([192, 0, 2, (i % 250) as u8]),
                src: Addr::v4([198, 51, 100, 1]),
                packets: 1,
                bytes: 60,
                protocol: proto::UDP,
                ..FlowRecord::default()
            })
            .collect();
        let started = Instant::now();
        let batches = 2 * RING * dp.shards() / records.len() + 10;
        for _ in 0..batches {
            sink.accept(&records);
        }
        let sent = (batches * records.len()) as u64;
        let dropped = dp.ring_drops.load(Ordering::Relaxed);
        assert_eq!(
            dropped,
            sent - (RING * dp.shards()) as u64,
            "every record either in a ring or counted"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        // Records outside every hostgroup are not routed at all.
        let before = dp.ring_drops.load(Ordering::Relaxed);
        sink.accept(&[FlowRecord {
            dst: Addr::v4([203, 0, 113, 1]),
            ..records[0]
        }]);
        assert_eq!(dp.ring_drops.load(Ordering::Relaxed), before);
    }
}
