//! Traffic an attacker shapes, end to end through `levee run` with a
//! gobgpd router peer: whatever the shape, the routes the router receives
//! must still fit the attack — or there must be none.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::bgp::*;
use common::*;
use levee_tools::attacks::{self, Attack, Family, Sources};
use levee_tools::export;

/// levee with a 5,000 pps limit and FlowSpec then RTBH (from 1 Mbit/s:
/// a blackhole would show at once), its collector sockets and `extra`
/// config.
fn start_levee(bed: &Bed, extra: &str) -> Levee {
    start_levee_with(bed, extra, "")
}

fn start_levee_with(bed: &Bed, extra: &str, detection: &str) -> Levee {
    start_levee_over(bed, extra, detection, 5000)
}

/// As [`start_levee_with`], with the hostgroup's static pps limit.
fn start_levee_over(bed: &Bed, extra: &str, detection: &str, pps: u64) -> Levee {
    let config = bed.dir.path().join("levee.toml");
    let text = format!(
        "{extra}\n[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n\
         [hostgroup.thresholds]\npps = {pps}\n\
         [hostgroup.mitigation]\nladder = [\"flowspec\", \"rtbh\"]\nrtbh_min_bps = 1000000\n\
         [detection]\nhold_down = \"2s\"\n{detection}\n\
         [bgp]\ngobgp_grpc = \"{}\"\nnext_hop = \"192.0.2.254\"\nnext_hop6 = \"100::1\"\n",
        bed.speaker.grpc()
    );
    std::fs::write(&config, test_config(&bed.dir.path().join("data"), &text)).unwrap();
    let levee = Levee::start(&config);
    levee.wait_for("levee to reach gobgpd", |l| {
        l.metric("levee_bgp_up").as_deref() == Some("1")
    });
    levee
}

fn send_from(from: &str, to: SocketAddr, datagrams: &[Vec<u8>], gap: Duration) {
    let tx = UdpSocket::bind(from).unwrap();
    for d in datagrams {
        tx.send_to(d, to).unwrap();
        std::thread::sleep(gap);
    }
}

/// Forged sFlow — from an address nobody listed, or claiming a sampling
/// rate no router uses — moves no route; the same attack from the trusted
/// exporter does.
#[test]
fn a_forged_exporter_moves_no_route() {
    let bed = bed();
    let watch = bed
        .router
        .watch(&["ipv4-flowspec", "ipv4", "ipv6-flowspec", "ipv6"])
        .unwrap();
    let victim: IpAddr = "192.0.2.66".parse().unwrap();

    // No allow-list: everyone's export is detected and alerted on, none of
    // it moves routes.
    let levee = start_levee(&bed, "");
    let (_, health) = levee.get("/healthz");
    assert!(health.contains("not trusted to move routes"), "{health}");
    let sflow = levee.collector("sflow");
    // 20 datagrams of one sample each at 1:100000: dropped, counted.
    let forged = export::forged_sflow(victim, "198.51.100.9".parse().unwrap(), 20, 100_000);
    send_from("127.0.0.9:0", sflow, &forged, Duration::from_millis(50));
    levee.wait_for("the implausible samples to be counted", |l| {
        l.metric("levee_records_refused_total{reason=\"sampling\"}")
            .as_deref()
            == Some("20")
    });
    // A plausible rate (1:4096): 20 samples a second are 80 kpps: an
    // incident, alerted — and no route.
    let forged = export::forged_sflow(victim, "198.51.100.9".parse().unwrap(), 60, 4096);
    send_from("127.0.0.9:0", sflow, &forged, Duration::from_millis(50));
    levee.wait_for("the forged flood to be detected", |l| {
        l.metric("levee_incidents_total").as_deref() == Some("1")
    });
    std::thread::sleep(Duration::from_secs(2));
    let token = api_key(&levee.config, "ops", "read");
    let body = http(
        levee.web,
        "GET",
        "/api/v1/mitigations?log=100",
        Some(&token),
        None,
    )
    .body;
    assert!(
        body.contains("not trusted to move routes"),
        "the refusal says why: {body}"
    );
    drop(levee);
    assert!(
        watch.changes().is_empty(),
        "a route reached the router: {:?}",
        watch.changes()
    );

    // An allow-list: datagrams from elsewhere are refused; the listed
    // exporter's attack is mitigated.
    let levee = start_levee(
        &bed,
        "[collector]\nallowed_exporters = [\"127.0.0.7/32\"]\n",
    );
    let sflow = levee.collector("sflow");
    let forged = export::forged_sflow(victim, "198.51.100.9".parse().unwrap(), 40, 4096);
    send_from("127.0.0.9:0", sflow, &forged, Duration::from_millis(25));
    levee.wait_for("the unlisted source to be refused", |l| {
        l.metric("levee_exporter_refused_total{reason=\"not_allowed\"}")
            .as_deref()
            == Some("40")
    });
    let attack = attacks::attack(
        &Attack {
            family: Family::Amplification(123),
            target: victim,
            pps: 20_000,
            start_us: 0,
            duration_s: 4,
            sources: Sources::Hosts(100),
        },
        5,
    );
    let exports = export::sflow(&attack, IpAddr::V4(Ipv4Addr::LOCALHOST), 100, 3, 1_000_000);
    let t = Instant::now();
    let payloads: Vec<Vec<u8>> = exports.into_iter().map(|e| e.payload).collect();
    send_from("127.0.0.7:0", sflow, &payloads, Duration::from_millis(4));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !watch
        .changes()
        .iter()
        .any(|c| c.is_flowspec() && !c.withdrawal)
    {
        assert!(
            Instant::now() < deadline,
            "the trusted exporter's attack was not mitigated"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "trusted exporter: a rule at the router {:?} after the attack began",
        t.elapsed()
    );
    let rules: Vec<_> = watch
        .changes()
        .into_iter()
        .filter(|c| !c.withdrawal)
        .collect();
    assert!(
        rules.iter().all(|c| c.is_flowspec()),
        "no blackhole: {rules:?}"
    );
    drop(levee);

    // trust_any_exporter: the operator's choice, said at start and on
    // /healthz — and then an unlisted source does move routes.
    let opted_in: IpAddr = "192.0.2.67".parse().unwrap();
    let levee = start_levee(&bed, "[mitigation]\ntrust_any_exporter = true\n");
    let (_, health) = levee.get("/healthz");
    assert!(
        health.contains("flow export from any source may move routes"),
        "{health}"
    );
    assert!(
        levee
            .log()
            .iter()
            .any(|l| l.contains("trust_any_exporter = true: flow export from any source")),
        "{:?}",
        levee.log()
    );
    let attack = attacks::attack(
        &Attack {
            family: Family::Amplification(123),
            target: opted_in,
            pps: 20_000,
            start_us: 0,
            duration_s: 4,
            sources: Sources::Hosts(100),
        },
        6,
    );
    let exports = export::sflow(&attack, IpAddr::V4(Ipv4Addr::LOCALHOST), 100, 3, 1_000_000);
    let payloads: Vec<Vec<u8>> = exports.into_iter().map(|e| e.payload).collect();
    send_from(
        "127.0.0.9:0",
        levee.collector("sflow"),
        &payloads,
        Duration::from_millis(4),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !watch
        .changes()
        .iter()
        .any(|c| c.is_flowspec() && !c.withdrawal && c.nlri.to_string().contains("192.0.2.67/32"))
    {
        assert!(
            Instant::now() < deadline,
            "with trust_any_exporter, the unlisted source's attack was not mitigated"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(levee);
}

/// Every shape on a host of its own at once, sFlow 1:100 at the capture's
/// pace: the rules the router holds at the end of the attack match at
/// least 90 % of it and no more of the legitimate traffic than the shape
/// allows; no rule the router ever held matched more; a shape no rule can
/// describe gets none.
#[test]
fn rules_fit_the_attack_whatever_its_shape() {
    use levee_tools::flowspec::{coverage, Rule};
    use levee_tools::scenario::T0_US;
    use levee_tools::shapes;
    let bed = bed();
    let levee = start_levee(
        &bed,
        "[collector]\nallowed_exporters = [\"127.0.0.1/32\"]\n",
    );
    let watch = bed
        .router
        .watch(&["ipv4-flowspec", "ipv6-flowspec", "ipv4", "ipv6"])
        .unwrap();
    let (start, secs) = (1_000_000, 8);
    let shaped = vec![
        shapes::syn_ack_beside_syns(v4(141), start, secs, 1),
        shapes::five_services(v4(142), start, secs, 2),
        shapes::five_families(v4(143), start, secs, 3),
        shapes::alternating_sizes(v4(144), start, secs, 4),
        shapes::fragmented_dns(v4(145), start, secs, 5),
        shapes::long_ipv6_chain(v6(0x146), start, secs, 6),
    ];
    let all = attacks::merge(shaped.iter().map(|s| s.scenario()).collect());
    let exports = export::sflow(&all, IpAddr::V4(Ipv4Addr::LOCALHOST), 100, 9, 1_000_000);
    let (wall_t0, sender) = send_at_pace(exports, levee.collector("sflow"));
    sender.join().unwrap();
    let changes = watch.changes();
    // What the incidents say of the rules acting on them: their coverage.
    let token = api_key(&levee.config, "ops", "read");
    let r = http(levee.web, "GET", "/api/v1/incidents", Some(&token), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let incidents: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    drop(levee);

    let mut failures = Vec::new();
    eprintln!(
        "shape                                        rules  attack matched  legitimate matched  blackholed"
    );
    for s in &shaped {
        let attack: Vec<_> = s.attack.iter().map(|p| p.spec).collect();
        let legit: Vec<_> = s.legit.iter().map(|p| p.spec).collect();
        let end_ms = wall_t0 + (s.attack.last().unwrap().time_us - T0_US) / 1000;
        let routes = routes_for(&changes, s.target);
        // What the router held when the attack ended.
        let mut held: Vec<Rule> = Vec::new();
        for (at, add, r) in &routes {
            if *at > end_ms {
                break;
            }
            held.retain(|h| h.text != r.text);
            if *add {
                held.push(r.clone());
            }
        }
        for (_, add, r) in &routes {
            let l = r.share(&legit);
            if *add && l > s.legit_allowed {
                failures.push(format!(
                    "{}: a rule matching {:.1}% of the legitimate traffic: {}",
                    s.name,
                    l * 100.0,
                    r.text
                ));
            }
        }
        let (a, l) = (coverage(&held, &attack), coverage(&held, &legit));
        // A blackhole drops the host's legitimate traffic whole: a shape a
        // rule describes must never come to one.
        let host_route = format!("\"{}/", s.target);
        let blackholed = changes
            .iter()
            .any(|c| !c.is_flowspec() && !c.withdrawal && c.nlri.to_string().contains(&host_route));
        eprintln!(
            "{:44} {:5}  {:13.1}%  {:17.1}%  {}",
            s.name,
            held.len(),
            a * 100.0,
            l * 100.0,
            if blackholed { "yes" } else { "no" }
        );
        if s.ruleable && blackholed {
            failures.push(format!("{}: blackholed though a rule describes it", s.name));
        }
        let shown = incidents
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["host"] == s.target.to_string())
            .filter_map(|i| i["mitigation"]["coverage"].as_f64())
            .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
        if s.ruleable && shown.is_none_or(|c| c < 0.9) {
            failures.push(format!(
                "{}: the incident shows a coverage of {shown:?} for the rules acting on it",
                s.name
            ));
        }
        if s.ruleable && a < 0.9 {
            failures.push(format!(
                "{}: the rules at the end match {:.1}% of the attack: {:?}",
                s.name,
                a * 100.0,
                held.iter().map(|r| &r.text).collect::<Vec<_>>()
            ));
        }
        if !s.ruleable && routes.iter().any(|(_, add, _)| *add) {
            failures.push(format!(
                "{}: no rule can describe it, yet one reached the router: {:?}",
                s.name,
                routes.iter().map(|r| &r.2.text).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A spray of addresses fills the host tables (one packet each to more
/// addresses than levee tracks); a host attacked after it is still
/// detected and mitigated.
#[test]
fn a_spray_of_addresses_does_not_blind_levee_to_the_next_victim() {
    let bed = bed();
    let levee = start_levee_with(
        &bed,
        "[collector]\nallowed_exporters = [\"127.0.0.1/32\"]\n",
        "max_hosts = 2000",
    );
    let watch = bed.router.watch(&["ipv4-flowspec"]).unwrap();
    // One sampled packet to each of 4,000 addresses of a /20.
    let mut rng = levee_tools::scenario::Rng::new(7);
    let spray = levee_tools::scenario::Scenario {
        name: "spray".into(),
        packets: (0..4000u32)
            .map(|i| levee_tools::scenario::Packet {
                time_us: levee_tools::scenario::T0_US + u64::from(i) * 250,
                spec: levee_collectors::encode::packet::PacketSpec::udp(
                    levee_tools::attacks::random_v4(&mut rng),
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)).to_canonical(),
                    1024,
                    53,
                    80,
                ),
            })
            .map(|mut p| {
                // Spread over 192.0.2.0/24 and the IPv6 /48 alike.
                let i = p.time_us / 250 % 4000;
                p.spec.dst = if i % 2 == 0 {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 250) as u8))
                } else {
                    IpAddr::V6(std::net::Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        1,
                        0,
                        0,
                        0,
                        (i >> 8) as u16,
                        i as u16,
                    ))
                };
                p
            })
            .collect(),
    };
    let exports = export::sflow(&spray, IpAddr::V4(Ipv4Addr::LOCALHOST), 1, 1, 1_000_000);
    let payloads: Vec<Vec<u8>> = exports.into_iter().map(|e| e.payload).collect();
    send_from(
        "127.0.0.1:0",
        levee.collector("sflow"),
        &payloads,
        Duration::from_micros(200),
    );
    std::thread::sleep(Duration::from_secs(2));
    // Then a new victim.
    let victim: IpAddr = "192.0.2.251".parse().unwrap();
    let attack = attacks::attack(
        &Attack {
            family: Family::UdpFlood,
            target: victim,
            pps: 20_000,
            start_us: 0,
            duration_s: 4,
            sources: Sources::Spoofed,
        },
        8,
    );
    let exports = export::sflow(&attack, IpAddr::V4(Ipv4Addr::LOCALHOST), 100, 3, 1_000_000);
    let (_, sender) = send_at_pace(exports, levee.collector("sflow"));
    sender.join().unwrap();
    let rules: Vec<_> = watch
        .changes()
        .into_iter()
        .filter(|c| c.is_flowspec() && !c.withdrawal)
        .collect();
    assert!(
        rules
            .iter()
            .any(|c| c.nlri.to_string().contains("192.0.2.251/32")),
        "the victim after the spray got its rule: {rules:?}"
    );
    drop(levee);
}

/// `scenario` as softflowd exports it (NetFlow v5, flows expired after
/// `maxlife` seconds): each datagram with its export time in capture time
/// (µs), in the order sent.
fn softflowd(
    scenario: &levee_tools::scenario::Scenario,
    dir: &std::path::Path,
    maxlife: u32,
) -> Vec<(u64, Vec<u8>)> {
    let pcap = dir.join(format!("{}.pcap", scenario.name));
    scenario.write_pcap_snap(&pcap, 128).unwrap();
    // softflowd reads the capture and exports to a socket of ours.
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let port = rx.local_addr().unwrap().port();
    let status = std::process::Command::new("softflowd")
        .args(["-r", pcap.to_str().unwrap(), "-n"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-v", "5", "-a", "-A", "milli", "-c", "none", "-d", "-t"])
        .arg(format!("maxlife={maxlife}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("softflowd runs (scripts/install-deps --test installs it)");
    assert!(status.success());
    let mut datagrams: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 65_536];
    while let Ok(n) = rx.recv(&mut buf) {
        let d = &buf[..n];
        // NetFlow v5 header: export time in unix_secs and unix_nsecs.
        let secs = u32::from_be_bytes([d[8], d[9], d[10], d[11]]) as u64;
        let nsecs = u32::from_be_bytes([d[12], d[13], d[14], d[15]]) as u64;
        datagrams.push((secs * 1_000_000 + nsecs / 1000, d.to_vec()));
    }
    assert!(
        datagrams.len() >= 3,
        "softflowd exported {} datagrams",
        datagrams.len()
    );
    datagrams
}

/// A flood carried in persistent 5-tuples (as Mirai's udpplain sends it),
/// exported by a real exporter — softflowd, NetFlow v5, a 10 s active
/// timeout — whose datagrams reach `levee run` at the pace softflowd sent
/// them in capture time. Each flow is reported once per timeout; counted
/// once in the second its record arrives, at its rate, the flood read as a
/// tenth of itself (2 kpps a second, under a 5 kpps limit) and was never
/// detected. Held over the seconds it covers, it reads at its rate.
#[test]
fn a_flood_in_persistent_flows_reads_at_its_rate() {
    use levee_collectors::encode::packet::PacketSpec;
    use levee_tools::scenario::{Packet, Scenario, T0_US};
    let dir = tempfile::tempdir().unwrap();
    let victim: IpAddr = "192.0.2.77".parse().unwrap();
    // Ten flows of 2,000 pps each, starting a second apart, for 30 s.
    let mut packets = Vec::new();
    for f in 0..10u64 {
        let src = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10 + f as u8));
        for i in 0..(30 - f) * 2000 {
            packets.push(Packet {
                time_us: T0_US + f * 1_000_000 + i * 500,
                spec: PacketSpec::udp(src, victim, 40_000 + f as u16, 9_999, 512),
            });
        }
    }
    packets.sort_by_key(|p| p.time_us);
    let flood = Scenario {
        name: "persistent".into(),
        packets,
    };
    let datagrams = softflowd(&flood, dir.path(), 10);
    let first = datagrams.iter().map(|d| d.0).min().unwrap();
    let records: usize = datagrams.iter().map(|d| usize::from(d.1[3])).sum();
    eprintln!(
        "softflowd: {} datagrams, {records} records over {:.0} s of capture",
        datagrams.len(),
        (datagrams.iter().map(|d| d.0).max().unwrap() - first) as f64 / 1e6
    );

    let bed = bed();
    let config = bed.dir.path().join("levee.toml");
    let text = format!(
        "[collector]\nallowed_exporters = [\"127.0.0.1/32\"]\n\
         [[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\"]\n\
         [hostgroup.thresholds]\npps = 5000\n\
         [hostgroup.mitigation]\nladder = [\"flowspec\"]\n\
         [detection]\nhold_down = \"5s\"\n\
         [bgp]\ngobgp_grpc = \"{}\"\n",
        bed.speaker.grpc()
    );
    std::fs::write(&config, test_config(&bed.dir.path().join("data"), &text)).unwrap();
    let levee = Levee::start(&config);
    let netflow = levee.collector("netflow");
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let mut detected = None;
    for (at, d) in &datagrams {
        let due = Duration::from_micros(at - first);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        tx.send_to(d, netflow).unwrap();
        if detected.is_none() && levee.metric("levee_incidents_total").as_deref() == Some("1") {
            detected = Some(start.elapsed());
        }
    }
    levee.wait_for("the flood to be detected", |l| {
        l.metric("levee_incidents_total").as_deref() == Some("1")
    });
    let token = api_key(&config, "ops", "read");
    let body = http(levee.web, "GET", "/api/v1/incidents", Some(&token), None).body;
    let incidents: serde_json::Value = serde_json::from_str(&body).unwrap();
    let inc = &incidents[0];
    assert_eq!(inc["host"], "192.0.2.77", "{inc}");
    let peak = inc["peak_pps"].as_u64().unwrap();
    assert!(
        peak >= 15_000,
        "read at its rate, not a tenth: peak {peak} pps"
    );
    eprintln!(
        "persistent flows: detected {:?} after the first export, peak {peak} pps (20,000 sent)",
        detected
    );
    // The exporter's active timeout shows: it bounds how late such a flood
    // is seen.
    let timeout: u64 = levee
        .metric("levee_exporter_longest_flow_seconds{exporter=\"127.0.0.1\"}")
        .expect("the exporter's longest flow")
        .parse()
        .unwrap();
    assert!(
        (9..=12).contains(&timeout),
        "{timeout} s (maxlife 10 s, expired on its next check)"
    );
}

/// Baselines an attacker shapes, judged by `levee run` alone (the static
/// limit out of reach): two hosts learnt for a minute at about 2,000 pps
/// of web traffic, with a 2 s window and a 5 min ceiling (time compressed:
/// an hour's window and a day's ceiling, as deployed, scale alike).
/// One gets a UDP flood ramped up by 100 pps a second — slow enough for
/// the window's average to follow, so only the ceiling sees it. The other
/// is pumped for 30 s with bursts at 80 % of its limit every other second
/// (its limit computed as levee computes it), then flooded at 4,500 pps —
/// far under the limit the pumping makes of an unclipped average, over
/// the one levee keeps. Both must be detected, the pumped one only when
/// flooded.
#[test]
fn baselines_can_be_neither_ramped_nor_pumped() {
    use levee::detect::baseline::{Baseline, Params};
    use levee_tools::scenario::Rng;
    use levee_tools::shapes;
    const RATE: u64 = 10;
    let (learn, pump, flood) = (60usize, 30usize, 10usize);
    let total = learn + pump + flood;
    let bed = bed();
    let levee = start_levee_over(
        &bed,
        "[collector]\nallowed_exporters = [\"127.0.0.1/32\"]\n",
        "[detection.baseline]\nwindow = \"2s\"\nceiling_window = \"300s\"\n\
         learning = \"10s\"\nsigma = 4\nfloor_pps = 500\n",
        1_000_000,
    );
    let mut rng = Rng::new(11);
    let mut noisy = || 2000 + rng.range(0, 401) - 200;
    let (ramped, pumped) = (v4(151), v4(152));
    // The ramp: from the end of learning, 100 pps more each second.
    let base_a: Vec<u64> = (0..total).map(|_| noisy()).collect();
    let extra_a: Vec<u64> = (0..total)
        .map(|s| s.saturating_sub(learn) as u64 * 100)
        .collect();
    // The pump, following levee's own baseline second by second.
    let p = Params {
        alpha: 1.0 / 2.0,
        long_alpha: 1.0 / 300.0,
        learning_s: 10,
        sigma: 4.0,
        floor_pps: 500.0,
        floor_bps: 50e6,
    };
    let mut shadow = Baseline::default();
    let base_b: Vec<u64> = (0..total).map(|_| noisy()).collect();
    let mut extra_b = vec![0u64; total];
    for s in 0..total {
        let limit = shadow.limits(&p).map_or(0.0, |l| l.0);
        if s >= learn + pump {
            extra_b[s] = 4_500 - base_b[s];
        } else if s >= learn && (s - learn) % 2 == 0 {
            extra_b[s] = (0.8 * limit) as u64 - base_b[s].min((0.8 * limit) as u64);
        }
        let pps = base_b[s] + extra_b[s];
        if s < learn + pump {
            shadow.feed(s as u64, pps as f64, pps as f64 * 2000.0, &p);
        }
    }
    let pumped_limit = shadow.limits(&p).map_or(0.0, |l| l.0);
    assert!(
        pumped_limit < 4_000.0,
        "the pumping lifted the limit to {pumped_limit:.0} pps"
    );
    // sFlow 1:10 whose packets are the samples: each second's rate exact.
    let per = |v: &[u64]| v.iter().map(|n| n / RATE).collect::<Vec<_>>();
    let a = shapes::paced(ramped, &per(&base_a), &per(&extra_a), 1);
    let b = shapes::paced(pumped, &per(&base_b), &per(&extra_b), 2);
    let all = attacks::merge(vec![a.scenario(), b.scenario()]);
    let exports = export::sflow_presampled(
        &all,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        RATE as u32,
        3,
        20_000,
    );
    // Seconds of the schedule on levee's seconds: start on a whole one.
    let wall = now_ms;
    std::thread::sleep(Duration::from_millis(1000 - wall() % 1000 + 20));
    let token = api_key(&bed.dir.path().join("levee.toml"), "test", "read");
    let (wall_t0, sender) = send_at_pace(exports, levee.collector("sflow"));
    // Note when each host's incident first shows.
    let mut first_seen: std::collections::HashMap<IpAddr, u64> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(total as u64 + 5);
    while Instant::now() < deadline {
        let r = http(
            levee.web,
            "GET",
            "/api/v1/incidents?limit=50",
            Some(&token),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let list: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        for i in list.as_array().into_iter().flatten() {
            let Some(host) = i["host"].as_str().and_then(|h| h.parse::<IpAddr>().ok()) else {
                continue;
            };
            assert_eq!(
                i["reason"]["kind"], "baseline",
                "judged by baselines only: {i}"
            );
            first_seen.entry(host).or_insert_with(wall);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    sender.join().unwrap();
    drop(levee);
    let at = |h: IpAddr| {
        first_seen
            .get(&h)
            .map(|ms| (*ms as f64 - wall_t0 as f64) / 1000.0)
    };
    eprintln!(
        "ramp detected at {:?} s (ramp from {learn} s), pumped host at {:?} s (flood from {} s; limit after pumping {pumped_limit:.0} pps)",
        at(ramped),
        at(pumped),
        learn + pump
    );
    let ramp_at = at(ramped).expect("the ramp was never detected");
    assert!(
        ramp_at > learn as f64 && ramp_at < (learn + pump + flood) as f64,
        "ramp detected at {ramp_at} s"
    );
    let pump_at = at(pumped).expect("the flood after the pumping was never detected");
    assert!(
        pump_at > (learn + pump) as f64,
        "the pumping itself was taken for an attack at {pump_at} s"
    );
}

/// Flows alternating 64- and 1400-byte packets, exported by a real flow
/// exporter (softflowd, NetFlow v5): each record says only the average
/// (732 bytes), no packet's length. The rule the router gets must still
/// match the attack — no length taken from an average — and spare the
/// host's web traffic.
#[test]
fn flow_exports_averages_never_make_a_length_match() {
    use levee_collectors::encode::packet::PacketSpec;
    use levee_tools::flowspec::coverage;
    use levee_tools::scenario::{Packet, Scenario, T0_US};
    use levee_tools::shapes;
    let dir = tempfile::tempdir().unwrap();
    let victim: IpAddr = "192.0.2.78".parse().unwrap();
    // Ten flows of 2,000 pps each for 8 s, sizes alternating.
    let mut attack = Vec::new();
    for f in 0..10u64 {
        let src = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 30 + f as u8));
        for i in 0..8 * 2000u64 {
            attack.push(Packet {
                time_us: T0_US + 1_000_000 + i * 500 + f * 37,
                spec: PacketSpec {
                    ttl: 57,
                    ..PacketSpec::udp(
                        src,
                        victim,
                        40_000 + f as u16,
                        27_015,
                        if i % 2 == 0 { 64 } else { 1400 },
                    )
                },
            });
        }
    }
    let legit = shapes::paced(victim, &[300; 11], &[0; 11], 8).legit;
    let mut packets: Vec<Packet> = attack.iter().chain(&legit).copied().collect();
    packets.sort_by_key(|p| p.time_us);
    let scenario = Scenario {
        name: "alternating-flows".into(),
        packets,
    };
    let datagrams = softflowd(&scenario, dir.path(), 2);

    let bed = bed();
    let levee = start_levee(
        &bed,
        "[collector]\nallowed_exporters = [\"127.0.0.1/32\"]\n",
    );
    let watch = bed.router.watch(&["ipv4-flowspec", "ipv4"]).unwrap();
    let netflow = levee.collector("netflow");
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let first = datagrams.iter().map(|d| d.0).min().unwrap();
    let start = Instant::now();
    for (at, d) in &datagrams {
        let due = Duration::from_micros(at - first);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        tx.send_to(d, netflow).unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let changes = watch.changes();
    drop(levee);
    let routes = routes_for(&changes, victim);
    assert!(
        changes.iter().all(|c| c.is_flowspec()),
        "no blackhole: {changes:?}"
    );
    let rules: Vec<_> = routes
        .iter()
        .filter(|(_, add, _)| *add)
        .map(|(_, _, r)| r.clone())
        .collect();
    assert!(!rules.is_empty(), "the flood got a rule");
    for r in &rules {
        assert!(
            r.components
                .iter()
                .all(|(k, _)| *k != levee_tools::flowspec::kind::PACKET_LENGTH),
            "a length from an average: {}",
            r.text
        );
    }
    let attack: Vec<PacketSpec> = attack.iter().map(|p| p.spec).collect();
    let legit: Vec<PacketSpec> = legit.iter().map(|p| p.spec).collect();
    let (a, l) = (coverage(&rules, &attack), coverage(&rules, &legit));
    eprintln!(
        "alternating sizes over NetFlow: {} rule(s), {:.1}% of the attack and {:.1}% of the web traffic matched: {:?}",
        rules.len(),
        a * 100.0,
        l * 100.0,
        rules.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    assert!(a >= 0.9, "{a}");
    assert!(l <= 0.01, "{l}");
}
