//! Detection and classification end to end, through `levee replay`'s path:
//! every attack family, IPv4 and IPv6, as raw packets (a mirror port's pcap)
//! and as sampled sFlow export, must give one incident naming the right
//! family (and vector) and host with confidence ≥ 0.8; benign traffic must
//! give none; floods from spoofed sources carry `spoofed`, from 1000 real
//! sources `botnet`; two families at once are `multi_vector`; and at the
//! default settings an attack is detected within a second of its first
//! packet.

mod common;
use common::replay::{config, lines, write_exports};

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use levee::config;
use levee_tools::attacks::{self, Attack, Family, Sources};
use levee_tools::export;
use levee_tools::scenario::{Scenario, T0_US};
use serde_json::Value;

const V4: &str = "192.0.2.10";
const V6: &str = "2001:db8::10";

/// The family tests' config: a 2,000 pps limit.
fn low() -> config::Config {
    config("[hostgroup.thresholds]\npps = 2000\n")
}

/// How the traffic reaches levee.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    /// Raw packets, cut at 128 bytes (a mirror port).
    Pcap,
    /// sFlow sampled 1 in N, 128-byte headers.
    Sflow(u32),
}

fn write(s: &Scenario, input: Input, dir: &Path) -> PathBuf {
    let path = dir.join("input.pcap");
    match input {
        Input::Pcap => s.write_pcap_snap(&path, 128).unwrap(),
        Input::Sflow(rate) => {
            let agent = Ipv4Addr::new(10, 0, 0, 1);
            return write_exports(&export::sflow(s, agent.into(), rate, 9, 100_000), dir);
        }
    }
    path
}

/// Replays and returns the incidents (JSON objects) and the summary.
fn run(c: &config::Config, s: &Scenario, input: Input) -> (Vec<Value>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(s, input, dir.path());
    let lines = lines(c, path, true);
    let (summary, incidents): (Vec<Value>, Vec<Value>) =
        lines.into_iter().partition(|v| v["type"] == "summary");
    (incidents, summary.into_iter().next().unwrap())
}

fn flood(family: Family, target: &str, sources: Sources) -> Scenario {
    let target: IpAddr = target.parse().unwrap();
    attacks::merge(vec![
        attacks::attack(
            &Attack {
                family,
                target,
                pps: 8_000,
                start_us: 500_000,
                duration_s: 3,
                sources,
            },
            format!("{family:?}").len() as u64 ^ 0x5eed,
        ),
        attacks::background(target, 4, 3),
    ])
}

fn sources_for(f: Family) -> Sources {
    match f {
        // Reflected traffic comes from real reflectors.
        Family::Amplification(_) | Family::SynAck => Sources::Hosts(200),
        _ => Sources::Spoofed,
    }
}

#[test]
fn every_family_is_named_from_packets_and_from_sampled_sflow() {
    let c = low();
    let mut failures = Vec::new();
    for family in Family::all() {
        for target in [V4, V6] {
            for input in [Input::Pcap, Input::Sflow(20)] {
                let (incidents, _) = run(&c, &flood(family, target, sources_for(family)), input);
                let (want, vector) = family.expected();
                let case = format!("{family:?} on {target} via {input:?}");
                let [i] = incidents.as_slice() else {
                    failures.push(format!("{case}: {} incidents", incidents.len()));
                    continue;
                };
                let got = (
                    i["family"].as_str(),
                    i["vector"].as_str(),
                    i["host"].as_str(),
                );
                if got != (Some(want), vector, Some(target)) {
                    failures.push(format!(
                        "{case}: got {got:?}, components {}",
                        i["components"]
                    ));
                }
                let conf = i["confidence"].as_f64().unwrap();
                if conf < 0.8 {
                    failures.push(format!("{case}: confidence {conf}"));
                }
                if sources_for(family) == Sources::Spoofed && i["spoofed"] != true {
                    failures.push(format!("{case}: not flagged spoofed ({i})"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_thousand_source_flood_is_a_botnet() {
    let c = low();
    for target in [V4, V6] {
        for input in [Input::Pcap, Input::Sflow(20)] {
            let (incidents, _) = run(
                &c,
                &flood(Family::UdpFlood, target, Sources::Hosts(1000)),
                input,
            );
            assert_eq!(incidents.len(), 1, "{target} {input:?}");
            let i = &incidents[0];
            assert_eq!(i["botnet"], true, "{target} {input:?}: {i}");
            assert_eq!(i["spoofed"], false, "{target} {input:?}: {i}");
            let est = i["sources_estimate"].as_u64().unwrap();
            if input == Input::Pcap {
                assert!((900..=1100).contains(&est), "{est} sources");
            }
        }
    }
}

#[test]
fn two_families_at_once_are_multi_vector_with_their_parts() {
    let c = low();
    let target: IpAddr = V4.parse().unwrap();
    let both = |f: Family, seed| {
        attacks::attack(
            &Attack {
                family: f,
                target,
                pps: 6_000,
                start_us: 500_000,
                duration_s: 3,
                sources: sources_for(f),
            },
            seed,
        )
    };
    let s = attacks::merge(vec![
        both(Family::SynFlood, 1),
        both(Family::Amplification(123), 2),
    ]);
    for input in [Input::Pcap, Input::Sflow(20)] {
        let (incidents, _) = run(&c, &s, input);
        assert_eq!(incidents.len(), 1, "{input:?}");
        let i = &incidents[0];
        assert_eq!(i["family"], "multi_vector", "{input:?}: {i}");
        let parts: Vec<&str> = i["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["family"].as_str().unwrap())
            .collect();
        let mut sorted = parts.clone();
        sorted.sort();
        assert_eq!(sorted, ["amplification", "syn_flood"], "{input:?}");
        assert!(i["confidence"].as_f64().unwrap() >= 0.8);
    }
}

#[test]
fn benign_traffic_raises_nothing_at_the_default_settings() {
    let c = config("");
    let s = attacks::benign(V4.parse().unwrap(), V6.parse().unwrap(), 3, 11);
    for input in [Input::Pcap, Input::Sflow(100)] {
        let (incidents, summary) = run(&c, &s, input);
        assert!(incidents.is_empty(), "{input:?}: {incidents:?}");
        assert!(summary["records"].as_u64().unwrap() > 1000);
    }
}

#[test]
fn attacks_are_detected_within_a_second_at_the_default_settings() {
    let c = config("");
    let target: IpAddr = V4.parse().unwrap();
    let start_us = 700_000;
    let s = attacks::attack(
        &Attack {
            family: Family::UdpFlood,
            target,
            pps: 100_000,
            start_us,
            duration_s: 2,
            sources: Sources::Spoofed,
        },
        5,
    );
    let first_ms = (s.packets[0].time_us / 1000) as i64;
    assert!(first_ms >= ((T0_US + start_us) / 1000) as i64);
    for input in [Input::Pcap, Input::Sflow(1000)] {
        let (incidents, _) = run(&c, &s, input);
        assert_eq!(incidents.len(), 1, "{input:?}");
        let detected =
            humantime::parse_rfc3339(incidents[0]["detected_at"].as_str().unwrap()).unwrap();
        let detected_ms = detected
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let delay = detected_ms - first_ms;
        assert!(
            (0..=1000).contains(&delay),
            "{input:?}: detected {delay} ms after the first packet"
        );
    }
}

#[test]
fn the_summary_counts_every_host_exactly_from_packets() {
    let c = low();
    let s = flood(Family::UdpFlood, V4, Sources::Spoofed);
    let truth = s.truth();
    let (_, summary) = run(&c, &s, Input::Pcap);
    let hosts = summary["hosts"].as_object().unwrap();
    let t = truth[&V4.parse::<IpAddr>().unwrap()];
    assert_eq!(hosts[V4]["packets"], t.packets);
    assert_eq!(hosts[V4]["bytes"], t.bytes);
    assert_eq!(summary["records"], s.packets.len());
}

/// Packets to a protected host on a collector port (6343, 2055, 4739) are
/// traffic to that host, not flow export: a flood with random destination
/// ports puts some there, and each must count (issue 12: exact accounting
/// failed by 2–8 packets on 7 of 13 attack scenarios).
#[test]
fn a_flood_on_the_collector_ports_is_traffic_to_the_host() {
    let mut c = low();
    c.collector.netflow.listen = vec![
        "0.0.0.0:2055".parse().unwrap(),
        "0.0.0.0:4739".parse().unwrap(),
    ];
    let mut s = flood(Family::UdpFlood, V4, Sources::Spoofed);
    // Put every hundredth packet on a collector port, as a random-port
    // flood does now and then (with garbage that is no flow export).
    for (i, p) in s
        .packets
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| i % 100 == 0)
    {
        p.spec.dst_port = [6343, 2055, 4739][i / 100 % 3];
    }
    let on_ports = s
        .packets
        .iter()
        .filter(|p| [6343, 2055, 4739].contains(&p.spec.dst_port))
        .count();
    assert!(on_ports > 50, "{on_ports}");
    let truth = s.truth();
    let (_, summary) = run(&c, &s, Input::Pcap);
    let hosts = summary["hosts"].as_object().unwrap();
    let t = truth[&V4.parse::<IpAddr>().unwrap()];
    assert_eq!(hosts[V4]["packets"], t.packets, "{summary}");
    assert_eq!(hosts[V4]["bytes"], t.bytes);
    assert_eq!(summary["datagrams"], 0, "none of it is flow export");
    assert_eq!(summary["decode_errors"], 0);
}
