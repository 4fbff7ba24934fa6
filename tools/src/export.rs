//! A scenario as a router would export it: sFlow with 1-in-N sampling of the
//! packets (the raw header of each sampled packet), datagrams timestamped at
//! the sampled packet's time, so replaying the export keeps the timing.

use std::net::IpAddr;

use levee_collectors::encode::packet;
use levee_collectors::encode::sflow::{self as sf, Sample};

use crate::scenario::{Rng, Scenario};

/// One export datagram and when it leaves the router (Unix µs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub time_us: u64,
    pub payload: Vec<u8>,
}

/// sFlow v5 of `scenario`: each packet sampled with probability 1/`rate`
/// (`rate` 1 samples all), 128-byte headers, up to 8 samples per datagram,
/// a datagram sent at least every `flush_us` of capture time.
pub fn sflow(
    scenario: &Scenario,
    agent: IpAddr,
    rate: u32,
    seed: u64,
    flush_us: u64,
) -> Vec<Export> {
    sflow_sampled(scenario, agent, rate, rate, seed, flush_us)
}

/// sFlow v5 of a scenario whose packets are the samples already (made by
/// [`crate::attacks::benign_sampled`]): every packet exported, each declared to
/// stand for `rate` packets. An hour of traffic at 1:4096 is then a few
/// hundred thousand packets to make, not hundreds of millions.
pub fn sflow_presampled(
    scenario: &Scenario,
    agent: IpAddr,
    rate: u32,
    seed: u64,
    flush_us: u64,
) -> Vec<Export> {
    sflow_sampled(scenario, agent, 1, rate, seed, flush_us)
}

/// Samples 1 in `keep` of the scenario's packets, each declared to stand
/// for `rate`.
fn sflow_sampled(
    scenario: &Scenario,
    agent: IpAddr,
    keep: u32,
    rate: u32,
    seed: u64,
    flush_us: u64,
) -> Vec<Export> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut pending: Vec<Sample> = Vec::new();
    let mut first_us = 0u64;
    let mut seq = 0u32;
    let mut sample_seq = 0u32;
    let mut pool = 0u32;
    let mut flush = |pending: &mut Vec<Sample>, at_us: u64, out: &mut Vec<Export>| {
        if pending.is_empty() {
            return;
        }
        seq += 1;
        let mut payload = Vec::new();
        sf::encode(
            &sf::Datagram {
                agent,
                sub_agent: 0,
                seq,
                uptime_ms: (at_us / 1000) as u32,
                samples: std::mem::take(pending),
            },
            &mut payload,
        );
        out.push(Export {
            time_us: at_us,
            payload,
        });
    };
    for p in &scenario.packets {
        pool = pool.wrapping_add(if keep == 1 { rate } else { 1 });
        if !pending.is_empty() && p.time_us >= first_us + flush_us {
            // The agent's timer went off: the datagram left then.
            flush(&mut pending, first_us + flush_us, &mut out);
        }
        if keep > 1 && rng.range(0, u64::from(keep)) != 0 {
            continue;
        }
        let mut header = Vec::new();
        packet::ethernet(&p.spec, 128 - 18, &mut header);
        sample_seq += 1;
        if pending.is_empty() {
            first_us = p.time_us;
        }
        pending.push(Sample::Flow {
            expanded: false,
            seq: sample_seq,
            source_index: 1,
            rate,
            pool,
            drops: 0,
            input: 1,
            output: 2,
            frame_len: u32::from(p.spec.ip_len) + 18,
            header,
        });
        if pending.len() == 8 {
            flush(&mut pending, p.time_us, &mut out);
        }
    }
    let end = scenario.packets.last().map_or(0, |p| p.time_us);
    flush(&mut pending, end, &mut out);
    out
}

/// What an attacker forges to make a collector see a flood: `count` sFlow
/// datagrams, one sample each of a UDP packet to `target`, each claiming
/// to stand for `declared_rate` packets (a sampling rate no router uses,
/// at 100,000). The agent field names `agent`; the datagrams can come from
/// any address.
pub fn forged_sflow(target: IpAddr, agent: IpAddr, count: u32, declared_rate: u32) -> Vec<Vec<u8>> {
    let src: IpAddr = if target.is_ipv4() {
        "203.0.113.66".parse().unwrap_or(target)
    } else {
        "2001:db8:ffff::66".parse().unwrap_or(target)
    };
    (0..count)
        .map(|i| {
            let spec = packet::PacketSpec::udp(src, target, 40_000 + i as u16, 53, 512);
            let mut header = Vec::new();
            packet::ethernet(&spec, 128 - 18, &mut header);
            let mut payload = Vec::new();
            sf::encode(
                &sf::Datagram {
                    agent,
                    sub_agent: 0,
                    seq: i + 1,
                    uptime_ms: 1_000 + i * 50,
                    samples: vec![Sample::Flow {
                        expanded: false,
                        seq: i + 1,
                        source_index: 1,
                        rate: declared_rate,
                        pool: declared_rate.saturating_mul(i + 1),
                        drops: 0,
                        input: 1,
                        output: 2,
                        frame_len: 512 + 18,
                        header,
                    }],
                },
                &mut payload,
            );
            payload
        })
        .collect()
}
