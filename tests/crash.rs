//! levee comes back after every crash (issue 22): a crash-restart torture
//! test.
//!
//! levee runs with its own gobgpd, peered over BGP with a second gobgpd
//! playing the border router, under live sFlow attack traffic (a steady
//! SYN flood and two floods that come and go, so announcements and
//! withdrawals keep happening), with the dead-man running beside it. While
//! it runs, and while it is down and starting, the data dir is hammered:
//! CLI reads (`mitigation list`, `apikey list`, `audit export`, `status`),
//! CLI changes (`apikey add`, which write the store themselves when levee
//! does not answer), API reads and changes (API keys, manual blackholes)
//! and SIGHUP reloads.
//!
//! Each cycle kills levee with SIGKILL — at a random moment, while it
//! starts, at one of the named crash points (`LEVEE_TEST_CRASH_AT`, debug
//! builds only: during an announcement, a withdrawal, a reconciliation, a
//! config reload, a burst of audit appends, an API key change, a
//! compaction), or for longer than the dead-man waits — and starts it
//! again. Every cycle must hold:
//!
//! - levee is up (its web server listening) within 5 s of the kill;
//! - every intent stored at the kill that has not expired is in force
//!   again, and nothing acknowledged before the kill is lost (API keys,
//!   revocations, manual mitigations, incidents the API listed, audit
//!   entries whose head `/metrics` showed);
//! - the router's routes equal levee's intents within the reconcile
//!   interval (router ≡ levee's gobgpd by NLRI, gobgpd ≡ intents by
//!   announcement);
//! - `levee audit export` verifies with `levee audit verify` and with
//!   `scripts/audit-verify.py`;
//! - every CLI read succeeded, and no API call failed other than by levee
//!   being down.
//!
//! After the last cycle the attack ends: every route must be gone from the
//! router, and levee's intents with them (nothing orphaned).
//!
//! `levee_comes_back_after_every_crash` (in `make test`) runs a handful of
//! cycles; `make test-crash` runs the 100 of the `#[ignore]`d one.
//! `LEVEE_CRASH_CYCLES` and `LEVEE_CRASH_SEED` override count and seed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::bgp::Bed;
use common::levee_bin;
use levee_tools::attacks::{self, Attack, Family, Sources};
use levee_tools::export;
use serde_json::Value;

/// levee must be up again this long after a kill.
const UP_WITHIN: Duration = Duration::from_secs(5);
/// `[mitigation] reconcile_every` of the test's config.
const RECONCILE: Duration = Duration::from_secs(2);
/// `[mitigation] dead_man` of the test's config.
const DEAD_MAN: Duration = Duration::from_secs(3);
/// The crash-point variable (debug builds).
const CRASH_AT: &str = "LEVEE_TEST_CRASH_AT";

#[test]
fn levee_comes_back_after_every_crash() {
    torture(cycles_or(SHORT.len()), &SHORT);
}

/// `make test-crash`.
#[test]
#[ignore = "100 cycles, several minutes: make test-crash"]
fn levee_comes_back_after_every_crash_100_times() {
    torture(cycles_or(100), &LONG);
}

/// An operator's view of a damaged store: `levee run` refuses it at once,
/// naming the damaged file — never "another levee" or a lock, which "block
/// checksum mismatch" once read as — `levee store check` finds it too,
/// `levee store repair` keeps a copy and rebuilds the store, and levee
/// starts on it.
#[test]
fn a_damaged_store_is_named_checked_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("levee.toml");
    std::fs::write(&config, common::test_config(&data, "")).unwrap();
    let config_s = config.to_str().unwrap();
    // A store with tables: a run, a few changes, a clean stop (which
    // flushes every column family to a table).
    let mut levee = Run::spawn(&config, None);
    levee
        .wait_up(Duration::from_secs(60))
        .expect("levee starts");
    for i in 0..5 {
        let (ok, _, err) = cli(&["apikey", "add", "--config", config_s, &format!("k{i}")]);
        assert!(ok, "{err}");
    }
    // SAFETY: kill(2) of our own, not yet reaped, child.
    unsafe { libc::kill(levee.pid, libc::SIGTERM) };
    assert!(levee.wait_exit(Duration::from_secs(30)));
    assert_eq!(levee.exited().and_then(|s| s.code()), Some(0));

    // Damage the biggest table where RocksDB reads it when it opens the
    // store: its index, just before the footer.
    let table = std::fs::read_dir(data.join("db"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a table file");
    let mut bytes = std::fs::read(&table).unwrap();
    let at = bytes.len() - 120;
    for b in &mut bytes[at..at + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&table, bytes).unwrap();

    let t = Instant::now();
    let mut levee = Run::spawn(&config, None);
    assert!(
        levee.wait_exit(Duration::from_secs(20)),
        "levee started on a damaged store"
    );
    assert_eq!(levee.exited().and_then(|s| s.code()), Some(1));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "no waiting for a lock"
    );
    let log = levee.log().join("\n");
    let table_s = table.to_str().unwrap();
    assert!(
        log.contains("levee: opening the store: the store is damaged: ")
            && log.contains(table_s)
            && log.contains("levee store repair"),
        "{log}"
    );
    assert!(
        !log.contains("another levee") && !log.contains("locked"),
        "{log}"
    );

    let (code, out, err) = cli_code(&["store", "check", "--config", config_s]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("the store is damaged") && err.contains(table_s),
        "{out}{err}"
    );

    let (code, out, err) = cli_code(&["store", "repair", "--config", config_s]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("db.damaged-"), "{err}");
    assert!(out.trim_end().ends_with("ok"), "{out}");
    let kept: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("db.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged store is kept");
    assert!(kept[0].join(table.file_name().unwrap()).exists());

    let mut levee = Run::spawn(&config, None);
    assert!(
        levee.wait_up(Duration::from_secs(60)).is_some(),
        "levee does not start on the repaired store:\n{}",
        levee.tail(20)
    );
    let (code, out, _) = cli_code(&["status", "--config", config_s]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("levee: running (pid "), "{out}");
}

fn cycles_or(n: usize) -> usize {
    std::env::var("LEVEE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n)
}

// --- how levee is killed ---------------------------------------------------

/// What makes an armed crash point fire.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// It fires by itself (start-up, periodic reconciliation, compaction,
    /// the attack's own announcements and withdrawals).
    None,
    /// A manual blackhole announced over the API.
    Announce,
    /// A manual blackhole announced, then withdrawn over the API.
    Withdraw,
    /// A route levee has no intent for, added to its gobgpd behind its back.
    Orphan,
    /// One of levee's routes removed from its gobgpd behind its back.
    Missing,
    /// SIGHUP.
    Reload,
    /// Twenty SIGHUPs and a few API keys made at once.
    Burst,
    /// An API key made over the API.
    ApiKey,
}

#[derive(Debug, Clone, Copy)]
enum Kill {
    /// SIGKILL after a random time of running under load.
    Random,
    /// SIGKILL a random moment after the start, before it is up.
    DuringStart,
    /// Down for longer than the dead-man waits, then started.
    LongOutage,
    /// Started with `LEVEE_TEST_CRASH_AT=point`; the trigger makes it die.
    At(&'static str, Trigger),
}

/// Every named point, each with what makes it fire.
const POINTS: [Kill; 13] = [
    Kill::At("intent.put", Trigger::Announce),
    Kill::At("mitigation_log.put:announce", Trigger::Announce),
    Kill::At("intent.delete", Trigger::Withdraw),
    Kill::At("mitigation_log.put:withdraw", Trigger::Withdraw),
    Kill::At("intents.read#3", Trigger::None),
    Kill::At("mitigation_log.put:reconcile_withdraw", Trigger::Orphan),
    Kill::At("mitigation_log.put:reconcile_announce", Trigger::Missing),
    Kill::At("audit.append:config.reload", Trigger::Reload),
    Kill::At("audit.append#12", Trigger::Burst),
    Kill::At("apikey.put", Trigger::ApiKey),
    Kill::At("audit.appended:apikey.create", Trigger::ApiKey),
    Kill::At("compaction", Trigger::None),
    Kill::At("store.open", Trigger::None),
];

/// The short run: one of each kind that matters most.
const SHORT: [Kill; 10] = [
    Kill::Random,
    Kill::At("intent.put", Trigger::Announce),
    Kill::At("intent.delete", Trigger::Withdraw),
    Kill::At("audit.append#12", Trigger::Burst),
    Kill::At("apikey.put", Trigger::ApiKey),
    Kill::DuringStart,
    Kill::At("mitigation_log.put:reconcile_withdraw", Trigger::Orphan),
    Kill::At("compaction", Trigger::None),
    Kill::LongOutage,
    Kill::At("audit.append:config.reload", Trigger::Reload),
];

/// The long run: nothing fixed — every cycle's kind comes from
/// [`kind_of`]: random kills, every named point in turn, kills during
/// start-up and long outages.
const LONG: [Kill; 0] = [];

/// The kind of cycle `i` of `n`: the plan's list in order, then (for the
/// long run) random kills with every named point, a kill during start-up
/// every tenth and a long outage every twentieth cycle.
fn kind_of(i: usize, plan: &[Kill]) -> Kill {
    if let Some(k) = plan.get(i) {
        return *k;
    }
    match i {
        _ if i % 20 == 19 => Kill::LongOutage,
        _ if i % 10 == 9 => Kill::DuringStart,
        _ if i % 2 == 1 => POINTS[(i / 2) % POINTS.len()],
        _ => Kill::Random,
    }
}

// --- a small deterministic random source ------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

// --- levee as a process -------------------------------------------------------

use levee_collectors::clock::now_ms;

/// The value of `key=value` in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(&format!(" {key}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
}

/// One `levee run`.
struct Run {
    child: Child,
    pid: i32,
    spawned: Instant,
    lines: Arc<Mutex<Vec<String>>>,
    /// Web and sFlow addresses, once up.
    up: Arc<Mutex<Option<(SocketAddr, SocketAddr)>>>,
    reaped: Option<ExitStatus>,
}

impl Run {
    fn spawn(config: &Path, crash_at: Option<&str>) -> Run {
        let mut c = Command::new(levee_bin());
        c.args(["run", "--config"])
            .arg(config)
            .env_remove("LEVEE_LOG")
            .env_remove(CRASH_AT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = crash_at {
            c.env(CRASH_AT, p);
        }
        let mut child = c.spawn().expect("levee starts");
        let spawned = Instant::now();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let up = Arc::new(Mutex::new(None));
        let sflow = Arc::new(Mutex::new(None));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (lines, up, sflow) = (lines.clone(), up.clone(), sflow.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("Collector listening") && line.contains("sflow") {
                        if let Some(a) = field(&line, "addr").and_then(|a| a.parse().ok()) {
                            *sflow.lock().unwrap() = Some(a);
                        }
                    }
                    if line.contains("Web server listening") {
                        let web: Option<SocketAddr> =
                            field(&line, "addr").and_then(|a| a.parse().ok());
                        let s = *sflow.lock().unwrap();
                        if let (Some(w), Some(s)) = (web, s) {
                            *up.lock().unwrap() = Some((w, s));
                        }
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Run {
            pid: child.id() as i32,
            child,
            spawned,
            lines,
            up,
            reaped: None,
        }
    }

    /// Waits until it is up; `None` when it died or took longer.
    fn wait_up(&mut self, within: Duration) -> Option<(SocketAddr, SocketAddr)> {
        let deadline = self.spawned + within;
        loop {
            if let Some(a) = *self.up.lock().unwrap() {
                return Some(a);
            }
            if self.exited().is_some() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().unwrap();
        }
        self.reaped
    }

    fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.reaped = Some(self.child.wait().unwrap());
        }
    }

    /// Waits for it to end by itself (a crash point); false after `within`.
    fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.exited().is_none() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn tail(&self, n: usize) -> String {
        let l = self.log();
        l[l.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill();
    }
}

// --- HTTP that does not panic ---------------------------------------------------

/// One HTTP/1.1 request; `None` when levee is not there to answer.
fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    common::try_http(addr, method, path, bearer, body).map(|a| (a.status, a.body))
}

/// `levee ARGS…` to completion: (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = cli_code(args);
    (code == Some(0), out, err)
}

/// `levee ARGS…` to completion: (exit code, stdout, stderr).
fn cli_code(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(levee_bin())
        .args(args)
        .env_remove("LEVEE_CONFIG")
        .env_remove("LEVEE_LOG")
        .env_remove(CRASH_AT)
        .output()
        .expect("levee runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// --- traffic ------------------------------------------------------------------

/// One second of an attack as sFlow datagrams, sampled 1 in 100.
fn second_of(family: Family, target: &str, pps: u64, seed: u64) -> Vec<Vec<u8>> {
    let s = attacks::attack(
        &Attack {
            family,
            target: target.parse().unwrap(),
            pps,
            start_us: 0,
            duration_s: 1,
            sources: Sources::Spoofed,
        },
        seed,
    );
    export::sflow(&s, IpAddr::V4(Ipv4Addr::LOCALHOST), 100, seed, 100_000)
        .into_iter()
        .map(|e| e.payload)
        .collect()
}

/// Sends, every second, each host's datagrams while its attack is on, to
/// whatever sFlow socket the running levee has.
fn start_traffic(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    // (datagrams, period s, on for s, offset s): a steady flood, and two
    // that come and go so that mitigations are announced and withdrawn.
    let hosts = vec![
        (
            second_of(Family::SynFlood, "192.0.2.10", 10_000, 1),
            1,
            1,
            0,
        ),
        (
            second_of(Family::UdpFlood, "192.0.2.11", 20_000, 2),
            16,
            8,
            0,
        ),
        (
            second_of(Family::IcmpFlood, "192.0.2.12", 10_000, 3),
            14,
            5,
            7,
        ),
    ];
    std::thread::spawn(move || {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        while !shared.attack_over.load(Ordering::Relaxed) {
            let t = Instant::now();
            let s = t0.elapsed().as_secs();
            let to = *shared.sflow.lock().unwrap();
            let mut batch: Vec<&Vec<u8>> = Vec::new();
            for (datagrams, period, on, offset) in &hosts {
                if (s + offset) % period < *on {
                    batch.extend(datagrams.iter());
                }
            }
            if let Some(to) = to {
                let step = Duration::from_secs(1) / batch.len().max(1) as u32;
                for d in batch {
                    let _ = tx.send_to(d, to);
                    std::thread::sleep(step.saturating_sub(Duration::from_micros(30)));
                }
            }
            std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
        }
    })
}

// --- what the hammering threads share and record ---------------------------------

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    attack_over: AtomicBool,
    /// Changes (API and CLI writes, reloads) hold this for reading; the
    /// checks take it for writing, so nothing changes while they look.
    writes: RwLock<()>,
    /// The running levee's web and sFlow addresses (none while down).
    web: Mutex<Option<SocketAddr>>,
    sflow: Mutex<Option<SocketAddr>>,
    /// The running levee's pid, for SIGHUP (none while down or starting).
    pid: Mutex<Option<i32>>,
    config: Mutex<PathBuf>,
    read_token: Mutex<String>,
    write_token: Mutex<String>,
    failures: Mutex<Vec<String>>,
    /// Acknowledged API keys: id → revoked (acknowledged too).
    keys: Mutex<BTreeMap<String, bool>>,
    /// Acknowledged manual mitigations not (acknowledged) withdrawn: id →
    /// expiry (Unix ms).
    manual: Mutex<BTreeMap<String, u64>>,
    /// Audit heads `/metrics` showed: seq → hash.
    heads: Mutex<BTreeMap<u64, String>>,
    /// Incidents `/api/v1/incidents` listed (it reads them from the store,
    /// where they are synced): they must never be lost.
    incidents: Mutex<BTreeSet<String>>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    cli_reads: AtomicU64,
    cli_writes: AtomicU64,
    /// CLI changes whose answer the kill cut off.
    cli_cut: AtomicU64,
    api_reads: AtomicU64,
    api_writes: AtomicU64,
    api_down: AtomicU64,
    reloads: AtomicU64,
}

impl Shared {
    fn fail(&self, what: String) {
        eprintln!("FAILURE: {what}");
        self.failures.lock().unwrap().push(what);
    }

    fn config(&self) -> String {
        self.config.lock().unwrap().to_str().unwrap().to_owned()
    }

    fn web(&self) -> Option<SocketAddr> {
        *self.web.lock().unwrap()
    }
}

/// CLI reads, all the time: each must succeed, whether levee runs, is
/// down or is starting.
fn cli_reader(shared: Arc<Shared>, out: PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            let config = shared.config();
            let export = out.join(format!("hammer-{}.jsonl", i % 2));
            let args: Vec<&str> = match i % 4 {
                0 => vec!["mitigation", "list", "--json", "--config", &config],
                1 => vec!["apikey", "list", "--config", &config],
                2 => vec![
                    "audit",
                    "export",
                    "--config",
                    &config,
                    "--output",
                    export.to_str().unwrap(),
                ],
                _ => vec!["status", "--config", &config],
            };
            let (code, _, err) = cli_code(&args);
            // `status` exits 3 while levee does not answer.
            let ok = code == Some(0) || (args[0] == "status" && code == Some(3));
            if !ok {
                shared.fail(format!("`levee {}` failed: {err}", args[..2].join(" ")));
            }
            shared.counts.cli_reads.fetch_add(1, Ordering::Relaxed);
            i += 1;
            std::thread::sleep(Duration::from_millis(80));
        }
    })
}

/// CLI changes: `levee apikey add`, through levee or (levee down) in the
/// store for one write. Each must succeed and its key must never be lost.
fn cli_writer(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            {
                let _w = shared.writes.read().unwrap();
                let config = shared.config();
                let name = format!("cli-{i}");
                let (ok, _, err) = cli(&["apikey", "add", "--config", &config, &name]);
                match err
                    .split("made API key ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                {
                    Some(id) if ok => {
                        shared.keys.lock().unwrap().insert(id.to_owned(), false);
                        shared.counts.cli_writes.fetch_add(1, Ordering::Relaxed);
                    }
                    // Sent to levee, which was killed before it answered:
                    // the CLI must say it cannot know, and does.
                    _ if err.contains("may or may not have been made") => {
                        shared.counts.cli_cut.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => shared.fail(format!("`levee apikey add {name}` failed: {err}")),
                }
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(350));
        }
    })
}

/// API reads: the mitigations, the audit chain, `/metrics` (whose audit
/// head is acknowledged: those entries must never be lost).
fn api_reader(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            i += 1;
            std::thread::sleep(Duration::from_millis(40));
            let Some(web) = shared.web() else { continue };
            let token = shared.read_token.lock().unwrap().clone();
            let path = match i % 4 {
                0 => "/api/v1/mitigations?log=5",
                1 => "/api/v1/audit?limit=5",
                2 => "/api/v1/incidents?limit=20",
                _ => "/metrics",
            };
            match try_http(web, "GET", path, Some(&token), None) {
                None => {
                    shared.counts.api_down.fetch_add(1, Ordering::Relaxed);
                }
                Some((200, body)) => {
                    shared.counts.api_reads.fetch_add(1, Ordering::Relaxed);
                    if path == "/metrics" {
                        if let Some((seq, hash)) = audit_head(&body) {
                            shared.heads.lock().unwrap().insert(seq, hash);
                        }
                    }
                    if path.starts_with("/api/v1/incidents") {
                        let v: Value = serde_json::from_str(&body).unwrap_or_default();
                        shared.incidents.lock().unwrap().extend(
                            v.as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|i| i["id"].as_str().map(str::to_owned)),
                        );
                    }
                }
                Some((status, body)) => {
                    shared.fail(format!("GET {path}: HTTP {status}: {body}"));
                }
            }
        }
    })
}

/// `levee_audit_head_info{seq="…",sha256="…"}` of a `/metrics` text.
fn audit_head(metrics: &str) -> Option<(u64, String)> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("levee_audit_head_info{"))?;
    let seq = line
        .split("seq=\"")
        .nth(1)?
        .split('"')
        .next()?
        .parse()
        .ok()?;
    let hash = line.split("sha256=\"").nth(1)?.split('"').next()?;
    Some((seq, hash.to_owned()))
}

/// API changes: API keys made and revoked, manual blackholes announced and
/// withdrawn. What levee acknowledges is recorded.
fn api_writer(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            i += 1;
            std::thread::sleep(Duration::from_millis(150));
            let _w = shared.writes.read().unwrap();
            let Some(web) = shared.web() else { continue };
            let token = shared.write_token.lock().unwrap().clone();
            match i % 4 {
                0 => {
                    let body = format!("{{\"name\": \"api-{i}\", \"scope\": \"read\"}}");
                    match try_http(web, "POST", "/api/v1/apikeys", Some(&token), Some(&body)) {
                        Some((201, b)) => {
                            let v: Value = serde_json::from_str(&b).unwrap();
                            let id = v["id"].as_str().unwrap().to_owned();
                            shared.keys.lock().unwrap().insert(id, false);
                            shared.counts.api_writes.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {}
                        Some((s, b)) => shared.fail(format!("POST /apikeys: HTTP {s}: {b}")),
                    }
                }
                1 => {
                    // Revoke one of the keys made here (never the test's own).
                    let id = shared
                        .keys
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(_, revoked)| !**revoked)
                        .map(|(id, _)| id.clone());
                    let Some(id) = id else { continue };
                    match try_http(
                        web,
                        "DELETE",
                        &format!("/api/v1/apikeys/{id}"),
                        Some(&token),
                        None,
                    ) {
                        Some((200, _)) => {
                            shared.keys.lock().unwrap().insert(id, true);
                            shared.counts.api_writes.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {}
                        Some((s, b)) => shared.fail(format!("DELETE /apikeys/{id}: HTTP {s}: {b}")),
                    }
                }
                2 => {
                    let host = format!("192.0.2.{}", 50 + i % 8);
                    let body =
                        format!("{{\"host\": \"{host}\", \"level\": \"rtbh\", \"ttl\": \"10m\"}}");
                    match try_http(
                        web,
                        "POST",
                        "/api/v1/mitigations",
                        Some(&token),
                        Some(&body),
                    ) {
                        Some((201, b)) => {
                            let v: Value = serde_json::from_str(&b).unwrap();
                            for m in v.as_array().into_iter().flatten() {
                                shared.manual.lock().unwrap().insert(
                                    m["id"].as_str().unwrap().to_owned(),
                                    m["expires_ms"].as_u64().unwrap(),
                                );
                            }
                            shared.counts.api_writes.fetch_add(1, Ordering::Relaxed);
                        }
                        // In force already (409); gobgpd not yet connected
                        // after a start (503).
                        Some((409 | 503, _)) | None => {}
                        Some((s, b)) => shared.fail(format!("POST /mitigations: HTTP {s}: {b}")),
                    }
                }
                _ => {
                    let id = shared.manual.lock().unwrap().keys().next().cloned();
                    let Some(id) = id else { continue };
                    match try_http(
                        web,
                        "DELETE",
                        &format!("/api/v1/mitigations/{id}"),
                        Some(&token),
                        None,
                    ) {
                        Some((200, _)) => {
                            shared.manual.lock().unwrap().remove(&id);
                            shared.counts.api_writes.fetch_add(1, Ordering::Relaxed);
                        }
                        // No answer: it may have been withdrawn; no
                        // longer a mitigation levee acknowledged in force.
                        None => {
                            shared.manual.lock().unwrap().remove(&id);
                        }
                        Some((404, _)) => {
                            // Expired or withdrawn before: not in force.
                            shared.manual.lock().unwrap().remove(&id);
                        }
                        Some((s, b)) => {
                            shared.fail(format!("DELETE /mitigations/{id}: HTTP {s}: {b}"))
                        }
                    }
                }
            }
        }
    })
}

/// SIGHUP now and then (config reloads), to the running levee only.
fn reloader(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rng = Rng(0x5eed_1234);
        while !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(rng.millis(400, 1200));
            let _w = shared.writes.read().unwrap();
            if let Some(pid) = *shared.pid.lock().unwrap() {
                // SAFETY: kill(2) of our own, not yet reaped, child.
                unsafe { libc::kill(pid, libc::SIGHUP) };
                shared.counts.reloads.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

// --- looking at levee, its gobgpd and the router ----------------------------

/// A mitigation in force: its route, host, who decided.
type InForce = (levee_bgp::Route, String, String);

/// The mitigations levee has in force (its intents), by id.
fn in_force(web: SocketAddr, token: &str) -> Option<BTreeMap<String, InForce>> {
    let (status, body) = try_http(web, "GET", "/api/v1/mitigations?log=0", Some(token), None)?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(
        v["active"]
            .as_array()?
            .iter()
            .filter(|m| m["shadow"] != true)
            .map(|m| {
                (
                    m["id"].as_str().unwrap_or("").to_owned(),
                    (
                        serde_json::from_value(m["route"].clone()).unwrap(),
                        m["host"].as_str().unwrap_or("").to_owned(),
                        m["decided_by"].as_str().unwrap_or("").to_owned(),
                    ),
                )
            })
            .collect(),
    )
}

/// An intent as stored: expiry (Unix ms), host, who decided.
type Stored = (u64, String, String);

/// The intents stored, read while levee is down (`mitigation list`, which
/// opens the store read-only), by id.
fn stored_intents(config: &str) -> Result<BTreeMap<String, Stored>, String> {
    let (ok, out, err) = cli(&["mitigation", "list", "--json", "--config", config]);
    if !ok {
        return Err(err);
    }
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(v["active"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["shadow"] != true)
        .map(|m| {
            (
                m["id"].as_str().unwrap_or("").to_owned(),
                (
                    m["expires_ms"].as_u64().unwrap_or(0),
                    m["host"].as_str().unwrap_or("").to_owned(),
                    m["decided_by"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect())
}

const FAMILIES: [&str; 4] = ["ipv4", "ipv4-flowspec", "ipv6", "ipv6-flowspec"];

/// The NLRIs a gobgpd's global RIB holds, per family.
fn rib(g: &levee_tools::gobgpd::Gobgpd) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in FAMILIES {
        if let Ok(Value::Object(m)) = g.rib_json(f) {
            out.extend(m.keys().map(|k| format!("{f} {k}")));
        }
    }
    out
}

/// levee's gobgpd's API-originated routes.
fn speaker_routes(rt: &tokio::runtime::Runtime, bed: &Bed) -> Option<Vec<levee_bgp::Route>> {
    rt.block_on(async {
        let mut s = levee_bgp::Speaker::connect(bed.speaker.grpc()).await.ok()?;
        s.local_routes().await.ok().map(|(r, _)| r)
    })
}

/// Whether the router holds exactly what levee's gobgpd announces, and that
/// exactly levee's intents; what differs, if not.
fn converged(
    rt: &tokio::runtime::Runtime,
    bed: &Bed,
    web: SocketAddr,
    token: &str,
) -> Result<usize, String> {
    let before = in_force(web, token).ok_or("levee does not answer")?;
    let routes = speaker_routes(rt, bed).ok_or("levee's gobgpd does not answer")?;
    let (speaker, router) = (rib(&bed.speaker), rib(&bed.router));
    let after = in_force(web, token).ok_or("levee does not answer")?;
    if before.keys().ne(after.keys()) {
        return Err("levee changed its intents while we looked".to_owned());
    }
    if speaker != router {
        return Err(format!(
            "router ≠ levee's gobgpd: only at the router {:?}, only at gobgpd {:?}",
            router.difference(&speaker).collect::<Vec<_>>(),
            speaker.difference(&router).collect::<Vec<_>>()
        ));
    }
    let intents: Vec<&levee_bgp::Route> = after.values().map(|(r, _, _)| r).collect();
    let missing: Vec<String> = intents
        .iter()
        .filter(|i| !routes.iter().any(|r| r.same_announcement(i)))
        .map(|r| r.to_string())
        .collect();
    let orphans: Vec<String> = routes
        .iter()
        .filter(|r| !intents.iter().any(|i| r.same_announcement(i)))
        .map(|r| r.to_string())
        .collect();
    if !missing.is_empty() || !orphans.is_empty() || intents.len() != routes.len() {
        return Err(format!(
            "gobgpd ≠ intents: missing {missing:?}, without an intent {orphans:?}"
        ));
    }
    Ok(intents.len())
}

/// The BGP test bed on loopback addresses no other test uses: the shared
/// `loopback_pair` picks 127.100–199.x.y by pid, and two test processes
/// whose pids end alike (a developer running several suites at once) would
/// meet on the same gobgpds. Here the second octet is 200–254, and an
/// address pair whose ports something holds is passed over.
fn bed() -> Bed {
    use levee_tools::gobgpd::{Gobgpd, BGP_PORT, GRPC_PORT};
    let free = |a: Ipv4Addr| {
        [BGP_PORT, GRPC_PORT]
            .iter()
            .all(|&p| std::net::TcpListener::bind((a, p)).is_ok())
    };
    let mut rng = Rng(now_ms() ^ u64::from(std::process::id()) << 20 | 1);
    let (s, r) = loop {
        let (b, c) = (200 + rng.below(55) as u8, 1 + rng.below(250) as u8);
        let (s, r) = (Ipv4Addr::new(127, b, c, 2), Ipv4Addr::new(127, b, c, 3));
        if free(s) && free(r) {
            break (s, r);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let router = Gobgpd::router(dir.path(), r, s).unwrap();
    let speaker = Gobgpd::speaker(dir.path(), s, r).unwrap();
    router.wait_established(Duration::from_secs(30)).unwrap();
    Bed {
        dir,
        speaker,
        router,
    }
}

// --- the torture --------------------------------------------------------------

struct Stats {
    kind: String,
    /// Kill (or the crash point firing) → web server listening.
    back: Duration,
    /// Spawn → web server listening.
    start: Duration,
    /// Up → router ≡ intents.
    converge: Duration,
    routes: usize,
}

fn torture(cycles: usize, plan: &[Kill]) {
    let seed = std::env::var("LEVEE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(now_ms)
        .max(1);
    eprintln!("crash torture: {cycles} cycles, seed {seed} (LEVEE_CRASH_SEED={seed} repeats the kinds and moments)");
    let mut rng = Rng(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let bed = bed();
    let data = bed.dir.path().join("data");
    let config = bed.dir.path().join("levee.toml");
    // levee listens on a loopback address of this test's own (beside its
    // two gobgpds'): the ports of a levee that was killed are free for
    // anyone, and another test's levee that took one must not be taken
    // for this one (nor receive this test's attack).
    let [_, b, c, _] = bed.speaker.addr.octets();
    let me = Ipv4Addr::new(127, b, c, 4);
    let text = format!(
        "data_dir = \"{}\"\n\
         [collector]\nallowed_exporters = [\"127.0.0.0/8\"]\n\
         [[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\"]\n\
         [hostgroup.thresholds]\npps = 2000\n\
         [hostgroup.mitigation]\nladder = [\"flowspec\", \"rtbh\"]\n\
         flowspec_max_bps = 50000000\nrtbh_min_bps = 50000000\n\
         [detection]\nhold_down = \"2s\"\n\
         [mitigation]\nhold_down = \"3s\"\ndwell = \"3s\"\nreconcile_every = \"{}s\"\ndead_man = \"{}s\"\n\
         [bgp]\ngobgp_grpc = \"{}\"\nnext_hop = \"192.0.2.254\"\n\
         [collector.sflow]\nlisten = [\"{me}:0\"]\n\
         [collector.netflow]\nlisten = [\"{me}:0\"]\n\
         [web]\nlisten = \"{me}:0\"\n",
        data.display(),
        RECONCILE.as_secs(),
        DEAD_MAN.as_secs(),
        bed.speaker.grpc()
    );
    std::fs::write(&config, text).unwrap();
    let config_s = config.to_str().unwrap().to_owned();

    let shared = Arc::new(Shared::default());
    *shared.config.lock().unwrap() = config.clone();

    let mut levee = Run::spawn(&config, None);
    let (web, sflow) = levee
        .wait_up(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("levee did not start:\n{}", levee.tail(50)));
    *shared.web.lock().unwrap() = Some(web);
    *shared.sflow.lock().unwrap() = Some(sflow);
    *shared.pid.lock().unwrap() = Some(levee.pid);
    // The "write" token also manages API keys: scope admin.
    for (scope, slot) in [("read", &shared.read_token), ("admin", &shared.write_token)] {
        let (ok, out, err) = cli(&[
            "apikey", "add", "--config", &config_s, "torture", "--scope", scope,
        ]);
        assert!(ok, "{err}");
        *slot.lock().unwrap() = out.trim().to_owned();
    }
    let mut deadman = Command::new(levee_bin())
        .args(["deadman", "--config", &config_s])
        .env_remove("LEVEE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let out = bed.dir.path().to_owned();
    let threads = vec![
        start_traffic(shared.clone()),
        cli_reader(shared.clone(), out.clone()),
        cli_writer(shared.clone()),
        api_reader(shared.clone()),
        api_writer(shared.clone()),
        reloader(shared.clone()),
    ];
    // Let the attacks be detected and mitigated before the first kill.
    let token = shared.read_token.lock().unwrap().clone();
    let wtoken = shared.write_token.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_force(web, &token).map_or(0, |m| m.len()) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut stats: Vec<Stats> = Vec::new();
    let mut deadman_acts = 0;
    // Starts that found the store locked by a short-lived command.
    let mut waited = 0;
    for cycle in 0..cycles {
        let kind = kind_of(cycle, plan);
        let label = match kind {
            Kill::At(p, _) => format!("at {p}"),
            k => format!("{k:?}").to_lowercase(),
        };
        let failures_before = shared.failures.lock().unwrap().len();
        let fail = |what: String| shared.fail(format!("cycle {cycle} ({label}): {what}"));

        // ---- the kill ----
        let mut killed_at;
        let mut previous_log = String::new();
        match kind {
            Kill::Random | Kill::DuringStart | Kill::LongOutage => {
                std::thread::sleep(rng.millis(300, 3000));
                *shared.pid.lock().unwrap() = None;
                killed_at = Instant::now();
                levee.kill();
            }
            Kill::At(point, trigger) => {
                // Down, then up again with the point armed.
                *shared.pid.lock().unwrap() = None;
                levee.kill();
                *shared.web.lock().unwrap() = None;
                levee = Run::spawn(&config, Some(point));
                let up = levee.wait_up(Duration::from_secs(20));
                if let Some((w, s)) = up {
                    *shared.web.lock().unwrap() = Some(w);
                    *shared.sflow.lock().unwrap() = Some(s);
                    *shared.pid.lock().unwrap() = Some(levee.pid);
                    pull(&rt, &bed, w, &wtoken, &shared, trigger, &mut levee);
                }
                if !levee.wait_exit(Duration::from_secs(20)) {
                    fail(format!(
                        "the crash point never fired; log:\n{}",
                        levee.tail(30)
                    ));
                    levee.kill();
                }
                *shared.pid.lock().unwrap() = None;
                killed_at = Instant::now();
                let log = levee.log();
                if !log.iter().any(|l| l.contains("SIGKILL at crash point")) {
                    fail(format!(
                        "levee ended, but not at its crash point:\n{}",
                        levee.tail(30)
                    ));
                } else {
                    eprintln!(
                        "cycle {cycle}: {}",
                        log.iter()
                            .find(|l| l.contains("SIGKILL at crash point"))
                            .unwrap()
                    );
                }
                previous_log = levee.tail(30);
            }
        }
        *shared.web.lock().unwrap() = None;
        *shared.sflow.lock().unwrap() = None;

        // What levee means to have (read-only, levee down): all of it
        // must come back, bar what expires meanwhile.
        let stored = match stored_intents(&config_s) {
            Ok(s) => s,
            Err(e) => {
                fail(format!("`levee mitigation list` with levee down: {e}"));
                BTreeMap::new()
            }
        };
        let acked_manual = shared.manual.lock().unwrap().clone();
        for (id, expires) in &acked_manual {
            if *expires > now_ms() + 1000 && !stored.contains_key(id) {
                fail(format!(
                    "acknowledged mitigation {id} has no intent after the kill"
                ));
            }
        }
        let speaker_had = speaker_routes(&rt, &bed).map_or(0, |r| r.len());
        let down_head = cli(&["status", "--json", "--config", &config_s]).1;
        let down_head: Option<u64> = serde_json::from_str::<Value>(&down_head)
            .ok()
            .and_then(|v| v["store"]["audit_head_seq"].as_u64());

        match kind {
            Kill::DuringStart => {
                let mut early = Run::spawn(&config, None);
                std::thread::sleep(rng.millis(0, 700));
                early.kill();
                killed_at = Instant::now();
            }
            Kill::LongOutage => {
                // The dead-man withdraws levee's routes once it has been
                // down for dead_man; then levee starts.
                let t = Instant::now();
                while t.elapsed() < DEAD_MAN + Duration::from_secs(8) {
                    if t.elapsed() > DEAD_MAN
                        && speaker_routes(&rt, &bed).is_some_and(|r| r.is_empty())
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                if speaker_had > 0 {
                    deadman_acts += 1;
                    if !speaker_routes(&rt, &bed).is_some_and(|r| r.is_empty()) {
                        fail("the dead-man did not withdraw levee's routes".to_owned());
                    }
                }
                killed_at = Instant::now();
            }
            _ => {}
        }

        // ---- the restart ----
        // After a random kill, a CLI change races the restart: it finds
        // levee down and takes the store's lock for its write just as
        // levee starts (the race of issue 22), and a read runs beside both.
        let racer = matches!(kind, Kill::Random).then(|| {
            let c = config_s.clone();
            let name = format!("race-{cycle}");
            std::thread::spawn(move || {
                let read = std::thread::spawn({
                    let c = c.clone();
                    move || cli(&["mitigation", "list", "--config", &c])
                });
                (
                    cli(&["apikey", "add", "--config", &c, &name]),
                    read.join().unwrap(),
                )
            })
        });
        if racer.is_some() {
            std::thread::sleep(rng.millis(0, 40));
        }
        levee = Run::spawn(&config, None);
        let spawned = levee.spawned;
        let Some((web, sflow)) = levee.wait_up(UP_WITHIN + Duration::from_secs(25)) else {
            fail(format!(
                "levee did not come back; its log:\n{}\n(the run before:\n{previous_log})",
                levee.tail(40)
            ));
            break;
        };
        let back = killed_at.elapsed();
        let start = spawned.elapsed();
        // (measured at the moment it is seen up; the 5 ms poll is the error)
        if back > UP_WITHIN {
            fail(format!("up {back:?} after the kill (spawn → up {start:?})"));
        }
        *shared.web.lock().unwrap() = Some(web);
        *shared.sflow.lock().unwrap() = Some(sflow);
        *shared.pid.lock().unwrap() = Some(levee.pid);
        if let Some(r) = racer {
            let ((ok, _, err), (read_ok, _, read_err)) = r.join().unwrap();
            match err
                .split("made API key ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            {
                Some(id) if ok => {
                    shared.keys.lock().unwrap().insert(id.to_owned(), false);
                }
                _ => fail(format!("`levee apikey add` racing the start failed: {err}")),
            }
            if !read_ok {
                fail(format!(
                    "`levee mitigation list` racing the start failed: {read_err}"
                ));
            }
        }
        if let Some(l) = levee.log().iter().find(|l| l.contains("waiting for it")) {
            waited += 1;
            eprintln!("cycle {cycle}: {l}");
        }

        // ---- the checks; nothing changes while they look ----
        let pause = shared.writes.write().unwrap();
        let up = Instant::now();
        match in_force(web, &token) {
            None => fail("GET /api/v1/mitigations failed right after start".to_owned()),
            Some(now) => {
                let t = now_ms();
                for (id, (expires, host, by)) in &stored {
                    if *expires <= t + 1000 || now.contains_key(id) {
                        continue;
                    }
                    // The escalator may already have replaced an automatic
                    // rule for the host by a better one: still the host's.
                    let replaced = by == "system:escalator"
                        && now.values().any(|(_, h, b)| h == host && b == by);
                    if !replaced {
                        fail(format!(
                            "intent {id} ({by}, {host}, expires in {} s) not restored",
                            (expires - t) / 1000
                        ));
                    }
                }
            }
        }
        let mut why;
        let mut routes = 0;
        let converge = loop {
            match converged(&rt, &bed, web, &token) {
                Ok(n) => {
                    routes = n;
                    break up.elapsed();
                }
                Err(e) => why = e,
            }
            if up.elapsed() > RECONCILE + Duration::from_secs(3) {
                fail(format!(
                    "router ≠ intents {:?} after start: {why}",
                    up.elapsed()
                ));
                break up.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Acknowledged API keys (and revocations) are all there.
        let (ok, listed, err) = cli(&["apikey", "list", "--config", &config_s]);
        if !ok {
            fail(format!("`levee apikey list`: {err}"));
        }
        let listed: BTreeMap<&str, bool> = listed
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                Some((*f.first()?, f.get(3)?.starts_with("revoked")))
            })
            .collect();
        for (id, revoked) in shared.keys.lock().unwrap().iter() {
            match listed.get(id.as_str()) {
                None => fail(format!("acknowledged API key {id} is lost")),
                Some(false) if *revoked => fail(format!("acknowledged revocation of {id} is lost")),
                _ => {}
            }
        }
        // Every incident listed before is still there.
        let seen = shared.incidents.lock().unwrap().clone();
        for id in &seen {
            match try_http(
                web,
                "GET",
                &format!("/api/v1/incidents/{id}"),
                Some(&token),
                None,
            ) {
                Some((200, _)) => {}
                other => fail(format!(
                    "incident {id}, listed before the kill, is lost: {:?}",
                    other.map(|o| o.0)
                )),
            }
        }
        // The audit chain: exported, verified twice, every head
        // acknowledged before the export in it.
        let acked = shared.heads.lock().unwrap().clone();
        let file = bed.dir.path().join(format!("audit-{cycle}.jsonl"));
        let (ok, _, err) = cli(&[
            "audit",
            "export",
            "--config",
            &config_s,
            "--output",
            file.to_str().unwrap(),
        ]);
        if !ok {
            fail(format!("`levee audit export`: {err}"));
        } else {
            let (ok, out, err) = cli(&["audit", "verify", file.to_str().unwrap()]);
            if !ok {
                fail(format!("`levee audit verify`: {out}{err}"));
            }
            let py = Command::new("python3")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/audit-verify.py"
                ))
                .arg(&file)
                .output()
                .unwrap();
            if !py.status.success() {
                fail(format!(
                    "scripts/audit-verify.py: {}{}",
                    String::from_utf8_lossy(&py.stdout),
                    String::from_utf8_lossy(&py.stderr)
                ));
            }
            let chain: BTreeMap<u64, String> = std::fs::read_to_string(&file)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    (
                        v["seq"].as_u64().unwrap(),
                        v["hash"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            for (seq, hash) in &acked {
                match chain.get(seq) {
                    Some(h) if h == hash => {}
                    Some(_) => fail(format!(
                        "audit entry {seq} differs from the one acknowledged"
                    )),
                    None => {
                        let again = cli(&["audit", "export", "--config", &config_s]).1;
                        let metrics = try_http(web, "GET", "/metrics", Some(&token), None)
                            .and_then(|(_, b)| audit_head(&b));
                        fail(format!(
                            "acknowledged audit entry {seq} is lost: the export holds {} entries up to seq {:?}; \
                             exported again: {} entries; levee's head now {metrics:?}; stored (levee down) {:?}",
                            chain.len(),
                            chain.keys().last(),
                            again.lines().count(),
                            down_head,
                        ))
                    }
                }
            }
            let _ = std::fs::remove_file(&file);
        }
        drop(pause);

        eprintln!(
            "cycle {cycle:3} {label:44} back in {:5} ms (start {:5} ms), router ≡ intents after {:5} ms, {routes} route(s)",
            back.as_millis(),
            start.as_millis(),
            converge.as_millis()
        );
        if shared.failures.lock().unwrap().len() > failures_before {
            eprintln!("levee's log (this run):\n{}", levee.tail(40));
        }
        stats.push(Stats {
            kind: label,
            back,
            start,
            converge,
            routes,
        });
    }

    // ---- the attack ends; nothing may stay behind ----
    shared.attack_over.store(true, Ordering::Relaxed);
    let pause = shared.writes.write().unwrap();
    shared.stop.store(true, Ordering::Relaxed);
    drop(pause);
    for t in threads {
        let _ = t.join();
    }
    if let Some(web) = *shared.web.lock().unwrap() {
        // Manual mitigations last until withdrawn: withdraw them.
        for (id, (_, _, by)) in in_force(web, &token).unwrap_or_default() {
            if by != "system:escalator" {
                let _ = try_http(
                    web,
                    "DELETE",
                    &format!("/api/v1/mitigations/{id}"),
                    Some(&wtoken),
                    None,
                );
            }
        }
        let t = Instant::now();
        loop {
            let intents = in_force(web, &token).map(|m| m.len());
            let routes = speaker_routes(&rt, &bed).map(|r| r.len());
            let router = rib(&bed.router);
            if intents == Some(0) && routes == Some(0) && router.is_empty() {
                eprintln!(
                    "attack over: no intent, no route at gobgpd or the router after {:?}",
                    t.elapsed()
                );
                break;
            }
            if t.elapsed() > Duration::from_secs(40) {
                shared.fail(format!(
                    "after the attack, left behind: intents {intents:?}, gobgpd routes {routes:?}, router {router:?}"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let _ = deadman.kill();
    let _ = deadman.wait();
    // Every withdrawal of the dead-man is audited (spooled when it could
    // not take the lock, taken in by whoever opened the store next).
    let (ok, out, err) = cli(&["audit", "export", "--config", &config_s]);
    let audited = out.matches("\"mitigation.deadman\"").count();
    if !ok || audited < deadman_acts {
        shared.fail(format!(
            "{deadman_acts} dead-man withdrawal(s), {audited} audited: {err}"
        ));
    }
    let (ok, out, err) = cli(&["store", "check", "--config", &config_s]);
    if !ok {
        shared.fail(format!("`levee store check` after the torture: {out}{err}"));
    }
    // SIGTERM: a clean stop still works after all that.
    // SAFETY: kill(2) of our own, not yet reaped, child.
    unsafe { libc::kill(levee.pid, libc::SIGTERM) };
    if !levee.wait_exit(Duration::from_secs(30)) || levee.exited().and_then(|s| s.code()) != Some(0)
    {
        shared.fail(format!("levee did not stop cleanly: {:?}", levee.exited()));
    }

    let c = &shared.counts;
    let worst_back = stats.iter().max_by_key(|s| s.back);
    let worst_start = stats.iter().map(|s| s.start).max().unwrap_or_default();
    let worst_converge = stats.iter().map(|s| s.converge).max().unwrap_or_default();
    let failures = shared.failures.lock().unwrap().clone();
    eprintln!(
        "\ncrash torture: {} of {cycles} cycles, {} failure(s); worst kill → up {} ms ({}), worst spawn → up {} ms, worst up → router ≡ intents {} ms; \
         routes per cycle up to {}; {waited} start(s) waited for a lock held by a command; dead-man withdrawals {deadman_acts}; \
         {} CLI reads, {} CLI changes ({} cut off by a kill, reported as such), {} API reads, {} API changes, {} API calls while down, {} reloads, {} audit heads and {} incidents acknowledged",
        stats.len(),
        failures.len(),
        worst_back.map_or(0, |s| s.back.as_millis()),
        worst_back.map_or("-", |s| s.kind.as_str()),
        worst_start.as_millis(),
        worst_converge.as_millis(),
        stats.iter().map(|s| s.routes).max().unwrap_or(0),
        c.cli_reads.load(Ordering::Relaxed),
        c.cli_writes.load(Ordering::Relaxed),
        c.cli_cut.load(Ordering::Relaxed),
        c.api_reads.load(Ordering::Relaxed),
        c.api_writes.load(Ordering::Relaxed),
        c.api_down.load(Ordering::Relaxed),
        c.reloads.load(Ordering::Relaxed),
        shared.heads.lock().unwrap().len(),
        shared.incidents.lock().unwrap().len(),
    );
    assert!(
        failures.is_empty() && stats.len() == cycles,
        "{} failure(s) in {} of {cycles} cycles:\n{}",
        failures.len(),
        stats.len(),
        failures.join("\n")
    );
}

/// Makes an armed crash point fire (see [`Trigger`]).
fn pull(
    rt: &tokio::runtime::Runtime,
    bed: &Bed,
    web: SocketAddr,
    token: &str,
    shared: &Shared,
    trigger: Trigger,
    levee: &mut Run,
) {
    let announce = |host: &str| {
        try_http(
            web,
            "POST",
            "/api/v1/mitigations",
            Some(token),
            Some(&format!(
                "{{\"host\": \"{host}\", \"level\": \"rtbh\", \"ttl\": \"10m\"}}"
            )),
        )
    };
    let bgp_up = || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if try_http(web, "GET", "/api/v1/mitigations?log=0", Some(token), None)
                .is_some_and(|(_, b)| b.contains("\"bgp_up\":true"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    match trigger {
        Trigger::None => {}
        Trigger::Announce => {
            bgp_up();
            announce("192.0.2.70");
        }
        Trigger::Withdraw => {
            bgp_up();
            let id = announce("192.0.2.71")
                .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
                .and_then(|v| v[0]["id"].as_str().map(str::to_owned))
                .or_else(|| {
                    in_force(web, token)?
                        .into_iter()
                        .find(|(_, (r, _, by))| {
                            by != "system:escalator" && r.to_string().contains("192.0.2.71/32")
                        })
                        .map(|(id, _)| id)
                });
            if let Some(id) = id {
                let _ = try_http(
                    web,
                    "DELETE",
                    &format!("/api/v1/mitigations/{id}"),
                    Some(token),
                    None,
                );
            }
        }
        Trigger::Orphan => {
            bgp_up();
            let _ = bed.speaker.cli(&[
                "global",
                "rib",
                "-a",
                "ipv4",
                "add",
                "192.0.2.99/32",
                "nexthop",
                "192.0.2.254",
                "community",
                "65535:666",
            ]);
        }
        Trigger::Missing => {
            bgp_up();
            announce("192.0.2.72");
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5)
                && !speaker_routes(rt, bed)
                    .is_some_and(|r| r.iter().any(|r| r.to_string().contains("192.0.2.72/32")))
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = bed
                .speaker
                .cli(&["global", "rib", "-a", "ipv4", "del", "192.0.2.72/32"]);
        }
        Trigger::Reload => {
            // SAFETY: kill(2) of our own, not yet reaped, child.
            unsafe { libc::kill(levee.pid, libc::SIGHUP) };
        }
        Trigger::Burst => {
            let pid = levee.pid;
            let keys = std::thread::scope(|s| {
                let h = s.spawn(|| {
                    (0..4)
                        .filter_map(|i| {
                            let body = format!("{{\"name\": \"burst-{i}\", \"scope\": \"read\"}}");
                            try_http(web, "POST", "/api/v1/apikeys", Some(token), Some(&body))
                        })
                        .count()
                });
                for _ in 0..20 {
                    if levee.exited().is_some() {
                        break;
                    }
                    // SAFETY: kill(2) of our own, not yet reaped, child.
                    unsafe { libc::kill(pid, libc::SIGHUP) };
                    std::thread::sleep(Duration::from_millis(10));
                }
                h.join().unwrap()
            });
            let _ = keys;
        }
        Trigger::ApiKey => {
            let body = "{\"name\": \"at-the-crash\", \"scope\": \"read\"}";
            if let Some((201, b)) =
                try_http(web, "POST", "/api/v1/apikeys", Some(token), Some(body))
            {
                // Acknowledged: it must survive.
                if let Some(id) = serde_json::from_str::<Value>(&b)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
                {
                    shared.keys.lock().unwrap().insert(id, false);
                }
            }
        }
    }
}
