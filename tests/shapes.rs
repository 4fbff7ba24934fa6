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
    let config = bed.dir.path().join("levee.toml");
    let text = format!(
        "{extra}\n[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n\
         [hostgroup.thresholds]\npps = 5000\n\
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
        .watch(&["ipv4-flowspec", "ipv6-flowspec"])
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
    drop(levee);

    let mut failures = Vec::new();
    eprintln!(
        "shape                                        rules  attack matched  legitimate matched"
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
        eprintln!(
            "{:44} {:5}  {:13.1}%  {:17.1}%",
            s.name,
            held.len(),
            a * 100.0,
            l * 100.0
        );
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
