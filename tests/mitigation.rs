//! Mitigation end to end: `levee run` drives its own gobgpd, which is peered
//! over BGP with a second gobgpd playing the border router. Attack traffic
//! is sampled sFlow sent to levee's collector; what counts is what the
//! router's RIB holds, read with the `gobgp` CLI.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bgp::{bed, Bed};
use common::*;
use levee_tools::attacks::{self, Attack, Family, Sources};
use levee_tools::export;
use serde_json::Value;

fn config(bed: &Bed, extra: &str) -> std::path::PathBuf {
    let config = bed.dir.path().join("levee.toml");
    let text = format!(
        "[collector]\nallowed_exporters = [\"127.0.0.0/8\"]\n\
         [[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n\
         [hostgroup.thresholds]\npps = 2000\n\
         [hostgroup.mitigation]\nladder = [\"flowspec\", \"rtbh\"]\n\
         flowspec_max_bps = 50000000\nrtbh_min_bps = 50000000\n{extra}\n\
         [detection]\nhold_down = \"2s\"\n\
         [bgp]\ngobgp_grpc = \"{}\"\nnext_hop = \"192.0.2.254\"\nnext_hop6 = \"100::1\"\n",
        bed.speaker.grpc()
    );
    std::fs::write(&config, test_config(&bed.dir.path().join("data"), &text)).unwrap();
    config
}

/// One second of an attack as sFlow datagrams (sampled 1 in `rate`).
fn second_of(family: Family, target: &str, pps: u64, rate: u32) -> Vec<Vec<u8>> {
    let s = attacks::attack(
        &Attack {
            family,
            target: target.parse().unwrap(),
            pps,
            start_us: 0,
            duration_s: 1,
            sources: Sources::Spoofed,
        },
        1,
    );
    export::sflow(&s, IpAddr::V4(Ipv4Addr::LOCALHOST), rate, 1, 100_000)
        .into_iter()
        .map(|e| e.payload)
        .collect()
}

/// Sends, every second, the datagrams of the phase `phase` selects (none
/// at `usize::MAX`), until dropped.
struct Traffic {
    phase: Arc<AtomicUsize>,
    _thread: std::thread::JoinHandle<()>,
}

const QUIET: usize = usize::MAX;

impl Traffic {
    fn start(to: SocketAddr, phases: Vec<Vec<Vec<u8>>>) -> Traffic {
        let phase = Arc::new(AtomicUsize::new(QUIET));
        let p = phase.clone();
        let thread = std::thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            loop {
                let t = Instant::now();
                let n = p.load(Ordering::Relaxed);
                if n == usize::MAX - 1 {
                    return;
                }
                if let Some(datagrams) = phases.get(n) {
                    // Spread over the second, as a router would send them.
                    let step = Duration::from_secs(1) / datagrams.len().max(1) as u32;
                    for d in datagrams {
                        let _ = tx.send_to(d, to);
                        std::thread::sleep(step.saturating_sub(Duration::from_micros(20)));
                    }
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
        });
        Traffic {
            phase,
            _thread: thread,
        }
    }

    fn set(&self, phase: usize) {
        self.phase.store(phase, Ordering::Relaxed);
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.phase.store(usize::MAX - 1, Ordering::Relaxed);
    }
}

fn squash(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

use levee_collectors::clock::now_ms;

/// Waits until the router's RIB of `family` satisfies `f`; returns the
/// wall-clock ms at which it first did.
fn router_until(bed: &Bed, family: &str, within: Duration, f: impl Fn(&str) -> bool) -> u64 {
    let start = Instant::now();
    loop {
        let rib = squash(&bed.router.rib(family).unwrap());
        if f(&rib) {
            return now_ms();
        }
        assert!(
            start.elapsed() < within,
            "router's {family} RIB never matched; it is:\n{rib}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn mitigations(levee: &Levee, token: &str) -> Value {
    let r = http(
        levee.web,
        "GET",
        "/api/v1/mitigations?log=1000",
        Some(token),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// Waits until levee is connected to its gobgpd.
fn wait_for_gobgpd(levee: &Levee) {
    levee.wait_for("levee to reach gobgpd", |l| {
        l.metric("levee_bgp_up").as_deref() == Some("1")
    });
}

/// A manual mitigation over the API (`body` is its JSON); it must be made.
fn announce(levee: &Levee, token: &str, body: &str) {
    let r = http(
        levee.web,
        "POST",
        "/api/v1/mitigations",
        Some(token),
        Some(body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Withdraws mitigation `id` over the API; it must be withdrawn.
fn withdraw(levee: &Levee, token: &str, id: &str) {
    let r = http(
        levee.web,
        "DELETE",
        &format!("/api/v1/mitigations/{id}"),
        Some(token),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The mitigation in force at `level` (there must be one).
fn in_force(levee: &Levee, token: &str, level: &str) -> Value {
    let m = mitigations(levee, token);
    m["active"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["level"] == level)
        .unwrap_or_else(|| panic!("no {level} mitigation in {m}"))
        .clone()
}

#[test]
fn an_attack_is_mitigated_escalated_and_withdrawn_at_the_router() {
    let bed = bed();
    let config = config(
        &bed,
        "[mitigation]\nhold_down = \"3s\"\ndwell = \"4s\"\nreconcile_every = \"2s\"\n",
    );
    let levee = Levee::start(&config);
    let token = api_key(&config, "ops", "write");
    wait_for_gobgpd(&levee);
    let traffic = Traffic::start(
        levee.collector("sflow"),
        vec![
            // 10 kpps of SYN: about 5 Mbit/s, FlowSpec's to handle.
            second_of(Family::SynFlood, "192.0.2.10", 10_000, 10),
            // 200 kpps: about 100 Mbit/s, past flowspec_max_bps.
            second_of(Family::SynFlood, "192.0.2.10", 200_000, 100),
        ],
    );

    traffic.set(0);
    let seen = router_until(&bed, "ipv4-flowspec", Duration::from_secs(20), |rib| {
        rib.lines().any(|l| {
            l.contains("[destination: 192.0.2.10/32][protocol: ==tcp]")
                && l.contains("[tcp-flags: =S&!A]")
                && l.contains("[discard]")
        })
    });
    let fs = in_force(&levee, &token, "flowspec");
    let decided = fs["created_ms"].as_u64().unwrap();
    eprintln!(
        "FlowSpec: decided → at the router in {} ms (poll granularity ~10 ms)",
        seen.saturating_sub(decided)
    );
    // The router holds exactly the rule levee says it announced.
    let rule = fs["text"].as_str().unwrap().to_owned();
    eprintln!("rule: {rule}");
    assert!(rule.starts_with("flowspec match destination 192.0.2.10/32 protocol =6"));
    assert!(rule.contains("tcp-flags =S&!A"), "{rule}");
    assert!(
        bed.router.rib("ipv4").unwrap().lines().count() <= 1,
        "no RTBH yet"
    );

    traffic.set(1);
    let seen = router_until(&bed, "ipv4", Duration::from_secs(20), |rib| {
        rib.contains("192.0.2.10/32 192.0.2.254 65001")
            && rib.contains("{Communities: blackhole, no-export}")
    });
    let rtbh = in_force(&levee, &token, "rtbh");
    eprintln!(
        "RTBH: decided → at the router in {} ms",
        seen.saturating_sub(rtbh["created_ms"].as_u64().unwrap())
    );
    assert!(
        rtbh["reason"]
            .as_str()
            .unwrap()
            .contains("escalated from flowspec"),
        "{rtbh}"
    );

    // The attack ends: RTBH goes after the hold-down, FlowSpec a dwell later.
    traffic.set(QUIET);
    let quiet = Instant::now();
    router_until(&bed, "ipv4", Duration::from_secs(30), |rib| {
        !rib.contains("192.0.2.10/32")
    });
    let rtbh_gone = quiet.elapsed();
    router_until(&bed, "ipv4-flowspec", Duration::from_secs(30), |rib| {
        !rib.contains("192.0.2.10/32")
    });
    eprintln!(
        "withdrawn after the attack: RTBH {rtbh_gone:?}, FlowSpec {:?}",
        quiet.elapsed()
    );
    assert!(
        rtbh_gone >= Duration::from_secs(2),
        "not before the hold-down"
    );

    // Everything is in the mitigation log, with payloads, and audited.
    let m = mitigations(&levee, &token);
    assert_eq!(m["active"].as_array().unwrap().len(), 0, "{m}");
    let log = m["log"].as_array().unwrap();
    let of = |action: &str, level: &str| {
        log.iter()
            .filter(|e| e["action"] == action && e["level"] == level)
            .count()
    };
    assert_eq!(of("announce", "flowspec"), 1, "{log:#?}");
    assert_eq!(of("announce", "rtbh"), 1);
    assert_eq!(of("withdraw", "flowspec"), 1);
    assert_eq!(of("withdraw", "rtbh"), 1);
    for e in log.iter().filter(|e| e["action"] == "announce") {
        assert!(e["payload"].as_str().is_some_and(|p| p.len() > 20), "{e}");
        assert_eq!(e["adapter"], "gobgp");
        assert_eq!(e["decided_by"], "system:escalator");
    }
    let (audit, _) = export(&config, "jsonl");
    assert_eq!(audit.matches("\"mitigation.announce\"").count(), 2);
    assert_eq!(audit.matches("\"mitigation.withdraw\"").count(), 2);
    assert_eq!(
        levee
            .metric("levee_mitigation_updates_total{action=\"announce\"}")
            .as_deref(),
        Some("2")
    );
}

#[test]
fn reconciliation_repairs_both_ways_after_a_kill_and_a_speaker_restart() {
    let mut bed = bed();
    // Repairs must come from start-up and from noticing gobgpd's restart,
    // not from the periodic pass.
    let config = config(&bed, "[mitigation]\nreconcile_every = \"10m\"\n");
    let mut levee = Levee::start(&config);
    let token = api_key(&config, "ops", "write");
    wait_for_gobgpd(&levee);
    // Manual blackholes: IPv4 with the CLI, IPv6 over the API.
    let out = cli(&[
        "mitigation",
        "announce",
        "--config",
        config.to_str().unwrap(),
        "192.0.2.10",
        "--level",
        "rtbh",
        "--ttl",
        "10m",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("mit-"));
    announce(
        &levee,
        &token,
        "{\"host\": \"2001:db8::12\", \"level\": \"rtbh\", \"ttl\": \"10m\"}",
    );
    // Guards hold for people too: a host levee does not protect is not a
    // request it can carry out (422); the same route twice conflicts with
    // what is in force (409).
    let r = http(
        levee.web,
        "POST",
        "/api/v1/mitigations",
        Some(&token),
        Some("{\"host\": \"198.51.100.1\", \"level\": \"rtbh\"}"),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("in no hostgroup"), "{}", r.body);
    let r = http(
        levee.web,
        "POST",
        "/api/v1/mitigations",
        Some(&token),
        Some("{\"host\": \"2001:db8::12\", \"level\": \"rtbh\"}"),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("already in force"), "{}", r.body);
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        rib.contains("192.0.2.10/32 192.0.2.254")
    });
    router_until(&bed, "ipv6", Duration::from_secs(10), |rib| {
        rib.contains("2001:db8::12/128 100::1")
    });

    // kill -9; by hand: one of levee's routes removed, one it never meant
    // added (a blackhole for a protected host).
    levee.signal(libc::SIGKILL);
    levee.wait();
    bed.speaker
        .cli(&["global", "rib", "-a", "ipv4", "del", "192.0.2.10/32"])
        .unwrap();
    bed.speaker
        .cli(&[
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
        ])
        .unwrap();
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        !rib.contains("192.0.2.10/32") && rib.contains("192.0.2.99/32")
    });

    let levee = Levee::start(&config);
    router_until(&bed, "ipv4", Duration::from_secs(20), |rib| {
        rib.contains("192.0.2.10/32 192.0.2.254") && !rib.contains("192.0.2.99/32")
    });
    assert!(bed.router.rib("ipv6").unwrap().contains("2001:db8::12/128"));
    let m = mitigations(&levee, &token);
    assert_eq!(m["active"].as_array().unwrap().len(), 2, "restored: {m}");
    let log = m["log"].as_array().unwrap();
    assert!(log.iter().any(|e| e["action"] == "reconcile_announce"));
    assert!(log.iter().any(|e| e["action"] == "reconcile_withdraw"
        && e["route"].as_str().unwrap().contains("192.0.2.99/32")));

    // The speaker restarts and forgets everything; levee notices and
    // announces again.
    bed.speaker.restart().unwrap();
    let t = Instant::now();
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        !rib.contains("192.0.2.10/32")
    });
    router_until(&bed, "ipv4", Duration::from_secs(40), |rib| {
        rib.contains("192.0.2.10/32 192.0.2.254")
    });
    router_until(&bed, "ipv6", Duration::from_secs(10), |rib| {
        rib.contains("2001:db8::12/128")
    });
    eprintln!(
        "routes back at the router {:?} after the speaker restarted",
        t.elapsed()
    );

    let out = cli(&["mitigation", "list", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.contains("blackhole 192.0.2.10/32 next-hop 192.0.2.254"),
        "{listed}"
    );

    // Manual withdrawal.
    let m = mitigations(&levee, &token);
    for a in m["active"].as_array().unwrap() {
        withdraw(&levee, &token, a["id"].as_str().unwrap());
    }
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        !rib.contains("192.0.2.10/32")
    });
    router_until(&bed, "ipv6", Duration::from_secs(10), |rib| {
        !rib.contains("2001:db8::12/128")
    });
}

#[test]
fn guards_and_shadow_send_nothing_and_say_why() {
    let bed = bed();
    let config = config(
        &bed,
        "shadow = false\n[mitigation]\nnever = [\"192.0.2.53\"]\nmax_flowspec = 1\n\
         [[hostgroup]]\nname = \"watched\"\nprefixes = [\"198.51.100.0/24\"]\n\
         [hostgroup.thresholds]\npps = 2000\n[hostgroup.mitigation]\nshadow = true\n",
    );
    let levee = Levee::start(&config);
    let token = api_key(&config, "ops", "write");
    wait_for_gobgpd(&levee);
    let traffic = Traffic::start(
        levee.collector("sflow"),
        vec![[
            second_of(Family::SynFlood, "192.0.2.53", 10_000, 10),
            second_of(Family::SynFlood, "198.51.100.7", 10_000, 10),
            second_of(Family::SynFlood, "192.0.2.20", 10_000, 10),
            second_of(Family::SynFlood, "192.0.2.21", 10_000, 10),
        ]
        .concat()],
    );
    traffic.set(0);
    levee.wait_for("both attacks to be judged", |l| {
        let m = mitigations(l, &token);
        let log = m["log"].as_array().unwrap().clone();
        log.iter().any(|e| {
            e["action"] == "refuse"
                && e["host"] == "192.0.2.53"
                && e["reason"].as_str().unwrap().contains("never-mitigate")
        }) && log
            .iter()
            .any(|e| e["action"] == "shadow_announce" && e["host"] == "198.51.100.7")
    });
    // A budget of one FlowSpec rule: the two hosts under the same attack
    // share one rule for the prefix covering both.
    router_until(&bed, "ipv4-flowspec", Duration::from_secs(20), |rib| {
        rib.contains("[destination: 192.0.2.20/31]")
            && !rib.contains("192.0.2.20/32")
            && !rib.contains("192.0.2.21/32")
    });
    drop(traffic);
    let m = mitigations(&levee, &token);
    let shadow = m["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "shadow_announce")
        .unwrap()
        .clone();
    assert!(
        shadow["route"]
            .as_str()
            .unwrap()
            .starts_with("flowspec match destination 198.51.100.7/32"),
        "the log says what would have been sent: {shadow}"
    );
    assert_eq!(shadow["payload"], Value::Null, "nothing was sent");
    for family in ["ipv4-flowspec", "ipv4"] {
        let rib = bed.router.rib(family).unwrap();
        assert!(
            !rib.contains("192.0.2.53") && !rib.contains("198.51.100.7"),
            "{family}: {rib}"
        );
    }
}

#[test]
fn the_dead_man_withdraws_levees_routes_when_levee_stays_down() {
    let bed = bed();
    let config = config(
        &bed,
        "[mitigation]\ndead_man = \"2s\"\nreconcile_every = \"1s\"\n",
    );
    let mut levee = Levee::start(&config);
    let token = api_key(&config, "ops", "write");
    wait_for_gobgpd(&levee);
    announce(
        &levee,
        &token,
        "{\"host\": \"192.0.2.10\", \"level\": \"rtbh\", \"ttl\": \"10m\"}",
    );
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        rib.contains("192.0.2.10/32 192.0.2.254")
    });

    let mut deadman = std::process::Command::new(levee_bin())
        .args(["deadman", "--config"])
        .arg(&config)
        .spawn()
        .unwrap();
    // While levee answers, the dead-man does nothing.
    std::thread::sleep(Duration::from_secs(4));
    assert!(bed.router.rib("ipv4").unwrap().contains("192.0.2.10/32"));

    let killed = Instant::now();
    levee.signal(libc::SIGKILL);
    levee.wait();
    router_until(&bed, "ipv4", Duration::from_secs(20), |rib| {
        !rib.contains("192.0.2.10/32")
    });
    let after = killed.elapsed();
    eprintln!("dead-man withdrew {after:?} after levee died (dead_man = 2s)");
    assert!(after >= Duration::from_secs(2), "not before dead_man");
    // It audits the act (opening the store for that moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (audit, _) = export(&config, "jsonl");
        if audit.contains("\"mitigation.deadman\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dead-man audit entry: {audit}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = deadman.kill();
    let _ = deadman.wait();

    // levee comes back: the intent has not expired, so it is announced again.
    let _levee = Levee::start(&config);
    router_until(&bed, "ipv4", Duration::from_secs(20), |rib| {
        rib.contains("192.0.2.10/32 192.0.2.254")
    });
}

/// A stand-in for a scrubbing provider's API on loopback: records each
/// request (head and body) and answers 200, or 503 while `failing`.
struct Provider {
    addr: SocketAddr,
    requests: Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Provider {
    fn start() -> Provider {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, f) = (requests.clone(), failing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let fail = f.load(Ordering::Relaxed);
                if !fail {
                    r.lock()
                        .unwrap()
                        .push((head, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                }
                let answer = if fail {
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\naccepted"
                };
                let _ = reader.get_mut().write_all(answer.as_bytes());
            }
        });
        Provider {
            addr,
            requests,
            failing,
        }
    }

    fn actions(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b["action"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

#[test]
fn scrubbing_by_http_diverts_and_undiverts_at_the_provider() {
    let provider = Provider::start();
    provider.failing.store(true, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    let extra = format!(
        "[collector]\nallowed_exporters = [\"127.0.0.0/8\"]\n\
         [[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\"]\n\
         [hostgroup.thresholds]\npps = 2000\n[hostgroup.mitigation]\nladder = [\"scrubbing\"]\n\
         [detection]\nhold_down = \"2s\"\n\
         [mitigation]\nhold_down = \"2s\"\nreconcile_every = \"1s\"\n\
         [scrubbing]\nhttp_url = \"http://{}/v1/divert\"\nhttp_token = \"s3cret\"\n",
        provider.addr
    );
    std::fs::write(&config, test_config(&dir.path().join("data"), &extra)).unwrap();
    let levee = Levee::start(&config);
    let token = api_key(&config, "ops", "write");
    let traffic = Traffic::start(
        levee.collector("sflow"),
        vec![second_of(Family::SynFlood, "192.0.2.10", 10_000, 10)],
    );
    traffic.set(0);
    // The provider is down at first: the call fails, is logged, and retried.
    levee.wait_for("a failed provider call", |l| {
        let m = mitigations(l, &token);
        m["log"].as_array().unwrap().iter().any(|e| {
            e["adapter"] == "http" && e["error"].as_str().is_some_and(|x| x.contains("503"))
        })
    });
    provider.failing.store(false, Ordering::Relaxed);
    levee.wait_for("the diversion", |_| {
        provider.actions().contains(&"divert".to_owned())
    });
    let (head, body) = provider.requests.lock().unwrap()[0].clone();
    assert!(head.starts_with("POST /v1/divert HTTP/1.1"), "{head}");
    assert!(
        head.contains("authorization: Bearer s3cret")
            || head.contains("Authorization: Bearer s3cret"),
        "{head}"
    );
    assert_eq!(body["prefix"], "192.0.2.0/24");
    assert_eq!(body["host"], "192.0.2.10");
    assert!(body["incident"].as_str().is_some_and(|i| !i.is_empty()));
    let m = in_force(&levee, &token, "scrubbing");
    assert_eq!(m["http"], format!("http://{}/v1/divert", provider.addr));

    traffic.set(QUIET);
    levee.wait_for("the end of the diversion", |_| {
        provider.actions() == ["divert", "undivert"]
    });
    // The provider saw the call before levee read its answer: the log
    // entry comes once levee has it.
    levee.wait_for("the provider's answer in the mitigation log", |l| {
        let m = mitigations(l, &token);
        m["log"].as_array().unwrap().iter().any(|e| {
            e["action"] == "withdraw"
                && e["adapter"] == "http"
                && e["response"].as_str().is_some_and(|r| r.starts_with("200"))
        })
    });
}

#[test]
fn an_upstream_gets_its_own_blackhole_community() {
    let bed = bed();
    let extra = format!(
        "[mitigation]\nreconcile_every = \"2s\"\n\
         [[bgp.upstream]]\nname = \"router\"\nneighbor = \"{}\"\nblackhole_community = \"65000:666\"\n",
        bed.router.addr
    );
    // ([[bgp.upstream]] must come after [bgp]'s keys: append it last.)
    let config = config(&bed, "");
    let text = std::fs::read_to_string(&config).unwrap() + &extra;
    std::fs::write(&config, text).unwrap();
    let levee = Levee::start(&config);
    let token = api_key(&config, "ops", "write");
    wait_for_gobgpd(&levee);
    announce(
        &levee,
        &token,
        "{\"host\": \"192.0.2.10\", \"level\": \"rtbh\"}",
    );
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        rib.contains("192.0.2.10/32 192.0.2.254")
            && rib.contains("{Communities: 65000:666, no-export}")
    });
    // levee's own record still says what it decided.
    let m = in_force(&levee, &token, "rtbh");
    assert!(m["text"].as_str().unwrap().contains("65535:666"), "{m}");
}

#[test]
fn an_ipv6_attack_gets_its_flowspec_rule_at_the_router() {
    let bed = bed();
    let config = config(&bed, "");
    let levee = Levee::start(&config);
    wait_for_gobgpd(&levee);
    let traffic = Traffic::start(
        levee.collector("sflow"),
        vec![second_of(Family::SynFlood, "2001:db8::10", 10_000, 10)],
    );
    traffic.set(0);
    router_until(&bed, "ipv6-flowspec", Duration::from_secs(20), |rib| {
        rib.lines().any(|l| {
            l.contains("[destination: 2001:db8::10/128/0][protocol: ==tcp]")
                && l.contains("[tcp-flags: =S&!A]")
                && l.contains("[discard]")
        })
    });
}

/// One second of light established web traffic to `target`, as sFlow.
fn background_second(target: &str) -> Vec<Vec<u8>> {
    let s = attacks::background(target.parse().unwrap(), 1, 3);
    export::sflow(&s, IpAddr::V4(Ipv4Addr::LOCALHOST), 10, 2, 100_000)
        .into_iter()
        .map(|e| e.payload)
        .collect()
}

#[test]
fn a_rule_after_which_the_hosts_sessions_vanish_is_rolled_back() {
    let bed = bed();
    let config = config(&bed, "");
    // A short history to judge by, but not too short: the second in which
    // the attack begins, when it stays under half the threshold, is taken
    // for normal traffic, and must not outweigh the host's sessions (up to
    // ~900 SYN pps against 100 pps of web traffic a second: 15 s of
    // history keep it under a third of the profile, below
    // max_collateral).
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[detection]\nhold_down = \"2s\"\n",
        "[detection]\nhold_down = \"2s\"\nlegit_learning = \"15s\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let levee = Levee::start(&config);
    let token = api_key(&config, "ops", "write");
    wait_for_gobgpd(&levee);
    let attack = second_of(Family::SynFlood, "192.0.2.10", 10_000, 10);
    let web = background_second("192.0.2.10");
    let traffic = Traffic::start(
        levee.collector("sflow"),
        vec![web.clone(), [attack.clone(), web].concat(), attack],
    );
    // Established sessions first, until levee has learnt the host's normal
    // (however long a loaded machine takes to get there).
    traffic.set(0);
    levee.wait_for("the host's legitimate traffic to be learnt", |l| {
        let r = http(
            l.web,
            "GET",
            "/api/v1/hosts/192.0.2.10?seconds=1&minutes=1",
            Some(&token),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let host: Value = serde_json::from_str(&r.body).unwrap();
        host["legit"]["learnt"] == true
    });
    traffic.set(1);
    router_until(&bed, "ipv4-flowspec", Duration::from_secs(20), |rib| {
        rib.contains("[destination: 192.0.2.10/32]")
    });
    // The sessions stop coming (as if the rule had cut them off).
    traffic.set(2);
    router_until(&bed, "ipv4-flowspec", Duration::from_secs(40), |rib| {
        !rib.contains("192.0.2.10/32")
    });
    let m = mitigations(&levee, &token);
    let rollback = m["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollback")
        .unwrap_or_else(|| panic!("no rollback in {m}"))
        .clone();
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap()
            .contains("established TCP to 192.0.2.10 fell"),
        "{rollback}"
    );
    drop(traffic);
}

/// A withdrawal whose intent the store fails to delete still withdraws
/// the route — and it stays withdrawn: reconciliation deletes the intent
/// again (with its audit entry) instead of announcing the route back.
#[test]
fn a_withdrawal_the_store_could_not_record_is_not_undone() {
    let bed = bed();
    let config = config(&bed, "[mitigation]\nreconcile_every = \"1s\"\n");
    // The second intent entry (the withdrawal's) cannot be written.
    let mut failing = std::process::Command::new(levee_bin());
    failing.env("LEVEE_TEST_FAIL_AT", "audit.append:mitigation.intent#2");
    let levee = Levee::start_command(failing, &config);
    let token = api_key(&config, "ops", "write");
    wait_for_gobgpd(&levee);
    announce(
        &levee,
        &token,
        "{\"host\": \"192.0.2.10\", \"level\": \"rtbh\", \"ttl\": \"10m\"}",
    );
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        rib.contains("192.0.2.10/32")
    });
    let id = in_force(&levee, &token, "rtbh")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    withdraw(&levee, &token, &id);
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        !rib.contains("192.0.2.10/32")
    });
    levee.wait_for("the failed deletion", |l| {
        l.log()
            .iter()
            .any(|x| x.contains("Cannot delete the intent"))
    });
    // Several reconciliations later the route is still gone, and the
    // intent with it.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let rib = squash(&bed.router.rib("ipv4").unwrap());
        assert!(!rib.contains("192.0.2.10/32"), "announced back: {rib}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        levee
            .log()
            .iter()
            .any(|x| x.contains("Deleted a withdrawn mitigation's intent")),
        "{:?}",
        levee.log()
    );
    let out = cli(&["mitigation", "list", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "no intent left");
    drop(levee);
    let (audit, _) = export(&config, "jsonl");
    let withdrawals = audit
        .lines()
        .filter(|l| l.contains("mitigation.intent") && l.contains("could not be deleted"))
        .count();
    assert_eq!(withdrawals, 1, "{audit}");
}

/// A mitigation in force when levee stops, and a configuration that no
/// longer allows it when levee starts again (its host now on the never
/// list): it is withdrawn at start-up — at the router, from what levee
/// shows in force, and from the intents — saying why.
#[test]
fn what_a_new_configuration_forbids_is_withdrawn_at_start() {
    let bed = bed();
    let config = config(&bed, "");
    let mut levee = Levee::start(&config);
    let token = api_key(&config, "ops", "write");
    wait_for_gobgpd(&levee);
    announce(
        &levee,
        &token,
        "{\"host\": \"192.0.2.10\", \"level\": \"rtbh\", \"ttl\": \"10m\"}",
    );
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        rib.contains("192.0.2.10/32")
    });
    levee.signal(libc::SIGKILL);
    levee.wait();
    // The host goes on the never list while levee is down.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[mitigation]\nnever = [\"192.0.2.10/32\"]\n"),
    )
    .unwrap();
    let levee = Levee::start(&config);
    router_until(&bed, "ipv4", Duration::from_secs(10), |rib| {
        !rib.contains("192.0.2.10/32")
    });
    let m = mitigations(&levee, &token);
    assert_eq!(m["active"], serde_json::json!([]), "{m}");
    let out = cli(&["mitigation", "list", "--config", config.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "no intent left");
    drop(levee);
    let (audit, _) = export(&config, "jsonl");
    assert!(
        audit.lines().any(|l| l.contains("mitigation.intent")
            && l.contains("the configuration no longer allows it")
            && l.contains("never-mitigate")),
        "{audit}"
    );
}
