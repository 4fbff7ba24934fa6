//! Sound statistics at the sampling rates routers really use: every
//! scenario exported as sFlow at 1:1, 1:100, 1:1000 and 1:4096 (an agent
//! that flushes a datagram at 8 samples or after a second), through
//! `levee replay`'s path.
//!
//! - Benign traffic, a flash crowd among it, raises nothing at any rate —
//!   over a simulated hour at each sampled rate (made as samples directly:
//!   an hour of it unsampled is 200 million packets).
//! - Every attack at four times the threshold is detected within the bound
//!   docs/detection.md gives for its rate, and named right.

mod common;
use common::replay::{config, incidents, write_exports};

use std::net::{IpAddr, Ipv4Addr};

use levee::config;
use levee_tools::attacks::{self, Attack, Family, Sources};
use levee_tools::export::{self, Export};
use levee_tools::scenario::{Scenario, T0_US};
use serde_json::Value;

const V4: &str = "192.0.2.10";
const V6: &str = "2001:db8::10";

fn replay(c: &config::Config, exports: &[Export]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    incidents(c, write_exports(exports, dir.path()))
}

fn agent() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
}

#[test]
fn benign_traffic_raises_nothing_at_any_sampling_rate() {
    // The default limits: 50 kpps, 200 Mbit/s per host. The benign mix
    // has a web server, a bulk transfer, a resolver and a flash crowd of
    // 35 kpps on one host.
    let c = config("");
    let (v4, v6) = (V4.parse().unwrap(), V6.parse().unwrap());
    // Unsampled: a minute of every packet.
    let minute = attacks::benign(v4, v6, 60, 21);
    let at1 = export::sflow(&minute, agent(), 1, 1, 1_000_000);
    let found = replay(&c, &at1);
    assert!(found.is_empty(), "1:1: {found:?}");
    // Sampled: an hour each.
    for rate in [100, 1000, 4096] {
        let hour = attacks::benign_sampled(v4, v6, 3600, rate, 22 + u64::from(rate));
        let exports = export::sflow_presampled(&hour, agent(), rate, 3, 1_000_000);
        let found = replay(&c, &exports);
        assert!(
            found.is_empty(),
            "1:{rate}: {} false incidents, the first {}",
            found.len(),
            found[0]
        );
        eprintln!(
            "1:{rate}: an hour of benign traffic ({} samples), no incident",
            hour.packets.len()
        );
    }
}

/// The detection bound: the ms after the first attack packet by which an
/// attack at `k` times a 5,000 pps limit is detected at 1 in `n` sampling
/// (docs/detection.md's average, with the second boundaries and the spread
/// of sparse samples).
fn bound_ms(n: u32, k: u64) -> i64 {
    match (n, k) {
        (1 | 100, _) => 1_500,
        (1000, 4) => 3_000,
        (4096, 4) => 10_000,
        _ => 30_000,
    }
}

#[test]
fn attacks_at_four_times_the_limit_are_found_and_named_at_every_rate() {
    let c = config("[hostgroup.thresholds]\npps = 5000\n");
    let mut failures = Vec::new();
    let mut table = Vec::new();
    let families = [
        Family::SynFlood,
        Family::SynAck,
        Family::AckFlood,
        Family::UdpFlood,
        Family::IcmpFlood,
        Family::Amplification(123),
        Family::Amplification(11211),
        Family::FragmentFlood,
        Family::ProtocolFlood(47),
    ];
    for (i, family) in families.into_iter().enumerate() {
        let target: IpAddr = if i % 3 == 2 { V6 } else { V4 }.parse().unwrap();
        let attack = attacks::attack(
            &Attack {
                family,
                target,
                pps: 20_000,
                start_us: 700_000,
                duration_s: 12,
                sources: match family {
                    Family::Amplification(_) | Family::SynAck => Sources::Hosts(300),
                    _ => Sources::Spoofed,
                },
            },
            40 + i as u64,
        );
        let first_ms = (attack.packets[0].time_us / 1000) as i64;
        let all: Scenario =
            attacks::merge(vec![attack, attacks::background(target, 14, 60 + i as u64)]);
        for rate in [1u32, 100, 1000, 4096] {
            let exports = export::sflow(&all, agent(), rate, 80 + i as u64, 1_000_000);
            let found = replay(&c, &exports);
            let case = format!("{family:?} on {target} at 1:{rate}");
            let [inc] = found.as_slice() else {
                failures.push(format!("{case}: {} incidents", found.len()));
                continue;
            };
            let (want, vector) = family.expected();
            if inc["family"] != want || inc["vector"].as_str() != vector {
                failures.push(format!(
                    "{case}: named {} / {}",
                    inc["family"], inc["vector"]
                ));
            }
            let detected = humantime::parse_rfc3339(inc["detected_at"].as_str().unwrap())
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let delay = detected - first_ms;
            if delay > bound_ms(rate, 4) {
                failures.push(format!("{case}: detected after {delay} ms"));
            }
            table.push(format!(
                "{case:45} detected after {delay:5} ms, {} {}",
                inc["family"], inc["confidence"]
            ));
        }
    }
    for row in &table {
        eprintln!("{row}");
    }
    assert!(
        failures.is_empty(),
        "{} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let _ = T0_US;
}
