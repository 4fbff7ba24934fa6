//! The right rule or no rule, end to end: `levee run` with its own gobgpd,
//! peered with a second gobgpd playing the border router, fed sampled
//! sFlow (1:100, an agent that flushes at 8 samples or after a second) of
//! the scenario generator's attacks at the capture's own pace, on hosts
//! with no history.
//!
//! The router's RIB is watched from before the attack (`gobgp monitor`),
//! so every route it ever held is seen, not only what is there at the end.
//! Each route is read back from the router's JSON and held against the
//! scenario's packets: the first rule the router holds for a host must
//! match the attack (its protocol, ports or flags, as the family says) —
//! at least 90 % of its packets — and no route that matches less than half
//! of it may ever appear. A verdict that changes mid-attack must replace
//! the rule make-before-break: from the first rule on, the router is
//! never without one.

mod common;

use common::bgp::*;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::*;
use levee_collectors::encode::packet::PacketSpec;
use levee_tools::attacks::{self, Attack, Family, Sources};
use levee_tools::export;
use levee_tools::flowspec::Rule;
use levee_tools::scenario::{Scenario, T0_US};

/// A 5,000 pps limit, FlowSpec as the only level: whatever reaches the
/// router is a rule built from the classification.
fn start_levee(bed: &Bed) -> Levee {
    let config = bed.dir.path().join("levee.toml");
    let text = format!(
        "[collector]\nallowed_exporters = [\"127.0.0.1/32\"]\n\
         [[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n\
         [hostgroup.thresholds]\npps = 5000\n\
         [hostgroup.mitigation]\nladder = [\"flowspec\"]\n\
         [detection]\nhold_down = \"2s\"\n\
         [mitigation]\nhold_down = \"3s\"\ndwell = \"60s\"\nreconcile_every = \"5s\"\n\
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

#[test]
fn the_first_rule_at_the_router_matches_the_attack_for_every_family() {
    let bed = bed();
    let levee = start_levee(&bed);
    let watch = bed
        .router
        .watch(&["ipv4-flowspec", "ipv6-flowspec", "ipv4", "ipv6"])
        .unwrap();

    // Each family on a host of its own, at two or four times the limit,
    // starting a quarter second apart, for six seconds, beside a little
    // legitimate web traffic that starts a second before.
    let plan: Vec<(Family, IpAddr, u64)> = vec![
        (Family::SynFlood, v4(101), 10_000),
        (Family::SynAck, v4(102), 20_000),
        (Family::AckFlood, v4(103), 20_000),
        (Family::RstFlood, v4(104), 10_000),
        (Family::UdpFlood, v4(105), 20_000),
        (Family::IcmpFlood, v4(106), 10_000),
        (Family::Amplification(123), v4(107), 20_000),
        (Family::FragmentFlood, v4(108), 20_000),
        (Family::ProtocolFlood(47), v4(109), 10_000),
        (Family::SynFlood, v6(0x110), 20_000),
        (Family::Amplification(53), v6(0x111), 10_000),
    ];
    let mut parts: Vec<Scenario> = Vec::new();
    let mut cases = Vec::new();
    for (i, &(family, target, pps)) in plan.iter().enumerate() {
        let start_us = 1_000_000 + i as u64 * 250_000;
        let sources = match family {
            Family::Amplification(_) | Family::SynAck => Sources::Hosts(200),
            _ => Sources::Spoofed,
        };
        let attack = attacks::attack(
            &Attack {
                family,
                target,
                pps,
                start_us,
                duration_s: 6,
                sources,
            },
            100 + i as u64,
        );
        let legit = attacks::background(target, 9, 200 + i as u64);
        cases.push(Case {
            family,
            target,
            packets: attack.packets.iter().map(|p| p.spec).collect(),
            first_us: attack.packets[0].time_us,
            legit: legit.packets.iter().map(|p| p.spec).collect(),
            wall_t0: None,
        });
        parts.push(attack);
        parts.push(legit);
    }
    let all = attacks::merge(parts);
    let exports = export::sflow(&all, IpAddr::V4(Ipv4Addr::LOCALHOST), 100, 7, 1_000_000);
    let (wall_t0, sender) = send_at_pace(exports, levee.collector("sflow"));
    sender.join().unwrap();
    // The attacks are over: every rule goes after the hold-downs.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(30) {
        let empty = ["ipv4-flowspec", "ipv6-flowspec"]
            .iter()
            .all(|f| !bed.router.rib(f).unwrap().contains("destination"));
        if empty {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let changes = watch.changes();

    let mut failures = judge(&cases, &changes, wall_t0, "sFlow 1:100");
    for (proto, rib) in [
        ("ipv4-flowspec", bed.router.rib("ipv4-flowspec").unwrap()),
        ("ipv6-flowspec", bed.router.rib("ipv6-flowspec").unwrap()),
    ] {
        if rib.contains("destination") {
            failures.push(format!("{proto}: rules left after the attacks:\n{rib}"));
        }
    }
    drop(levee);
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An NTP reflection that turns into a SYN flood on the same host: the
/// rule follows, the new one announced before the old one goes, and the
/// router is never without a rule for the host in between.
#[test]
fn a_verdict_that_changes_mid_attack_replaces_the_rule_without_a_gap() {
    let bed = bed();
    let levee = start_levee(&bed);
    let watch = bed.router.watch(&["ipv4-flowspec"]).unwrap();
    let target = v4(120);
    let amp = attacks::attack(
        &Attack {
            family: Family::Amplification(123),
            target,
            pps: 20_000,
            start_us: 500_000,
            duration_s: 7,
            sources: Sources::Hosts(200),
        },
        31,
    );
    let syn = attacks::attack(
        &Attack {
            family: Family::SynFlood,
            target,
            pps: 20_000,
            start_us: 7_500_000,
            duration_s: 10,
            sources: Sources::Spoofed,
        },
        32,
    );
    let amp_packets: Vec<PacketSpec> = amp.packets.iter().map(|p| p.spec).collect();
    let syn_packets: Vec<PacketSpec> = syn.packets.iter().map(|p| p.spec).collect();
    let end_us = syn.packets.last().unwrap().time_us;
    let all = attacks::merge(vec![amp, syn, attacks::background(target, 18, 33)]);
    let exports = export::sflow(&all, IpAddr::V4(Ipv4Addr::LOCALHOST), 100, 8, 1_000_000);
    let (wall_t0, sender) = send_at_pace(exports, levee.collector("sflow"));
    sender.join().unwrap();
    let changes = watch.changes();
    drop(levee);

    let routes = routes_for(&changes, target);
    let end_ms = wall_t0 + (end_us - T0_US) / 1000;
    let mut held: Vec<Rule> = Vec::new();
    let mut first_syn = None;
    let mut announced = 0;
    for (at, add, r) in &routes {
        if *at > end_ms {
            break;
        }
        if *add {
            announced += 1;
            if first_syn.is_none() && r.share(&syn_packets) >= 0.9 {
                first_syn = Some(*at);
            }
            held.retain(|h| h.text != r.text);
            held.push(r.clone());
        } else {
            held.retain(|h| h.text != r.text);
            assert!(
                !held.is_empty(),
                "the router was left without a rule for {target} at {at}: {routes:#?}"
            );
        }
    }
    let first = routes.first().expect("a rule reached the router");
    assert!(first.1);
    assert!(
        first.2.share(&amp_packets) >= 0.9,
        "the first rule is for the reflection: {}",
        first.2.text
    );
    let switched = first_syn.expect("a rule for the SYN flood reached the router");
    let syn_start = wall_t0 + 7_500;
    eprintln!(
        "the attack changed vector; a rule for the new one {} ms later ({announced} announcements)",
        switched.saturating_sub(syn_start)
    );
    assert!(
        held.iter().any(|r| r.share(&syn_packets) >= 0.9),
        "at the attack's end the router holds the SYN rule: {held:#?}"
    );
    assert!(
        held.iter().all(|r| r.share(&amp_packets) < 0.5),
        "the reflection's rule was withdrawn once the attack no longer matched it: {held:#?}"
    );
}

/// The same from a mirror port: levee captures on an interface inside a
/// network namespace of the test's own (with both gobgpds), and tcpreplay
/// plays the scenario onto the other end of a veth pair at its own pace.
#[test]
fn the_first_rule_from_a_mirror_port_matches_the_attack() {
    let bed = mirror_bed(
        "levee-mirror",
        "[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n\
         [hostgroup.thresholds]\npps = 5000\n",
    );
    let (ns, dir, router) = (&bed.ns, &bed.dir, &bed.router);
    let watch = router.watch(&["ipv4-flowspec", "ipv6-flowspec"]).unwrap();

    // One family after another, twice the limit, each played by a
    // tcpreplay of its own (one long replay drifts behind the clock on a
    // busy machine, and its lag would be counted as levee's).
    let plan: Vec<(Family, IpAddr)> = vec![
        (Family::SynFlood, v4(131)),
        (Family::SynAck, v4(132)),
        (Family::RstFlood, v4(133)),
        (Family::UdpFlood, v4(134)),
        (Family::IcmpFlood, v4(135)),
        (Family::Amplification(123), v4(136)),
        (Family::FragmentFlood, v4(137)),
        (Family::ProtocolFlood(47), v4(138)),
        (Family::Amplification(53), v6(0x139)),
    ];
    let mut cases = Vec::new();
    for (i, &(family, target)) in plan.iter().enumerate() {
        let sources = match family {
            Family::Amplification(_) | Family::SynAck => Sources::Hosts(200),
            _ => Sources::Spoofed,
        };
        let attack = attacks::attack(
            &Attack {
                family,
                target,
                pps: 10_000,
                start_us: 300_000,
                duration_s: 2,
                sources,
            },
            300 + i as u64,
        );
        let legit = attacks::background(target, 3, 400 + i as u64);
        let mut case = Case {
            family,
            target,
            packets: attack.packets.iter().map(|p| p.spec).collect(),
            first_us: attack.packets[0].time_us,
            legit: legit.packets.iter().map(|p| p.spec).collect(),
            wall_t0: None,
        };
        let all = attacks::merge(vec![attack, legit]);
        let first_us = all.packets[0].time_us;
        let pcap = dir.path().join(format!("mirror-{i}.pcap"));
        all.write_pcap(&pcap).unwrap();
        let wall_first = now_ms();
        let out = ns
            .exec("tcpreplay")
            .args(["-q", "-i", "mirror0"])
            .arg(&pcap)
            .output()
            .expect("tcpreplay runs (scripts/install-deps --test installs it)");
        assert!(out.status.success(), "{out:?}");
        case.wall_t0 = Some(wall_first - (first_us - T0_US) / 1000);
        cases.push(case);
    }
    std::thread::sleep(Duration::from_secs(1));
    let changes = watch.changes();
    let failures = judge(&cases, &changes, 0, "mirror port");
    drop(bed);
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
