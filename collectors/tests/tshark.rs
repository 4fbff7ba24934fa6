//! Cross-check against an independent decoder: for real captures, the flows
//! levee decodes carry the same addresses, ports, protocol, packet and byte
//! counts as tshark's dissection (`tshark -T json`) of the same bytes.
//!
//! tshark does not apply sampling, so levee's counts are divided by the
//! record's sampling rate before comparing. Flows are compared as multisets.
//!
//! The captures are the corpus beside the clone (`../shared/captures`), so
//! these tests are `#[ignore]`d: `make test-corpus` runs them.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use common::corpus;
use levee_collectors::record::proto;
use serde_json::Value;

/// (src, dst, protocol, src port, dst port, packets, octets)
type Key = (IpAddr, IpAddr, u8, u16, u16, u64, u64);

fn key(
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    sport: u16,
    dport: u16,
    packets: u64,
    octets: u64,
) -> Key {
    // ICMP "ports" are type/code in both decoders' own ways; compare L4 ports for TCP/UDP only.
    let ports = matches!(protocol, proto::TCP | proto::UDP);
    (
        src,
        dst,
        protocol,
        if ports { sport } else { 0 },
        if ports { dport } else { 0 },
        packets,
        octets,
    )
}

fn levee_flows(file: &Path) -> BTreeMap<Key, usize> {
    let out = common::replay(file).flows;
    let mut m = BTreeMap::new();
    for r in out {
        let rate = u64::from(r.sampling.max(1));
        let k = key(
            r.src.ip(),
            r.dst.ip(),
            r.protocol,
            r.src_port,
            r.dst_port,
            r.packets / rate,
            r.bytes / rate,
        );
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// Every object in tshark's tree that is one flow record.
fn collect(v: &Value, out: &mut Vec<serde_json::Map<String, Value>>) {
    match v {
        Value::Object(o) => {
            if o.contains_key("cflow.srcaddr") || o.contains_key("cflow.srcaddrv6") {
                out.push(o.clone());
            }
            for child in o.values() {
                collect(child, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect(c, out)),
        _ => {}
    }
}

fn tshark_flows(file: &Path, port: u16) -> BTreeMap<Key, usize> {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(file)
        .args(["-d", &format!("udp.port=={port},cflow"), "-T", "json"])
        .output()
        .expect("tshark runs (scripts/install-deps --test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut records = Vec::new();
    collect(&json, &mut records);
    let s = |o: &serde_json::Map<String, Value>, k: &str| {
        o.get(k).and_then(Value::as_str).map(str::to_owned)
    };
    let n =
        |o: &serde_json::Map<String, Value>, k: &str| s(o, k).and_then(|v| v.parse::<u64>().ok());
    let mut m = BTreeMap::new();
    for o in records {
        let src: IpAddr = s(&o, "cflow.srcaddr")
            .or_else(|| s(&o, "cflow.srcaddrv6"))
            .unwrap()
            .parse()
            .unwrap();
        let dst: IpAddr = s(&o, "cflow.dstaddr")
            .or_else(|| s(&o, "cflow.dstaddrv6"))
            .unwrap()
            .parse()
            .unwrap();
        let k = key(
            src,
            dst,
            n(&o, "cflow.protocol").unwrap_or(0) as u8,
            n(&o, "cflow.srcport").unwrap_or(0) as u16,
            n(&o, "cflow.dstport").unwrap_or(0) as u16,
            n(&o, "cflow.packets").unwrap_or(0),
            n(&o, "cflow.octets").unwrap_or(0),
        );
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

#[test]
#[ignore = "needs the capture corpus (../shared/captures or LEVEE_CAPTURES): run `make test-corpus`"]
fn netflow_and_ipfix_flows_match_tshark() {
    // Captures whose flows carry plain delta counters (tshark shows totals
    // and vendor counters under other names) and no biflows.
    let cases = [
        ("netflow5/softflowd_netflow5.pcap", 2055),
        ("netflow5/juniper-mx80_netflow5.pcap", 2055),
        ("netflow9/softflowd_nfv9.pcap", 2055),
        ("netflow9/cisco-asr9k-xr_nfv9.pcap", 9991),
        ("netflow9/cisco-1941k9_nfv9.pcap", 2055),
        ("netflow9/cisco-asr1001x_nfv9.pcap", 2055),
        (
            "netflow9/huawei-ce8851_netstream-sampling-in-data.pcap",
            8096,
        ),
        ("netflow9/ubiquiti-edgerouter_nfv9-mpls.pcap", 2055),
        ("ipfix/cisco-asr9k-xr752_ipfix.pcap", 9991),
        ("ipfix/cisco-iosxr_ipfix-ipv6-transport.pcap", 9991),
        ("ipfix/mikrotik-routeros6392_ipfix.pcap", 4739),
        ("ipfix/openbsd-pflow_ipfix.pcap", 4739),
        ("ipfix/softflowd_ipfix.pcap", 4739),
    ];
    for (file, port) in cases {
        let path = corpus().join(file);
        let ours = levee_flows(&path);
        let theirs = tshark_flows(&path, port);
        assert!(!theirs.is_empty(), "{file}: tshark found no flows");
        assert_eq!(ours, theirs, "{file}: levee and tshark disagree");
    }
}

/// The first IPv4/IPv6 header object in a tshark subtree, breadth first (the
/// outer header of the sampled packet, not one tunnelled inside it).
fn first_ip(v: &Value) -> Option<(IpAddr, IpAddr, u8, u64)> {
    let mut queue = std::collections::VecDeque::from([v]);
    while let Some(v) = queue.pop_front() {
        match v {
            Value::Object(o) => {
                let s = |k: &str| o.get(k).and_then(Value::as_str);
                if let (Some(src), Some(dst), Some(p), Some(len)) =
                    (s("ip.src"), s("ip.dst"), s("ip.proto"), s("ip.len"))
                {
                    return Some((
                        src.parse().ok()?,
                        dst.parse().ok()?,
                        p.parse().ok()?,
                        len.parse().ok()?,
                    ));
                }
                if let (Some(src), Some(dst), Some(p), Some(len)) =
                    (s("ipv6.src"), s("ipv6.dst"), s("ipv6.nxt"), s("ipv6.plen"))
                {
                    // Through the extension headers to the upper-layer protocol, as levee does.
                    let mut p: u8 = p.parse().ok()?;
                    if matches!(p, 0 | 43 | 44 | 51 | 60) {
                        p = nested_nxt(v).unwrap_or(p);
                    }
                    return Some((
                        src.parse().ok()?,
                        dst.parse().ok()?,
                        p,
                        len.parse::<u64>().ok()? + 40,
                    ));
                }
                queue.extend(o.values());
            }
            Value::Array(a) => queue.extend(a.iter()),
            _ => {}
        }
    }
    None
}

/// The first `*.nxt` inside extension-header objects that is not itself an
/// extension header.
fn nested_nxt(v: &Value) -> Option<u8> {
    match v {
        Value::Object(o) => o.iter().find_map(|(k, child)| {
            let here = (k.starts_with("ipv6.") && k.ends_with(".nxt") && k != "ipv6.nxt")
                .then(|| child.as_str()?.parse::<u8>().ok())
                .flatten()
                .filter(|p| !matches!(p, 0 | 43 | 44 | 51 | 60));
            here.or_else(|| nested_nxt(child))
        }),
        Value::Array(a) => a.iter().find_map(nested_nxt),
        _ => None,
    }
}

fn tshark_samples(file: &Path) -> BTreeMap<(IpAddr, IpAddr, u8, u64), usize> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-T", "json"])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut m = BTreeMap::new();
    fn samples<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    if k.starts_with("Flow sample") || k.starts_with("Expanded flow sample") {
                        out.push(child);
                    } else {
                        samples(child, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| samples(c, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    samples(&json, &mut found);
    for s in found {
        if let Some(k) = first_ip(s) {
            *m.entry(k).or_insert(0) += 1;
        }
    }
    m
}

#[test]
#[ignore = "needs the capture corpus (../shared/captures or LEVEE_CAPTURES): run `make test-corpus`"]
fn sflow_samples_match_tshark() {
    let cases = [
        "sflow/akvorado_sflow-5-flow-samples.pcap",
        "sflow/akvorado_sflow-expanded-flow.pcap",
        "sflow/akvorado_sflow-icmpv4.pcap",
        "sflow/akvorado_sflow-icmpv6.pcap",
        "sflow/akvorado_sflow-qinq.pcap",
        "sflow/lcs_sflow-flow-eth-vlan.pcap",
        "sflow/lcs_sflow-flow.pcap",
        "sflow/lcs_sflow-expanded-lag-counters.pcap",
        "sflow/tcpdump_sflow-ipv6-agent.pcap",
        "sflow/telegraf_sflow-issue15918.pcap",
    ];
    for file in cases {
        let path = corpus().join(file);
        let theirs = tshark_samples(&path);
        let ours: BTreeMap<(IpAddr, IpAddr, u8, u64), usize> = levee_flows(&path).into_iter().fold(
            BTreeMap::new(),
            |mut m, ((s, d, p, _, _, _, bytes), n)| {
                *m.entry((s, d, p, bytes)).or_insert(0) += n;
                m
            },
        );
        assert!(!theirs.is_empty(), "{file}: tshark found no samples");
        assert_eq!(ours, theirs, "{file}: levee and tshark disagree");
    }
}
