//! Attacks spread over a prefix (DET-6, carpet bombing): every host under
//! its own limits, the prefix as a whole far over its hostgroup's
//! `[hostgroup.prefix_thresholds]`. Through `levee replay`'s path, of the
//! raw packets and of their sFlow export at 1:100:
//!
//! - a DNS reflection over every address of a /24 (the case:
//!   ~470 pps per host, 120 kpps for the /24) and an NTP reflection over
//!   500 addresses of a /64 are one prefix incident each, named, with the
//!   hosts they hit — and no host incident;
//! - a reflection that moves between four /26s every 3 s is one incident
//!   for the /24, not four;
//! - a flood on one host inside the prefix is that host's incident only;
//! - a prefix-wide surge (a CDN filling every host) that the prefix's
//!   baseline has learnt raises nothing, while one four times as large
//!   does (so the baseline is judging).

mod common;
use common::replay::{config, incidents, write_exports};

use std::net::{IpAddr, Ipv4Addr};

use levee::config;
use levee_tools::attacks::{self, Attack, Family, Sources};
use levee_tools::carpet;
use levee_tools::export::{self};
use levee_tools::scenario::Scenario;
use serde_json::Value;

const PREFIX_LIMITS: &str = "[hostgroup.prefix_thresholds]\nprefix_length_v4 = 24\n\
                             prefix_length_v6 = 64\npps = 50000\nbps = 500000000\n";

/// The scenario's incidents, from its raw packets and from its sFlow
/// export at 1:100.
fn replay_both(c: &config::Config, s: &Scenario) -> [(&'static str, Vec<Value>); 2] {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.pcap");
    s.write_pcap(&raw).unwrap();
    let exports = export::sflow(s, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 100, 5, 1_000_000);
    let sampled = write_exports(&exports, dir.path());
    [
        ("raw", incidents(c, raw)),
        ("sFlow 1:100", incidents(c, sampled)),
    ]
}

/// One line per incident, for messages.
fn summary(found: &[Value]) -> Vec<String> {
    found
        .iter()
        .map(|i| {
            format!(
                "{} {} {} {}/{} {} {} {} > {} from {} to {}",
                i["scope"],
                i["host"],
                i["prefix"],
                i["family"],
                i["vector"],
                i["reason"]["kind"],
                i["reason"]["metric"],
                i["reason"]["value"],
                i["reason"]["limit"],
                i["started_at"],
                i["ended_at"]
            )
        })
        .collect()
}

fn one_prefix_incident(how: &str, found: &[Value], prefix: &str, vector: &str, min_hosts: u64) {
    let summary = summary(found);
    assert_eq!(found.len(), 1, "{how}: {summary:?}");
    let i = &found[0];
    assert_eq!(i["scope"], "prefix", "{how}: {i}");
    assert_eq!(i["prefix"], prefix, "{how}: {i}");
    assert!(i["host"].is_null(), "{how}: {i}");
    assert_eq!(i["family"], "amplification", "{how}: {i}");
    assert_eq!(i["vector"], vector, "{how}: {i}");
    let hosts = i["hosts_affected"].as_u64().unwrap();
    assert!(hosts >= min_hosts, "{how}: {hosts} hosts affected: {i}");
    let top = i["top_hosts"].as_array().unwrap();
    assert!(!top.is_empty(), "{how}: {i}");
    // Spread: no destination carries a tenth of it.
    assert!(
        top.iter().all(|t| t["share"].as_f64().unwrap() < 0.1),
        "{how}: {top:?}"
    );
    eprintln!(
        "{how}: {} over {hosts} hosts, detected {} after {}",
        i["prefix"], i["detected_at"], i["started_at"]
    );
}

#[test]
fn dns_reflection_over_a_whole_slash_24_is_one_prefix_incident() {
    let c = config(PREFIX_LIMITS);
    let targets = carpet::addresses("192.0.2.0".parse().unwrap(), 24, 254, 1);
    let s = attacks::merge(vec![
        carpet::spread(
            &Attack {
                family: Family::Amplification(53),
                target: targets[0],
                pps: 120_000,
                start_us: 1_300_000,
                duration_s: 8,
                sources: Sources::Hosts(500),
            },
            &targets,
            11,
        ),
        carpet::web(&targets, 2_000, 11, 12),
    ]);
    for (how, found) in replay_both(&c, &s) {
        one_prefix_incident(how, &found, "192.0.2.0/24", "dns", 200);
        // Within the detection budget of a second and a half of the
        // attack's start (in capture time: the replay is exact).
        let detected = humantime::parse_rfc3339(found[0]["detected_at"].as_str().unwrap())
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let after_ms = (detected - (levee_tools::scenario::T0_US + 1_300_000)) / 1000;
        eprintln!("{how}: detected {after_ms} ms after the attack began");
        assert!(
            after_ms <= 1_500,
            "{how}: detected {after_ms} ms after the attack began"
        );
    }
    // Without prefix thresholds levee judges single hosts only, and each
    // is far under its limit: this is what the prefix limits are for.
    let plain = config("");
    for (how, found) in replay_both(&plain, &s) {
        assert!(found.is_empty(), "{how}: {:#?}", summary(&found));
    }
}

#[test]
fn ntp_reflection_over_a_slash_64_is_one_prefix_incident() {
    let c = config(PREFIX_LIMITS);
    let targets = carpet::addresses("2001:db8:0:7::".parse().unwrap(), 64, 500, 2);
    let s = attacks::merge(vec![
        carpet::spread(
            &Attack {
                family: Family::Amplification(123),
                target: targets[0],
                pps: 100_000,
                start_us: 1_100_000,
                duration_s: 6,
                sources: Sources::Hosts(400),
            },
            &targets,
            21,
        ),
        carpet::web(&targets, 1_000, 9, 22),
    ]);
    for (how, found) in replay_both(&c, &s) {
        one_prefix_incident(how, &found, "2001:db8:0:7::/64", "ntp", 300);
    }
}

#[test]
fn a_reflection_that_moves_between_sub_prefixes_is_one_incident() {
    let c = config(PREFIX_LIMITS);
    let all = carpet::addresses("192.0.2.0".parse().unwrap(), 24, 254, 3);
    let groups: Vec<Vec<IpAddr>> = all.chunks(64).map(<[IpAddr]>::to_vec).collect();
    let s = attacks::merge(vec![
        carpet::moving(
            &Attack {
                family: Family::Amplification(53),
                target: all[0],
                pps: 100_000,
                start_us: 1_000_000,
                duration_s: 12,
                sources: Sources::Hosts(300),
            },
            &groups,
            3,
            31,
        ),
        carpet::web(&all, 1_000, 14, 32),
    ]);
    for (how, found) in replay_both(&c, &s) {
        one_prefix_incident(how, &found, "192.0.2.0/24", "dns", 50);
    }
}

#[test]
fn a_flood_on_one_host_inside_the_prefix_is_that_hosts_incident() {
    let c = config(PREFIX_LIMITS);
    let targets = carpet::addresses("192.0.2.0".parse().unwrap(), 24, 254, 4);
    let victim: IpAddr = "192.0.2.77".parse().unwrap();
    let s = attacks::merge(vec![
        attacks::attack(
            &Attack {
                family: Family::UdpFlood,
                target: victim,
                pps: 90_000,
                start_us: 1_000_000,
                duration_s: 6,
                sources: Sources::Spoofed,
            },
            41,
        ),
        carpet::web(&targets, 2_000, 9, 42),
    ]);
    for (how, found) in replay_both(&c, &s) {
        let scopes = summary(&found);
        assert_eq!(found.len(), 1, "{how}: {scopes:?}");
        assert_eq!(found[0]["scope"], "host", "{how}: {scopes:?}");
        assert_eq!(found[0]["host"], "192.0.2.77", "{how}: {scopes:?}");
        assert_eq!(found[0]["family"], "udp_flood", "{how}");
    }
}

/// Web traffic to a /24 whose rate swings ±50 % from second to second
/// around 100 pps, for `seconds`; then a CDN fill of `fill` pps more to
/// every host for 30 s.
fn surge_after(seconds: u64, fill: u64) -> Scenario {
    let targets = carpet::addresses("192.0.2.0".parse().unwrap(), 24, 254, 5);
    attacks::merge(vec![
        carpet::web_varying(&targets, 100, 0.5, seconds + 60, 51),
        carpet::surge(&targets, fill, seconds * 1_000_000, 30, 59),
    ])
}

/// The prefix's own baseline, learnt over 20 minutes of a busy prefix
/// (its rate never flat), judges a surge to all of its hosts: one within
/// what the prefix does anyway (+40 %) raises nothing; one four times its
/// level does (so the baseline is judging). Static prefix limits are far
/// above; hosts' floors far above any one host's share.
#[test]
fn a_prefix_wide_surge_its_baseline_has_learnt_raises_nothing() {
    let c = config(
        "[hostgroup.prefix_thresholds]\npps = 1000000\n\
         [detection.baseline]\nlearning = \"20m\"\nwindow = \"5m\"\nfloor_pps = 20\nfloor_bps = 1000000\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let learnt = dir.path().join("learnt.pcap");
    surge_after(1300, 40).write_pcap(&learnt).unwrap();
    let found = incidents(&c, learnt);
    assert!(
        found.is_empty(),
        "a fill within the learnt swing: {:#?}",
        summary(&found)
    );
    let bigger = dir.path().join("bigger.pcap");
    surge_after(1300, 300).write_pcap(&bigger).unwrap();
    let found = incidents(&c, bigger);
    assert!(
        found
            .iter()
            .any(|i| i["scope"] == "prefix" && i["reason"]["kind"] == "baseline"),
        "a fill four times the prefix's level: {:#?}",
        summary(&found)
    );
}

/// A carpet over the /24 and, during it, a flood on one of its hosts (over
/// that host's own limit): two incidents — the prefix's and the host's —
/// each naming the other in `linked`, not one merged into the other.
#[test]
fn a_host_flood_during_a_carpet_is_its_own_incident_linked_to_the_prefixs() {
    let c = config(PREFIX_LIMITS);
    let targets = carpet::addresses("192.0.2.0".parse().unwrap(), 24, 254, 7);
    let victim: IpAddr = "192.0.2.77".parse().unwrap();
    let s = attacks::merge(vec![
        carpet::spread(
            &Attack {
                family: Family::Amplification(53),
                target: targets[0],
                pps: 120_000,
                start_us: 1_000_000,
                duration_s: 8,
                sources: Sources::Hosts(500),
            },
            &targets,
            71,
        ),
        attacks::attack(
            &Attack {
                family: Family::UdpFlood,
                target: victim,
                pps: 90_000,
                start_us: 3_000_000,
                duration_s: 4,
                sources: Sources::Spoofed,
            },
            72,
        ),
        carpet::web(&targets, 2_000, 11, 73),
    ]);
    for (how, found) in replay_both(&c, &s) {
        let scopes = summary(&found);
        let prefix: Vec<&Value> = found.iter().filter(|i| i["scope"] == "prefix").collect();
        let host: Vec<&Value> = found
            .iter()
            .filter(|i| i["scope"] == "host" && i["host"] == "192.0.2.77")
            .collect();
        assert_eq!((prefix.len(), host.len()), (1, 1), "{how}: {scopes:#?}");
        let (p, h) = (prefix[0], host[0]);
        assert_eq!(p["prefix"], "192.0.2.0/24", "{how}");
        assert_eq!(h["family"], "udp_flood", "{how}");
        let names = |i: &Value, id: &Value| {
            i["linked"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x == id))
        };
        assert!(
            names(p, &h["id"]),
            "{how}: the prefix's links {}",
            p["linked"]
        );
        assert!(
            names(h, &p["id"]),
            "{how}: the host's links {}",
            h["linked"]
        );
    }
}
