//! levee's configuration (OPS-1): the typed [`Config`], its defaults, and the
//! loader that turns a TOML file into it or into a list of positioned errors.
//!
//! Every key has a default that suits a collector box; `config/levee.toml`
//! documents each one, and a test holds the two together. Loading is strict:
//! unknown keys, wrong types and values that make no sense (a prefix with host
//! bits, overlapping hostgroups, a port out of range, a non-positive
//! threshold, an unusable data dir) are all errors, reported together as
//! `PATH:LINE:COL: message`.
//!
//! This module reads files and checks values; it never opens sockets or the
//! store. Applying a config is the caller's business.

mod reader;
pub mod secrets;
mod web;

pub use secrets::Secret;
pub use web::Web;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use reader::{did_you_mean, Diags, TableReader};

/// Where `--config` points when neither the flag nor `LEVEE_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/levee/levee.toml";

/// The whole configuration, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Directory of the RocksDB store and other state.
    pub data_dir: PathBuf,
    pub collector: Collectors,
    pub hostgroups: Vec<Hostgroup>,
    pub mitigation: Mitigation,
    pub firewall: Firewall,
    pub bgp: Bgp,
    pub scrubbing: Scrubbing,
    pub web: Web,
    pub detection: Detection,
    pub retention: Retention,
    pub log: Log,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Collectors {
    /// Exporters allowed to send flow export; empty allows every source.
    pub allowed_exporters: Vec<IpNet>,
    /// Exporters tracked at most; when full, one idle for `exporter_idle`
    /// makes room, else datagrams from further sources are refused.
    pub max_exporters: usize,
    /// An exporter silent this long may be forgotten to make room.
    pub exporter_idle: Duration,
    /// Records claiming a sampling rate above this are dropped and counted.
    pub max_sampling_rate: u32,
    /// Receive threads (sockets sharing the port) per listen address.
    pub receivers: usize,
    /// Requested socket receive buffer, bytes.
    pub receive_buffer: usize,
    pub sflow: Listeners,
    /// NetFlow v5, v9 and IPFIX share these sockets; the version field tells them apart.
    pub netflow: Listeners,
    pub pcap: Pcap,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listeners {
    pub listen: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pcap {
    pub interfaces: Vec<String>,
    /// A BPF expression applied in the kernel; empty captures everything.
    pub filter: String,
    pub snaplen: u32,
}

impl Config {
    /// Whether `net` lies wholly inside one of the protected hostgroups'
    /// prefixes: the only space levee may announce routes for.
    pub fn protects(&self, net: &IpNet) -> bool {
        self.hostgroups
            .iter()
            .flat_map(|g| g.prefixes.iter())
            .any(|p| p.contains(net))
    }
}

/// A named set of protected prefixes with its own limits (DET-1).
#[derive(Debug, Clone, PartialEq)]
pub struct Hostgroup {
    pub name: String,
    pub prefixes: Vec<IpNet>,
    /// The hostgroup this one carves its prefixes out of, when they overlap.
    pub within: Option<String>,
    pub thresholds: Thresholds,
    /// Limits for each prefix of the hostgroup as a whole (carpet bombing:
    /// many hosts, each under its own limits); none without the table.
    pub prefix_thresholds: Option<PrefixThresholds>,
    pub mitigation: HostgroupMitigation,
}

/// Per-prefix aggregates of a hostgroup (DET-6): traffic summed per prefix
/// of these lengths, checked against these limits every second.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixThresholds {
    pub prefix_length_v4: u8,
    pub prefix_length_v6: u8,
    /// `None` in a field: not checked for prefixes.
    pub limits: Thresholds,
}

/// Prefix aggregates per hostgroup at most (the hostgroup's prefixes cut
/// into prefixes of the configured lengths): a /32 of IPv6 at /48, a /48
/// at /64. Only prefixes with traffic take memory, and the shards and the
/// detector bound those whatever the config says.
pub const MAX_AGGREGATES: u64 = 1 << 20;

/// Static per-second limits for each destination host of a hostgroup. `None`
/// means the metric is not checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub pps: Option<u64>,
    pub bps: Option<u64>,
    pub flows: Option<u64>,
    pub tcp_pps: Option<u64>,
    pub tcp_syn_pps: Option<u64>,
    pub udp_pps: Option<u64>,
    pub icmp_pps: Option<u64>,
    pub fragment_pps: Option<u64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            pps: Some(50_000),
            bps: Some(200_000_000),
            flows: None,
            tcp_pps: None,
            tcp_syn_pps: None,
            udp_pps: None,
            icmp_pps: None,
            fragment_pps: None,
        }
    }
}

/// A rung of the escalation ladder (MIT-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Firewall,
    Flowspec,
    Rtbh,
    Scrubbing,
}

impl Level {
    pub const ALL: [Level; 4] = [
        Level::Firewall,
        Level::Flowspec,
        Level::Rtbh,
        Level::Scrubbing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Firewall => "firewall",
            Level::Flowspec => "flowspec",
            Level::Rtbh => "rtbh",
            Level::Scrubbing => "scrubbing",
        }
    }
}

/// A level name that is none of levee's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level `{0}`; levels are firewall, flowspec, rtbh, scrubbing")]
pub struct UnknownLevel(pub String);

impl std::str::FromStr for Level {
    type Err = UnknownLevel;
    fn from_str(s: &str) -> Result<Level, UnknownLevel> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Level, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostgroupMitigation {
    /// The levels this hostgroup allows, lowest first.
    pub ladder: Vec<Level>,
    /// Evaluate and log this hostgroup's mitigations without sending them,
    /// to watch a policy before arming it.
    pub shadow: bool,
    /// What FlowSpec (and firewall) rules do with the traffic they match:
    /// discard (default), rate-limit, redirect to a VRF, or DSCP mark.
    pub flowspec_action: levee_bgp::FlowAction,
    /// Attacks above this many bits/s are more than FlowSpec is trusted
    /// with: the incident moves up at once.
    pub flowspec_max_bps: Option<u64>,
    /// RTBH takes the host off the Internet: only for attacks of at least
    /// this many bits/s.
    pub rtbh_min_bps: u64,
    /// A FlowSpec or firewall rule that would match more than this share of
    /// the host's legitimate packets (by protocol, flags and fragments —
    /// an upper bound) is not used.
    pub max_collateral: f64,
    /// A FlowSpec or firewall rule after which the host's established TCP
    /// falls by more than this share is rolled back (None: never).
    pub rollback_drop: Option<f64>,
    /// Whether a FlowSpec or firewall rule may act when its collateral is
    /// unknown (the host's normal traffic not learnt yet): true announces
    /// it (saying so), false refuses it and leaves the attack to the next
    /// level.
    pub unknown_collateral_ok: bool,
    /// What rollback does with a rule that matches no TCP, whose harm a
    /// fall in established TCP can only hint at: false keeps it (its
    /// rollback is shown "unknown"), true withdraws it on such a fall.
    pub rollback_unknown_withdraw: bool,
    /// Whether an attack spread over a prefix (DET-6) may have the whole
    /// prefix blackholed (RTBH). Off: a prefix's ladder skips RTBH, and
    /// scrubbing diversion is its next level after FlowSpec.
    pub prefix_rtbh: bool,
}

impl Default for HostgroupMitigation {
    fn default() -> Self {
        Self {
            ladder: Level::ALL.to_vec(),
            shadow: false,
            flowspec_action: levee_bgp::FlowAction::Discard,
            flowspec_max_bps: None,
            rtbh_min_bps: 1_000_000_000,
            max_collateral: 0.5,
            rollback_drop: Some(0.5),
            unknown_collateral_ok: true,
            rollback_unknown_withdraw: false,
            prefix_rtbh: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mitigation {
    /// Evaluate and log every mitigation but send nothing.
    pub dry_run: bool,
    /// How long an attack must stay quiet before its mitigation steps down.
    pub hold_down: Duration,
    /// How long an attack must persist at a level before the next one.
    pub dwell: Duration,
    /// Lifetime of a mitigation unless the attack renews it.
    pub ttl: Duration,
    /// Addresses never mitigated (infrastructure, resolvers, gateways).
    pub never: Vec<IpNet>,
    /// Concurrent mitigations per level at most.
    pub max_firewall: usize,
    pub max_flowspec: usize,
    pub max_rtbh: usize,
    pub max_scrubbing: usize,
    /// When the FlowSpec budget is full, merge a new rule with one of the
    /// same shape for a neighbouring host into one rule for the smallest
    /// prefix covering both (no shorter than `shortest_prefix_v4/v6`).
    pub aggregate_flowspec: bool,
    /// Announcements and withdrawals sent per second at most.
    pub updates_per_second: u32,
    /// Prefixes shorter than these are never announced.
    pub shortest_prefix_v4: u8,
    pub shortest_prefix_v6: u8,
    /// How often levee compares gobgpd's routes with its intents.
    pub reconcile_every: Duration,
    /// How long levee may be down before `levee deadman` withdraws its
    /// routes.
    pub dead_man: Duration,
    /// The longest TTL a manual mitigation (API, CLI) may ask for.
    pub max_manual_ttl: Duration,
    /// Levels built from a classification (firewall, FlowSpec) act only on
    /// a verdict at least this sure (the lower bound of the named share's
    /// interval)…
    pub min_confidence: f64,
    /// …drawn from at least this many sampled records.
    pub min_samples: u64,
    /// How long such a level waits for that evidence after an incident
    /// starts, before `without_evidence` decides.
    pub evidence_wait: Duration,
    /// What happens when the evidence has not come within `evidence_wait`.
    pub without_evidence: WithoutEvidence,
    /// Mitigate on flow export from any exporter when no allow-list is
    /// set. Off, levee detects and alerts on such export but moves routes
    /// only on allow-listed exporters' records and on local capture: a
    /// forged datagram must not blackhole a customer.
    pub trust_any_exporter: bool,
}

/// What the ladder does when an attack cannot be classified in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutEvidence {
    /// Keep waiting: no rule is better than a wrong one (detection and
    /// alerts go on; an operator can act).
    Wait,
    /// Skip the levels that need a classification and try the next one
    /// (RTBH, scrubbing — each with its own conditions).
    NextLevel,
}

impl WithoutEvidence {
    pub fn as_str(self) -> &'static str {
        match self {
            WithoutEvidence::Wait => "wait",
            WithoutEvidence::NextLevel => "next_level",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bgp {
    /// gobgpd's gRPC API.
    pub gobgp_grpc: SocketAddr,
    /// Next hop of IPv4 blackhole routes; RTBH of IPv4 hosts needs it.
    pub next_hop: Option<IpAddr>,
    /// Next hop of IPv6 blackhole routes; RTBH of IPv6 hosts needs it.
    pub next_hop6: Option<IpAddr>,
    /// The blackhole community (RFC 7999 65535:666).
    pub blackhole_community: levee_bgp::Community,
    /// Per-upstream profiles (MIT-12).
    pub upstreams: Vec<Upstream>,
}

/// What one upstream (a BGP neighbour of levee's gobgpd) accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    /// Its address, as gobgpd's neighbour.
    pub neighbor: IpAddr,
    /// The blackhole community it documents; routes with levee's reach it
    /// with this one instead (an export policy levee installs in gobgpd).
    pub blackhole_community: Option<levee_bgp::Community>,
    /// The FlowSpec rules it accepts at most. levee's one speaker sends
    /// every rule to every FlowSpec peer, so the smallest budget applies.
    pub max_flowspec: Option<usize>,
    /// Whether it takes IPv6 FlowSpec (RFC 8956). When one upstream does
    /// not, an IPv6 attack skips the FlowSpec level for the next one: a
    /// rule that only some upstreams apply leaves the attack coming in
    /// through the others.
    pub flowspec_ipv6: bool,
}

/// The local firewall level (nftables table `inet levee`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Firewall {
    /// Whether the firewall level may act: only on a box that traffic
    /// passes through (inline) or that protects itself.
    pub enabled: bool,
}

/// Scrubbing diversion (MIT-4): a more-specific route toward the scrubbing
/// centre.
#[derive(Debug, Clone, PartialEq)]
pub struct Scrubbing {
    /// Communities that steer the route to the scrubbing peer; the level
    /// acts only when some are set.
    pub communities: Vec<levee_bgp::Community>,
    /// Next hops of diverted prefixes (default: [bgp] next_hop / next_hop6).
    pub next_hop: Option<IpAddr>,
    pub next_hop6: Option<IpAddr>,
    /// Length of the diverted prefix around the attacked host.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// The provider's HTTP(S) endpoint: when set, diversion is requested
    /// there (POST, JSON) instead of announced over BGP.
    pub http_url: Option<String>,
    /// Bearer token for the endpoint (a secret: never logged, audited as
    /// a keyed hash).
    pub http_token: Option<Secret>,
    /// How long a provider call may take.
    pub http_timeout: Duration,
}

/// Detection and accounting (DET-1…4, ACC-3, CLS-2).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Seconds a host must stay over a threshold before an incident starts.
    /// At 1, the static pps/bps thresholds are checked on a sliding
    /// one-second window as traffic arrives.
    pub trigger_seconds: u32,
    /// Quiet time after which an incident ends; a new crossing before then
    /// continues the same incident.
    pub hold_down: Duration,
    /// Distinct sources at which an attack counts as a botnet's.
    pub botnet_sources: u64,
    /// Hosts tracked at most (memory is bounded by it).
    pub max_hosts: usize,
    /// Hosts without traffic for this long are forgotten.
    pub host_idle: Duration,
    /// A host at this many packets per second gets detailed statistics
    /// (sources, TTLs, ports, sizes) for classification.
    pub detail_pps: u64,
    /// Hosts with detailed statistics at most.
    pub max_detailed_hosts: usize,
    /// History a host needs before its legitimate-traffic profile (for
    /// collateral estimates and rollback) is judged by.
    pub legit_learning: Duration,
    pub baseline: Baseline,
}

/// Dynamic thresholds: an EWMA mean and deviation per host (DET-2).
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub enabled: bool,
    /// How much history a host needs before its baseline may trigger.
    pub learning: Duration,
    /// The EWMA's time constant.
    pub window: Duration,
    /// Trigger above mean + sigma × deviation …
    pub sigma: f64,
    /// … and never below these.
    pub floor_pps: u64,
    pub floor_bps: u64,
    /// The long-term average's time constant: the baseline never rises
    /// above its ceiling (mean + 2 × sigma × deviation of this one), so a
    /// slow ramp cannot carry it up for good.
    pub ceiling_window: Duration,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            trigger_seconds: 1,
            hold_down: Duration::from_secs(60),
            botnet_sources: 300,
            max_hosts: 1_000_000,
            host_idle: Duration::from_secs(300),
            detail_pps: 500,
            max_detailed_hosts: 4096,
            legit_learning: Duration::from_secs(30),
            baseline: Baseline {
                enabled: true,
                learning: Duration::from_secs(3600),
                window: Duration::from_secs(3600),
                sigma: 4.0,
                floor_pps: 5_000,
                floor_bps: 50_000_000,
                ceiling_window: Duration::from_secs(86_400),
            },
        }
    }
}

/// How long each kind of stored data is kept (OPS-2).
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub metrics: Duration,
    pub incidents: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// A `tracing` filter: a level, or directives like "info,levee::store=debug".
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/levee"),
            collector: Collectors {
                allowed_exporters: Vec::new(),
                max_exporters: 4096,
                exporter_idle: Duration::from_secs(300),
                max_sampling_rate: 65_536,
                receivers: 1,
                receive_buffer: 32 << 20,
                sflow: Listeners {
                    listen: vec![SocketAddr::from(([0, 0, 0, 0], 6343))],
                },
                netflow: Listeners {
                    listen: vec![
                        SocketAddr::from(([0, 0, 0, 0], 2055)),
                        SocketAddr::from(([0, 0, 0, 0], 4739)),
                    ],
                },
                pcap: Pcap {
                    interfaces: Vec::new(),
                    filter: String::new(),
                    snaplen: 256,
                },
            },
            hostgroups: Vec::new(),
            mitigation: Mitigation {
                dry_run: false,
                hold_down: Duration::from_secs(300),
                dwell: Duration::from_secs(60),
                ttl: Duration::from_secs(3600),
                never: Vec::new(),
                max_firewall: 1000,
                max_flowspec: 100,
                max_rtbh: 100,
                max_scrubbing: 16,
                aggregate_flowspec: true,
                updates_per_second: 50,
                shortest_prefix_v4: 24,
                shortest_prefix_v6: 48,
                reconcile_every: Duration::from_secs(30),
                dead_man: Duration::from_secs(300),
                max_manual_ttl: Duration::from_secs(86_400),
                min_confidence: 0.7,
                min_samples: 20,
                evidence_wait: Duration::from_secs(10),
                without_evidence: WithoutEvidence::Wait,
                trust_any_exporter: false,
            },
            firewall: Firewall::default(),
            bgp: Bgp {
                gobgp_grpc: SocketAddr::from(([127, 0, 0, 1], 50051)),
                next_hop: None,
                next_hop6: None,
                blackhole_community: levee_bgp::Community::BLACKHOLE,
                upstreams: Vec::new(),
            },
            scrubbing: Scrubbing {
                communities: Vec::new(),
                next_hop: None,
                next_hop6: None,
                prefix_v4: 24,
                prefix_v6: 48,
                http_url: None,
                http_token: None,
                http_timeout: Duration::from_secs(10),
            },
            web: Web::default(),
            detection: Detection::default(),
            retention: Retention {
                metrics: Duration::from_secs(30 * 86_400),
                incidents: Duration::from_secs(365 * 86_400),
            },
            log: Log {
                level: "info".to_owned(),
            },
        }
    }
}

/// A configuration as loaded from a file, with what reload diffs and audit
/// entries need to know about its source.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// Every scalar setting of the file by dotted path, for reload diffs.
    pub flat: BTreeMap<String, String>,
}

/// What names a loaded file where others may read it (the audit chain,
/// the API).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// SHA-256 of its bytes — `None` when it holds a secret, as a plain
    /// hash beside its redacted settings would let guesses of the secret
    /// be tested offline.
    pub sha256: Option<String>,
    /// A keyed hash of it (under the store's key of secret hashes).
    pub hmac_sha256: String,
}

impl Loaded {
    /// Its [`Identity`], keyed by `mac`.
    pub fn identity(&self, mac: &dyn Fn(&str) -> String) -> Identity {
        Identity {
            sha256: (!secrets::holds_secrets(&self.flat)).then(|| self.sha256.clone()),
            hmac_sha256: mac(&self.sha256),
        }
    }
}

/// One error with its position (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Everything wrong with one file.
#[derive(Debug, Clone)]
pub struct Errors {
    pub path: PathBuf,
    pub errors: Vec<Error>,
}

impl fmt::Display for Errors {
    /// One `PATH:LINE:COL: message` line per error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                e.line,
                e.col,
                e.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Loaded, Errors> {
    let text = std::fs::read(path).map_err(|e| Errors {
        path: path.to_owned(),
        errors: vec![Error {
            line: 1,
            col: 1,
            message: format!("cannot read the config file: {e}"),
        }],
    })?;
    let text = String::from_utf8(text).map_err(|e| {
        let (line, col) = line_col(
            &String::from_utf8_lossy(e.as_bytes()),
            e.utf8_error().valid_up_to(),
        );
        Errors {
            path: path.to_owned(),
            errors: vec![Error {
                line,
                col,
                message: "the config file is not valid UTF-8".to_owned(),
            }],
        }
    })?;
    parse_with(path, &text, Checks::Environment)
}

/// How far validation goes beyond the file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// Only the file: syntax, keys, types and values.
    FileOnly,
    /// Also this machine: the data dir must be usable here.
    Environment,
}

/// Validates `text` as if it were the file at `path`, without looking at the
/// machine (see [`Checks`]).
pub fn parse(path: &Path, text: &str) -> Result<Loaded, Errors> {
    parse_with(path, text, Checks::FileOnly)
}

pub fn parse_with(path: &Path, text: &str, checks: Checks) -> Result<Loaded, Errors> {
    let to_errors = |diags: Vec<reader::Diag>| Errors {
        path: path.to_owned(),
        errors: diags
            .into_iter()
            .map(|d| {
                let (line, col) = line_col(text, d.span.start);
                Error {
                    line,
                    col,
                    message: d.message,
                }
            })
            .collect(),
    };

    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let mut d = Diags::default();
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            d.error(span, format!("TOML syntax: {}", e.message().trim_end()));
        }
        return Err(to_errors(d.into_sorted()));
    }

    let mut d = Diags::default();
    let config = read_config(&mut d, root.get_ref(), checks);
    if !d.is_empty() {
        return Err(to_errors(d.into_sorted()));
    }
    let mut flat = BTreeMap::new();
    flatten("", root.get_ref(), &mut flat);
    Ok(Loaded {
        config,
        path: path.to_owned(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        flat,
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn read_config(d: &mut Diags, root: &DeTable<'_>, checks: Checks) -> Config {
    let mut c = Config::default();
    let mut top = TableReader::new(root, "");

    let data_dir = top.string(d, "data_dir");
    let env = checks == Checks::Environment;
    match &data_dir {
        Some(dir) if dir.get_ref().is_empty() => d.error(dir.span(), "data_dir must not be empty"),
        Some(dir) => match check_data_dir(Path::new(dir.get_ref())) {
            Err(why) if env => d.error(dir.span(), format!("data_dir `{}` {why}", dir.get_ref())),
            _ => c.data_dir = PathBuf::from(dir.get_ref()),
        },
        None => {
            if let (true, Err(why)) = (env, check_data_dir(&c.data_dir)) {
                // The default is checked too: `run` would fail on it just the same.
                d.error(
                    0..0,
                    format!(
                        "data_dir (default `{}`) {why}; set data_dir",
                        c.data_dir.display()
                    ),
                );
            }
        }
    }

    // Listen addresses that must not collide, with where each was set.
    let mut sockets: Vec<(SocketAddr, Option<Range<usize>>, String)> = Vec::new();

    if let Some(mut col) = top.table(d, "collector", "[collector]") {
        if let Some(list) = col.strings(d, "allowed_exporters") {
            c.collector.allowed_exporters = list.iter().filter_map(|p| prefix(d, p)).collect();
        }
        if let Some(n) = col.positive(d, "max_exporters") {
            c.collector.max_exporters = usize::try_from(*n.get_ref()).unwrap_or(usize::MAX);
        }
        if let Some(h) = col.duration(d, "exporter_idle") {
            c.collector.exporter_idle = h.into_inner();
        }
        if let Some(n) = col.positive(d, "max_sampling_rate") {
            match u32::try_from(*n.get_ref()) {
                Ok(v) => c.collector.max_sampling_rate = v,
                _ => d.error(
                    n.span(),
                    "`max_sampling_rate` in [collector] must be below 2^32",
                ),
            }
        }
        if let Some(n) = col.positive(d, "receivers") {
            match usize::try_from(*n.get_ref()) {
                Ok(v) if v <= 64 => c.collector.receivers = v,
                _ => d.error(
                    n.span(),
                    "`receivers` in [collector] must be between 1 and 64",
                ),
            }
        }
        if let Some(n) = col.positive(d, "receive_buffer") {
            match usize::try_from(*n.get_ref()) {
                Ok(v) if (65_536..=1 << 30).contains(&v) => c.collector.receive_buffer = v,
                _ => d.error(
                    n.span(),
                    "`receive_buffer` in [collector] must be between 65536 and 1073741824 bytes",
                ),
            }
        }
        for (key, name) in [
            ("sflow", "[collector.sflow]"),
            ("netflow", "[collector.netflow]"),
        ] {
            if let Some(mut t) = col.table(d, key, name) {
                if let Some(list) = t.strings(d, "listen") {
                    let mut addrs = Vec::new();
                    for s in list {
                        if let Some(a) = socket_addr(d, &s, &format!("{name} listen")) {
                            sockets.push((a, Some(s.span()), format!("{name} listen")));
                            addrs.push(a);
                        }
                    }
                    let target = if key == "sflow" {
                        &mut c.collector.sflow
                    } else {
                        &mut c.collector.netflow
                    };
                    target.listen = addrs;
                }
                t.finish(d);
            }
        }
        if let Some(mut t) = col.table(d, "pcap", "[collector.pcap]") {
            if let Some(list) = t.strings(d, "interfaces") {
                c.collector.pcap.interfaces = list.into_iter().map(|s| s.into_inner()).collect();
            }
            if let Some(f) = t.string(d, "filter") {
                c.collector.pcap.filter = f.into_inner();
            }
            if let Some(n) = t.positive(d, "snaplen") {
                match u32::try_from(*n.get_ref()) {
                    Ok(v) if (64..=262_144).contains(&v) => c.collector.pcap.snaplen = v,
                    _ => d.error(
                        n.span(),
                        "`snaplen` in [collector.pcap] must be between 64 and 262144 bytes",
                    ),
                }
            }
            t.finish(d);
        }
        col.finish(d);
    }

    let groups = top.tables(d, "hostgroup");
    c.hostgroups = read_hostgroups(d, groups);

    if let Some(mut t) = top.table(d, "mitigation", "[mitigation]") {
        let m = &mut c.mitigation;
        if let Some(b) = t.bool(d, "dry_run") {
            m.dry_run = b;
        }
        if let Some(b) = t.bool(d, "aggregate_flowspec") {
            m.aggregate_flowspec = b;
        }
        if let Some(b) = t.bool(d, "trust_any_exporter") {
            m.trust_any_exporter = b;
        }
        for (key, slot) in [
            ("hold_down", &mut m.hold_down),
            ("dwell", &mut m.dwell),
            ("ttl", &mut m.ttl),
            ("reconcile_every", &mut m.reconcile_every),
            ("dead_man", &mut m.dead_man),
            ("max_manual_ttl", &mut m.max_manual_ttl),
            ("evidence_wait", &mut m.evidence_wait),
        ] {
            if let Some(h) = t.duration(d, key) {
                *slot = h.into_inner();
            }
        }
        if let Some(list) = t.strings(d, "never") {
            m.never = list.iter().filter_map(|p| prefix(d, p)).collect();
        }
        for (key, slot) in [
            ("max_firewall", &mut m.max_firewall),
            ("max_flowspec", &mut m.max_flowspec),
            ("max_rtbh", &mut m.max_rtbh),
            ("max_scrubbing", &mut m.max_scrubbing),
        ] {
            if let Some(n) = t.positive(d, key) {
                *slot = usize::try_from(n.into_inner()).unwrap_or(usize::MAX);
            }
        }
        if let Some(n) = t.positive(d, "updates_per_second") {
            m.updates_per_second = u32::try_from(n.into_inner()).unwrap_or(u32::MAX);
        }
        if let Some(x) = t.positive_number(d, "min_confidence") {
            if x < 1.0 {
                m.min_confidence = x;
            } else if let Some(at) = t.key_span("min_confidence") {
                d.error(
                    at,
                    "`min_confidence` in [mitigation] is below 1: a confidence is the lower bound of a share, never 1",
                );
            }
        }
        if let Some(n) = t.positive(d, "min_samples") {
            m.min_samples = n.into_inner();
        }
        if let Some(w) = t.choice(
            d,
            "without_evidence",
            &[
                ("wait", WithoutEvidence::Wait),
                ("next_level", WithoutEvidence::NextLevel),
            ],
        ) {
            m.without_evidence = w;
        }
        for (key, slot, max) in [
            ("shortest_prefix_v4", &mut m.shortest_prefix_v4, 32),
            ("shortest_prefix_v6", &mut m.shortest_prefix_v6, 128),
        ] {
            if let Some(n) = t.positive(d, key) {
                match u8::try_from(*n.get_ref()) {
                    Ok(v) if v <= max => *slot = v,
                    _ => d.error(
                        n.span(),
                        format!("`{key}` in [mitigation] must be between 1 and {max}"),
                    ),
                }
            }
        }
        t.finish(d);
    }

    if let Some(mut t) = top.table(d, "bgp", "[bgp]") {
        if let Some(s) = t.string(d, "gobgp_grpc") {
            if let Some(a) = socket_addr(d, &s, "`gobgp_grpc` in [bgp]") {
                c.bgp.gobgp_grpc = a;
            }
        }
        if let Some(s) = t.string(d, "next_hop") {
            c.bgp.next_hop = next_hop(d, &s, "next_hop", "[bgp]", false);
        }
        if let Some(s) = t.string(d, "next_hop6") {
            c.bgp.next_hop6 = next_hop(d, &s, "next_hop6", "[bgp]", true);
        }
        if let Some(s) = t.string(d, "blackhole_community") {
            if let Some(cm) = community(d, &s) {
                c.bgp.blackhole_community = cm;
            }
        }
        for (span, table) in t.tables(d, "upstream") {
            let mut u = TableReader::new(table, "[[bgp.upstream]]");
            let name = u.string(d, "name").map(Spanned::into_inner);
            let neighbor =
                u.string(d, "neighbor")
                    .and_then(|s| match s.get_ref().parse::<IpAddr>() {
                        Ok(ip) => Some(ip),
                        Err(_) => {
                            d.error(
                                s.span(),
                                format!(
                                    "`neighbor` in [[bgp.upstream]] is not an IP address: `{}`",
                                    s.get_ref()
                                ),
                            );
                            None
                        }
                    });
            let blackhole_community = u
                .string(d, "blackhole_community")
                .and_then(|s| community(d, &s));
            let max_flowspec = u
                .positive(d, "max_flowspec")
                .map(|n| usize::try_from(n.into_inner()).unwrap_or(usize::MAX));
            let flowspec_ipv6 = u.bool(d, "flowspec_ipv6").unwrap_or(true);
            u.finish(d);
            match (name, neighbor) {
                (Some(name), Some(neighbor)) => c.bgp.upstreams.push(Upstream {
                    name,
                    neighbor,
                    blackhole_community,
                    max_flowspec,
                    flowspec_ipv6,
                }),
                (None, _) if !table.contains_key("name") => {
                    d.error(span, "[[bgp.upstream]] needs a `name`")
                }
                (_, None) if !table.contains_key("neighbor") => {
                    d.error(span, "[[bgp.upstream]] needs a `neighbor`")
                }
                _ => {} // already reported where the value is
            }
        }
        t.finish(d);
    }

    if let Some(mut t) = top.table(d, "firewall", "[firewall]") {
        if let Some(b) = t.bool(d, "enabled") {
            c.firewall.enabled = b;
        }
        t.finish(d);
    }

    if let Some(mut t) = top.table(d, "scrubbing", "[scrubbing]") {
        let sc = &mut c.scrubbing;
        if let Some(list) = t.strings(d, "communities") {
            sc.communities = list.iter().filter_map(|s| community(d, s)).collect();
        }
        if let Some(s) = t.string(d, "next_hop") {
            sc.next_hop = next_hop(d, &s, "next_hop", "[scrubbing]", false);
        }
        if let Some(s) = t.string(d, "next_hop6") {
            sc.next_hop6 = next_hop(d, &s, "next_hop6", "[scrubbing]", true);
        }
        if let Some(u) = t.string(d, "http_url") {
            let url = u.get_ref().trim();
            if url.starts_with("http://") || url.starts_with("https://") {
                sc.http_url = Some(url.to_owned());
            } else {
                // The value is not repeated: it may carry credentials, and
                // errors go to the log and the audit chain.
                d.error(
                    u.span(),
                    "`http_url` in [scrubbing] must be an http:// or https:// URL (the value \
                     is not repeated: it may hold credentials)",
                );
            }
        }
        if let Some(tok) = t.string(d, "http_token") {
            if let Some(tok) = secrets::token(d, &tok, "`http_token` in [scrubbing]") {
                sc.http_token = Some(tok);
            }
        }
        if let Some(h) = t.duration(d, "http_timeout") {
            sc.http_timeout = h.into_inner();
        }
        for (key, slot, max) in [
            ("prefix_v4", &mut sc.prefix_v4, 32),
            ("prefix_v6", &mut sc.prefix_v6, 128),
        ] {
            if let Some(n) = t.positive(d, key) {
                match u8::try_from(*n.get_ref()) {
                    Ok(v) if v <= max => *slot = v,
                    _ => d.error(
                        n.span(),
                        format!("`{key}` in [scrubbing] must be between 1 and {max}"),
                    ),
                }
            }
        }
        t.finish(d);
    }

    if let Some(mut t) = top.table(d, "web", "[web]") {
        web::read(d, &mut t, &mut c.web, &mut sockets);
        t.finish(d);
    }

    if let Some(mut t) = top.table(d, "detection", "[detection]") {
        let det = &mut c.detection;
        if let Some(n) = t.positive(d, "trigger_seconds") {
            match u32::try_from(*n.get_ref()) {
                Ok(v) if v <= 3600 => det.trigger_seconds = v,
                _ => d.error(
                    n.span(),
                    "`trigger_seconds` in [detection] must be between 1 and 3600",
                ),
            }
        }
        if let Some(v) = t.duration(d, "hold_down") {
            det.hold_down = v.into_inner();
        }
        if let Some(n) = t.positive(d, "botnet_sources") {
            det.botnet_sources = *n.get_ref();
        }
        if let Some(v) = t.duration(d, "legit_learning") {
            det.legit_learning = v.into_inner();
        }
        if let Some(n) = t.positive(d, "max_hosts") {
            det.max_hosts = usize::try_from(*n.get_ref()).unwrap_or(usize::MAX);
        }
        if let Some(v) = t.duration(d, "host_idle") {
            det.host_idle = v.into_inner();
        }
        if let Some(n) = t.positive(d, "detail_pps") {
            det.detail_pps = *n.get_ref();
        }
        if let Some(n) = t.positive(d, "max_detailed_hosts") {
            det.max_detailed_hosts = usize::try_from(*n.get_ref()).unwrap_or(usize::MAX);
        }
        if let Some(mut b) = t.table(d, "baseline", "[detection.baseline]") {
            let base = &mut det.baseline;
            if let Some(v) = b.bool(d, "enabled") {
                base.enabled = v;
            }
            if let Some(v) = b.duration(d, "learning") {
                base.learning = v.into_inner();
            }
            if let Some(v) = b.duration(d, "window") {
                base.window = v.into_inner();
            }
            if let Some(v) = b.duration(d, "ceiling_window") {
                base.ceiling_window = v.into_inner();
            }
            if let Some(v) = b.positive_number(d, "sigma") {
                base.sigma = v;
            }
            if let Some(n) = b.positive(d, "floor_pps") {
                base.floor_pps = *n.get_ref();
            }
            if let Some(n) = b.positive(d, "floor_bps") {
                base.floor_bps = *n.get_ref();
            }
            b.finish(d);
        }
        t.finish(d);
    }

    if let Some(mut t) = top.table(d, "retention", "[retention]") {
        if let Some(v) = t.duration(d, "metrics") {
            c.retention.metrics = v.into_inner();
        }
        if let Some(v) = t.duration(d, "incidents") {
            c.retention.incidents = v.into_inner();
        }
        t.finish(d);
    }

    if let Some(mut t) = top.table(d, "log", "[log]") {
        if let Some(s) = t.string(d, "level") {
            match tracing_subscriber::EnvFilter::try_new(s.get_ref()) {
                Ok(_) => c.log.level = s.into_inner(),
                Err(e) => d.error(
                    s.span(),
                    format!(
                        "`level` in [log] is not a log filter (`{}`: {e})",
                        s.get_ref()
                    ),
                ),
            }
        }
        t.finish(d);
    }

    top.finish(d);
    // Defaults take their ports too; a file may clash with them.
    for (name, l) in [
        ("[collector.sflow]", &c.collector.sflow),
        ("[collector.netflow]", &c.collector.netflow),
    ] {
        let what = format!("{name} listen");
        if !sockets.iter().any(|(_, _, w)| *w == what) {
            sockets.extend(
                l.listen
                    .iter()
                    .map(|a| (*a, None, format!("{what} (default)"))),
            );
        }
    }
    if !sockets.iter().any(|(_, _, w)| w == "[web] listen") {
        sockets.push((c.web.listen, None, "[web] listen (default)".to_owned()));
    }
    check_socket_clashes(d, &sockets);
    c
}

/// Parses a `host:port` listen address; port 0 asks the kernel for a free
/// port (the bound address is logged), which tests use.
fn socket_addr(d: &mut Diags, s: &Spanned<String>, what: &str) -> Option<SocketAddr> {
    let text = s.get_ref();
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Some(a);
    }
    let why = match text.rsplit_once(':') {
        None => "expected IP:PORT (IPv6 as [ADDR]:PORT)".to_owned(),
        Some(_) if !text.starts_with('[') && text.matches(':').count() > 1 => {
            "an IPv6 address must be written in brackets: [ADDR]:PORT".to_owned()
        }
        Some((host, port)) => match port.parse::<u64>() {
            Ok(p) if p > 65_535 => format!("port {p} is out of range (0-65535)"),
            Err(_) => format!("`{port}` is not a port number"),
            Ok(_) => format!("`{host}` is not an IP address (host names are not resolved)"),
        },
    };
    d.error(
        s.span(),
        format!("invalid address in {what}: `{text}`: {why}"),
    );
    None
}

fn check_socket_clashes(d: &mut Diags, sockets: &[(SocketAddr, Option<Range<usize>>, String)]) {
    let web = |w: &str| w.starts_with("[web]");
    for (j, (b, bspan, bwhat)) in sockets.iter().enumerate() {
        for (a, aspan, awhat) in &sockets[..j] {
            // UDP collectors and the TCP web server may share a port number.
            let same_socket = a.port() == b.port()
                && a.port() != 0
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
                && web(awhat) == web(bwhat);
            if !same_socket {
                continue;
            }
            // Report it where the file set it (the later of the two if both).
            let (span, what, x, other, y) = match (aspan, bspan) {
                (_, Some(s)) => (s, bwhat, b, awhat, a),
                (Some(s), None) => (s, awhat, a, bwhat, b),
                (None, None) => continue,
            };
            d.error(
                span.clone(),
                format!("{what} `{x}` clashes with `{y}` of {other}"),
            );
        }
    }
}

const NAME_HELP: &str = "letters, digits, '.', '_' and '-', at most 64";

fn read_hostgroups(d: &mut Diags, groups: Vec<(Range<usize>, &DeTable<'_>)>) -> Vec<Hostgroup> {
    struct Seen {
        group: usize,
        net: IpNet,
        span: Range<usize>,
    }
    let mut out: Vec<Hostgroup> = Vec::new();
    let mut within_spans: Vec<Option<Spanned<String>>> = Vec::new();
    // Where each hostgroup's [hostgroup.prefix_thresholds] is, if it has one.
    let mut aggregate_spans: Vec<Option<Range<usize>>> = Vec::new();
    let mut prefixes: Vec<Seen> = Vec::new();

    for (span, table) in groups {
        let mut t = TableReader::new(table, "[[hostgroup]]");
        let name = t.string(d, "name");
        let label = match &name {
            Some(n) => format!("[[hostgroup]] \"{}\"", n.get_ref()),
            None => "[[hostgroup]]".to_owned(),
        };
        let mut g = Hostgroup {
            name: String::new(),
            prefixes: Vec::new(),
            within: None,
            thresholds: Thresholds::default(),
            prefix_thresholds: None,
            mitigation: HostgroupMitigation::default(),
        };
        match name {
            None if t.key_span("name").is_none() => {
                d.error(span.clone(), "[[hostgroup]] needs a `name`");
            }
            None => {}
            Some(n) => {
                let ok = !n.get_ref().is_empty()
                    && n.get_ref().len() <= 64
                    && n.get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                if !ok {
                    d.error(
                        n.span(),
                        format!("hostgroup name `{}` must be {NAME_HELP}", n.get_ref()),
                    );
                } else if out.iter().any(|o| o.name == *n.get_ref()) {
                    d.error(
                        n.span(),
                        format!("hostgroup name `{}` is used twice", n.get_ref()),
                    );
                }
                g.name = n.get_ref().clone();
            }
        }

        match t.strings(d, "prefixes") {
            None if t.key_span("prefixes").is_none() => {
                d.error(span.clone(), format!("{label} needs `prefixes`"));
            }
            None => {}
            Some(list) if list.is_empty() => {
                let at = t.key_span("prefixes").unwrap_or(span.clone());
                d.error(at, format!("`prefixes` of {label} is empty"));
            }
            Some(list) => {
                for p in list {
                    if let Some(net) = prefix(d, &p) {
                        prefixes.push(Seen {
                            group: out.len(),
                            net,
                            span: p.span(),
                        });
                        g.prefixes.push(net);
                    }
                }
            }
        }
        let within = t.string(d, "within");
        g.within = within.as_ref().map(|w| w.get_ref().clone());
        within_spans.push(within);

        if let Some(mut th) = t.table(d, "thresholds", "[hostgroup.thresholds]") {
            let th_out = &mut g.thresholds;
            for (key, slot) in [
                ("pps", &mut th_out.pps),
                ("bps", &mut th_out.bps),
                ("flows", &mut th_out.flows),
                ("tcp_pps", &mut th_out.tcp_pps),
                ("tcp_syn_pps", &mut th_out.tcp_syn_pps),
                ("udp_pps", &mut th_out.udp_pps),
                ("icmp_pps", &mut th_out.icmp_pps),
                ("fragment_pps", &mut th_out.fragment_pps),
            ] {
                if let Some(v) = th.positive(d, key) {
                    *slot = Some(v.into_inner());
                }
            }
            th.finish(d);
        }

        if let Some(mut pt) = t.table(d, "prefix_thresholds", "[hostgroup.prefix_thresholds]") {
            let mut p = PrefixThresholds {
                prefix_length_v4: 24,
                prefix_length_v6: 64,
                limits: Thresholds {
                    pps: None,
                    bps: None,
                    ..Thresholds::default()
                },
            };
            for (key, slot, max) in [
                ("prefix_length_v4", &mut p.prefix_length_v4, 31u64),
                ("prefix_length_v6", &mut p.prefix_length_v6, 127),
            ] {
                if let Some(n) = pt.positive(d, key) {
                    match u8::try_from(*n.get_ref()) {
                        Ok(v) if u64::from(v) <= max => *slot = v,
                        _ => d.error(
                            n.span(),
                            format!(
                                "`{key}` in [hostgroup.prefix_thresholds] must be between 1 and {max} \
                                 (a prefix of one address is a host: see [hostgroup.thresholds])"
                            ),
                        ),
                    }
                }
            }
            let lim = &mut p.limits;
            for (key, slot) in [
                ("pps", &mut lim.pps),
                ("bps", &mut lim.bps),
                ("flows", &mut lim.flows),
                ("tcp_pps", &mut lim.tcp_pps),
                ("tcp_syn_pps", &mut lim.tcp_syn_pps),
                ("udp_pps", &mut lim.udp_pps),
                ("icmp_pps", &mut lim.icmp_pps),
                ("fragment_pps", &mut lim.fragment_pps),
            ] {
                if let Some(v) = pt.positive(d, key) {
                    *slot = Some(v.into_inner());
                }
            }
            // Bounded memory: the hostgroup's prefixes, cut to this length.
            let aggregates: u64 = g
                .prefixes
                .iter()
                .map(|n| {
                    let len = if n.addr().is_ipv4() {
                        p.prefix_length_v4
                    } else {
                        p.prefix_length_v6
                    };
                    let bits = u32::from(len.saturating_sub(n.prefix_len()));
                    1u64.checked_shl(bits).unwrap_or(u64::MAX)
                })
                .fold(0u64, u64::saturating_add);
            if aggregates > MAX_AGGREGATES {
                if let Some(at) = pt
                    .key_span("prefix_length_v4")
                    .or(pt.key_span("prefix_length_v6"))
                {
                    d.error(
                        at,
                        format!(
                            "these prefix lengths cut the hostgroup into {aggregates} prefixes; at most {MAX_AGGREGATES}"
                        ),
                    );
                }
            }
            pt.finish(d);
            g.prefix_thresholds = Some(p);
            aggregate_spans.resize(out.len(), None);
            aggregate_spans.push(t.key_span("prefix_thresholds"));
        }

        if let Some(mut m) = t.table(d, "mitigation", "[hostgroup.mitigation]") {
            if let Some(list) = m.strings(d, "ladder") {
                g.mitigation.ladder = ladder(d, &list);
            }
            if let Some(b) = m.bool(d, "shadow") {
                g.mitigation.shadow = b;
            }
            g.mitigation.flowspec_action = flowspec_action(d, &mut m);
            if let Some(n) = m.positive(d, "flowspec_max_bps") {
                g.mitigation.flowspec_max_bps = Some(n.into_inner());
            }
            if let Some(n) = m.positive(d, "rtbh_min_bps") {
                g.mitigation.rtbh_min_bps = n.into_inner();
            }
            if let Some(x) = m.positive_number(d, "rollback_drop") {
                if x <= 1.0 {
                    g.mitigation.rollback_drop = (x < 1.0).then_some(x);
                } else if let Some(at) = m.key_span("rollback_drop") {
                    d.error(
                        at,
                        "`rollback_drop` in [hostgroup.mitigation] is a share: at most 1 (1 turns rollback off)",
                    );
                }
            }
            if let Some(x) = m.positive_number(d, "max_collateral") {
                if x <= 1.0 {
                    g.mitigation.max_collateral = x;
                } else if let Some(at) = m.key_span("max_collateral") {
                    d.error(
                        at,
                        "`max_collateral` in [hostgroup.mitigation] is a share: at most 1",
                    );
                }
            }
            if let Some(ok) = m.choice(
                d,
                "unknown_collateral",
                &[("accept", true), ("refuse", false)],
            ) {
                g.mitigation.unknown_collateral_ok = ok;
            }
            if let Some(w) = m.choice(
                d,
                "rollback_unknown",
                &[("keep", false), ("withdraw", true)],
            ) {
                g.mitigation.rollback_unknown_withdraw = w;
            }
            if let Some(b) = m.bool(d, "prefix_rtbh") {
                g.mitigation.prefix_rtbh = b;
            }
            m.finish(d);
        }
        t.finish(d);
        out.push(g);
    }

    // `within` must name another, earlier-or-later hostgroup.
    for (i, w) in within_spans.iter().enumerate() {
        let Some(w) = w else { continue };
        let target = w.get_ref();
        if *target == out[i].name {
            d.error(
                w.span(),
                format!("hostgroup `{target}` cannot be within itself"),
            );
        } else if !out.iter().any(|g| g.name == *target) {
            let mut msg = format!("`within` names no hostgroup: `{target}`");
            if let Some(best) = did_you_mean(target, out.iter().map(|g| g.name.as_str())) {
                msg.push_str(&format!("; did you mean `{best}`?"));
            }
            d.error(w.span(), msg);
        }
    }

    // Overlaps: the same address must not silently belong to two groups.
    for (j, b) in prefixes.iter().enumerate() {
        for a in &prefixes[..j] {
            let (outer, inner) = if a.net.contains(&b.net) {
                (a, b)
            } else if b.net.contains(&a.net) {
                (b, a)
            } else {
                continue;
            };
            let later = if a.span.start > b.span.start { a } else { b };
            let earlier = if std::ptr::eq(later, a) { b } else { a };
            if a.group == b.group {
                let msg = if a.net == b.net {
                    format!(
                        "prefix {} is listed twice in hostgroup `{}`",
                        b.net, out[b.group].name
                    )
                } else {
                    format!(
                        "prefix {} overlaps {} in the same hostgroup `{}`",
                        later.net, earlier.net, out[a.group].name
                    )
                };
                d.error(later.span.clone(), msg);
                continue;
            }
            let (inner_name, outer_name) = (&out[inner.group].name, &out[outer.group].name);
            if inner.net != outer.net
                && out[inner.group].within.as_deref() == Some(outer_name.as_str())
            {
                continue; // an explicit carve-out
            }
            let msg = if inner.net == outer.net {
                format!(
                    "prefix {} is in both hostgroup `{}` and hostgroup `{}`",
                    later.net, out[earlier.group].name, out[later.group].name
                )
            } else {
                format!(
                    "prefix {} of hostgroup `{inner_name}` overlaps {} of hostgroup `{outer_name}`; \
                     set within = \"{outer_name}\" in `{inner_name}` to carve it out",
                    inner.net, outer.net
                )
            };
            d.error(later.span.clone(), msg);
        }
    }

    // A prefix aggregate is what a prefix rule's destination will be: it
    // must lie within its hostgroup, and hold no other hostgroup's
    // addresses (a rule for it would reach hosts another policy governs).
    aggregate_spans.resize(out.len(), None);
    for (gi, g) in out.iter().enumerate() {
        let (Some(p), Some(at)) = (&g.prefix_thresholds, &aggregate_spans[gi]) else {
            continue;
        };
        let len_of = |n: &IpNet| {
            if n.addr().is_ipv4() {
                ("prefix_length_v4", p.prefix_length_v4)
            } else {
                ("prefix_length_v6", p.prefix_length_v6)
            }
        };
        for own in prefixes.iter().filter(|s| s.group == gi) {
            let (key, len) = len_of(&own.net);
            if len < own.net.prefix_len() {
                d.error(
                    at.clone(),
                    format!(
                        "`{key}` = {len} in hostgroup `{}` is shorter than its prefix {}: an aggregate \
                         (and a rule for it) would reach past the hostgroup; use {} or more",
                        g.name,
                        own.net,
                        own.net.prefix_len()
                    ),
                );
                continue;
            }
            for other in prefixes.iter().filter(|s| s.group != gi) {
                if other.net.prefix_len() > len && own.net.contains(&other.net) {
                    d.error(
                        at.clone(),
                        format!(
                            "`{key}` = {len} in hostgroup `{}` makes aggregates that hold {} of \
                             hostgroup `{}`: a rule for the aggregate would reach its hosts; use {} \
                             or more",
                            g.name,
                            other.net,
                            out[other.group].name,
                            other.net.prefix_len()
                        ),
                    );
                }
            }
        }
    }
    out
}

/// A CIDR prefix (or a bare address, meaning /32 or /128) without host bits.
fn prefix(d: &mut Diags, s: &Spanned<String>) -> Option<IpNet> {
    let text = s.get_ref().trim();
    let net = match text.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => {
            match text.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    d.error(s.span(), format!("`{text}` is not an IP prefix (write e.g. 192.0.2.0/24 or 2001:db8::/48)"));
                    return None;
                }
            }
        }
    };
    if net.trunc() != net {
        d.error(
            s.span(),
            format!(
                "prefix {text} has host bits set; did you mean {}?",
                net.trunc()
            ),
        );
        return None;
    }
    if net.prefix_len() == 0 {
        d.error(
            s.span(),
            format!("prefix {text} covers every address; protect your own prefixes"),
        );
        return None;
    }
    Some(net)
}

/// A next hop: an address of the right family, not unspecified.
fn next_hop(
    d: &mut Diags,
    s: &Spanned<String>,
    key: &str,
    table: &str,
    v6: bool,
) -> Option<IpAddr> {
    match s.get_ref().parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => {
            d.error(
                s.span(),
                format!("`{key}` in {table} must not be the unspecified address"),
            );
            None
        }
        Ok(ip) if ip.is_ipv6() != v6 => {
            let want = if v6 { "an IPv6" } else { "an IPv4" };
            d.error(
                s.span(),
                format!("`{key}` in {table} must be {want} address, not {ip}"),
            );
            None
        }
        Ok(ip) => Some(ip),
        Err(_) => {
            d.error(
                s.span(),
                format!("`{key}` in {table} is not an IP address: `{}`", s.get_ref()),
            );
            None
        }
    }
}

/// `flowspec_action` and the key that completes it: `rate-limit` with
/// `flowspec_rate_limit` (bytes/s), `redirect` with `flowspec_redirect`
/// (route target ASN:VALUE), `mark` with `flowspec_dscp`. A rate limit
/// alone still means rate-limit, as before the action key existed.
fn flowspec_action(d: &mut Diags, m: &mut TableReader<'_, '_>) -> levee_bgp::FlowAction {
    use levee_bgp::FlowAction;
    let action = m.string(d, "flowspec_action");
    let rate = m.positive(d, "flowspec_rate_limit");
    let redirect = m.string(d, "flowspec_redirect");
    let dscp = m.positive(d, "flowspec_dscp");
    let rate =
        rate.map(|n| FlowAction::rate_limit(u32::try_from(n.into_inner()).unwrap_or(u32::MAX)));
    let redirect = redirect.and_then(|s| {
        community(d, &s).map(|c| FlowAction::Redirect {
            asn: (c.0 >> 16) as u16,
            value: c.0 & 0xffff,
        })
    });
    let dscp = dscp.and_then(|n| match u8::try_from(*n.get_ref()) {
        Ok(v) if v < 64 => Some(FlowAction::MarkDscp { dscp: v }),
        _ => {
            d.error(
                n.span(),
                "`flowspec_dscp` in [hostgroup.mitigation] must be 0 to 63",
            );
            None
        }
    });
    let Some(a) = action else {
        return rate.unwrap_or(FlowAction::Discard);
    };
    let need = |d: &mut Diags, key: &str, what: Option<FlowAction>| match what {
        Some(x) => x,
        None => {
            d.error(
                a.span(),
                format!(
                    "flowspec_action `{}` needs `{key}` in [hostgroup.mitigation]",
                    a.get_ref()
                ),
            );
            FlowAction::Discard
        }
    };
    match a.get_ref().as_str() {
        "discard" => FlowAction::Discard,
        "rate-limit" => need(d, "flowspec_rate_limit", rate),
        "redirect" => need(d, "flowspec_redirect", redirect),
        "mark" => need(d, "flowspec_dscp", dscp),
        other => {
            d.error(
                a.span(),
                format!("unknown flowspec_action `{other}`; actions are discard, rate-limit, redirect, mark"),
            );
            FlowAction::Discard
        }
    }
}

/// A BGP community, `ASN:VALUE`.
fn community(d: &mut Diags, s: &Spanned<String>) -> Option<levee_bgp::Community> {
    match s.get_ref().parse() {
        Ok(c) => Some(c),
        Err(e) => {
            d.error(s.span(), e.to_string());
            None
        }
    }
}

fn ladder(d: &mut Diags, list: &[Spanned<String>]) -> Vec<Level> {
    let mut out: Vec<Level> = Vec::new();
    for s in list {
        let Some(level) = Level::ALL.into_iter().find(|l| l.as_str() == s.get_ref()) else {
            let mut msg = format!(
                "unknown mitigation level `{}`; levels are firewall, flowspec, rtbh, scrubbing",
                s.get_ref()
            );
            if let Some(best) = did_you_mean(s.get_ref(), Level::ALL.iter().map(|l| l.as_str())) {
                msg = format!(
                    "unknown mitigation level `{}`; did you mean `{best}`?",
                    s.get_ref()
                );
            }
            d.error(s.span(), msg);
            continue;
        };
        if out.contains(&level) {
            d.error(
                s.span(),
                format!("mitigation level `{level}` is listed twice"),
            );
        } else if out.last().is_some_and(|last| *last > level) {
            d.error(
                s.span(),
                format!(
                    "mitigation level `{level}` comes after `{}`; the ladder goes firewall, flowspec, rtbh, scrubbing",
                    out.last().map_or("", |l| l.as_str())
                ),
            );
        } else {
            out.push(level);
        }
    }
    out
}

/// Why levee could not keep its store in a directory (said after the
/// directory's name).
#[derive(Debug, thiserror::Error)]
pub enum DataDirProblem {
    #[error("exists and is not a directory")]
    NotADirectory,
    #[error("cannot be created: {} is not a directory", .0.display())]
    AncestorNotADirectory(PathBuf),
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
    #[error("is not writable")]
    NotWritable,
    #[error("cannot be created: {} is not writable", .0.display())]
    AncestorNotWritable(PathBuf),
}

/// Whether levee could keep its store in `dir`: an existing, writable
/// directory, or a path whose nearest existing ancestor is one.
fn check_data_dir(dir: &Path) -> Result<(), DataDirProblem> {
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if m.is_dir() => break,
            Ok(_) if probe == dir => return Err(DataDirProblem::NotADirectory),
            Ok(_) => return Err(DataDirProblem::AncestorNotADirectory(probe.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match probe.parent() {
                Some(p) if !p.as_os_str().is_empty() => probe = p,
                _ => {
                    probe = Path::new(".");
                    break;
                }
            },
            Err(e) => return Err(DataDirProblem::Unreadable(e)),
        }
    }
    if !writable(probe) {
        return Err(if probe == dir {
            DataDirProblem::NotWritable
        } else {
            DataDirProblem::AncestorNotWritable(probe.to_owned())
        });
    }
    Ok(())
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Flattens scalar settings to dotted paths (`hostgroup[0].thresholds.pps`).
fn flatten(prefix: &str, table: &DeTable<'_>, out: &mut BTreeMap<String, String>) {
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        flatten_value(path, v.get_ref(), out);
    }
}

fn flatten_value(path: String, v: &DeValue<'_>, out: &mut BTreeMap<String, String>) {
    match v {
        DeValue::Table(t) => flatten(&path, t, out),
        DeValue::Array(items)
            if items
                .iter()
                .all(|i| matches!(i.get_ref(), DeValue::Table(_)))
                && !items.is_empty() =>
        {
            for (i, item) in items.iter().enumerate() {
                flatten_value(format!("{path}[{i}]"), item.get_ref(), out);
            }
        }
        other => {
            out.insert(path, render(other));
        }
    }
}

fn render(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("{s:?}"),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .unwrap_or_else(|_| i.as_str().to_owned()),
        DeValue::Float(f) => f.as_str().to_owned(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(dt) => dt.to_string(),
        DeValue::Array(items) => {
            let parts: Vec<String> = items.iter().map(|i| render(i.get_ref())).collect();
            format!("[{}]", parts.join(", "))
        }
        DeValue::Table(t) => {
            let mut flat = BTreeMap::new();
            flatten("", t, &mut flat);
            let parts: Vec<String> = flat
                .into_iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// What changed between two loaded files, for the audit log of a reload.
#[derive(Debug, Default, PartialEq, serde::Serialize)]
pub struct Diff {
    pub added: BTreeMap<String, String>,
    pub removed: BTreeMap<String, String>,
    /// path → [old, new]
    pub changed: BTreeMap<String, [String; 2]>,
}

impl Diff {
    pub fn between(old: &Loaded, new: &Loaded) -> Diff {
        let mut diff = Diff::default();
        for (k, v) in &old.flat {
            match new.flat.get(k) {
                None => {
                    diff.removed.insert(k.clone(), v.clone());
                }
                Some(n) if n != v => {
                    diff.changed.insert(k.clone(), [v.clone(), n.clone()]);
                }
                Some(_) => {}
            }
        }
        for (k, v) in &new.flat {
            if !old.flat.contains_key(k) {
                diff.added.insert(k.clone(), v.clone());
            }
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests;
