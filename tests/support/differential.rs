//! The comparison behind the differential test and fuzz target: the flows
//! levee decodes from NetFlow v9/IPFIX messages, and the flows netgauze
//! decodes from the same messages, reduced to the fields both carry.
//!
//! Shared by `tests/differential.rs` and `fuzz/fuzz_targets/differential.rs`
//! (included by path), so both compare by the same rules.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use levee_collectors::exporter::Exporter;
use levee_collectors::record::proto;
use levee_collectors::{Datagram, FlowRecord};
use netgauze_flow_pkt::ie::Field as NgField;
use netgauze_flow_pkt::{ipfix, netflow};
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;

/// The fields both decoders must agree on.
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub packets: u64,
    pub octets: u64,
    pub in_if: u32,
    pub out_if: u32,
    pub ttl: Option<u8>,
}

pub fn from_levee(r: &FlowRecord) -> Flow {
    let rate = u64::from(r.sampling.max(1));
    let (src_port, dst_port) = if matches!(r.protocol, proto::ICMP | proto::ICMPV6) {
        // levee moves ICMP type/code out of the ports; put them back as
        // exporters (and netgauze) carry them.
        (0, u16::from(r.icmp_type) << 8 | u16::from(r.icmp_code))
    } else {
        (r.src_port, r.dst_port)
    };
    Flow {
        src: Some(r.src.ip()),
        dst: Some(r.dst.ip()),
        protocol: r.protocol,
        src_port,
        dst_port,
        tcp_flags: r.tcp_flags,
        packets: r.packets / rate,
        octets: r.bytes / rate,
        in_if: r.in_if,
        out_if: r.out_if,
        ttl: r.ttl(),
    }
}

/// A flow from netgauze's fields, or None when it is not an IP flow (levee
/// emits no record then) or carries counters levee reads from elsewhere.
/// As levee does, the last of a repeated element wins (the inner header's).
pub fn from_netgauze(fields: &[NgField]) -> Option<Flow> {
    let mut f = Flow::default();
    let (mut s4, mut d4, mut s6, mut d6) = (None, None, None, None);
    let (mut octets, mut packets) = (None, None);
    let (mut icmp4, mut icmp6) = (None, None);
    for field in fields {
        match field {
            NgField::sourceIPv4Address(a) => s4 = Some(*a),
            NgField::destinationIPv4Address(a) => d4 = Some(*a),
            NgField::sourceIPv6Address(a) => s6 = Some(*a),
            NgField::destinationIPv6Address(a) => d6 = Some(*a),
            NgField::protocolIdentifier(p) => f.protocol = u8::from(*p),
            NgField::sourceTransportPort(p) => f.src_port = *p,
            NgField::destinationTransportPort(p) => f.dst_port = *p,
            NgField::tcpControlBits(b) => f.tcp_flags = u8::from(*b),
            NgField::packetDeltaCount(n) => packets = Some(*n),
            NgField::octetDeltaCount(n) => octets = Some(*n),
            NgField::ingressInterface(i) => f.in_if = *i,
            NgField::egressInterface(i) => f.out_if = *i,
            NgField::ipTTL(t) => f.ttl = Some(*t),
            // levee falls back to the minimum TTL when ipTTL is not sent.
            NgField::minimumTTL(t) if f.ttl.is_none() => f.ttl = Some(*t),
            NgField::icmpTypeCodeIPv4(tc) => icmp4 = Some(*tc),
            NgField::icmpTypeCodeIPv6(tc) => icmp6 = Some(*tc),
            _ => {}
        }
    }
    // Addresses come as a pair of one family; a record of a dual-family
    // template with an all-zero IPv4 pair is IPv6.
    let v4_pair = s4.zip(d4);
    let v6_pair = s6.zip(d6);
    match (v4_pair, v6_pair) {
        (Some((s, d)), v6) if !(v6.is_some() && s.is_unspecified() && d.is_unspecified()) => {
            (f.src, f.dst) = (Some(IpAddr::V4(s)), Some(IpAddr::V4(d)));
        }
        (_, Some((s, d))) => (f.src, f.dst) = (Some(IpAddr::V6(s)), Some(IpAddr::V6(d))),
        _ => return None,
    }
    f.packets = packets?;
    f.octets = octets?;
    if matches!(f.protocol, proto::ICMP | proto::ICMPV6) {
        let v6 = f.src.is_some_and(|a| a.is_ipv6());
        if let Some(tc) = if v6 { icmp6 } else { icmp4 } {
            f.dst_port = tc;
        }
        f.src_port = 0;
    }
    Some(f)
}

/// levee's flows for `messages` (one exporter's stream, in order).
pub fn levee_flows(messages: &[Vec<u8>]) -> Vec<Flow> {
    let mut e = Exporter::default();
    let mut out = Vec::new();
    for m in messages {
        let _ = e.decode(
            &Datagram {
                data: m,
                source: IpAddr::V4(Ipv4Addr::LOCALHOST),
                received_ms: 0,
            },
            &mut out,
        );
    }
    let mut flows: Vec<Flow> = out.iter().map(from_levee).collect();
    flows.sort();
    flows
}

/// netgauze's flows, and the messages it parsed (it refuses some messages of
/// real exporters outright; levee is then compared on the others only).
pub fn netgauze_flows(version: u16, messages: &[Vec<u8>]) -> (Vec<Flow>, Vec<Vec<u8>>) {
    let mut flows = Vec::new();
    let mut parsed = Vec::new();
    let mut t9 = HashMap::new();
    let mut t10 = HashMap::new();
    for m in messages {
        let records: Vec<Flow> = match version {
            9 => {
                let Ok(p) = netflow::NetFlowV9Packet::parse(&mut SliceReader::new(m), &mut t9)
                else {
                    continue;
                };
                p.sets()
                    .iter()
                    .filter_map(|set| match set {
                        netflow::Set::Data { records, .. } => {
                            Some(records.iter().filter_map(|r| from_netgauze(r.fields())))
                        }
                        _ => None,
                    })
                    .flatten()
                    .collect()
            }
            _ => {
                let Ok(p) = ipfix::IpfixPacket::parse(&mut SliceReader::new(m), &mut t10) else {
                    continue;
                };
                p.sets()
                    .iter()
                    .filter_map(|set| match set {
                        ipfix::Set::Data { records, .. } => {
                            Some(records.iter().filter_map(|r| from_netgauze(r.fields())))
                        }
                        _ => None,
                    })
                    .flatten()
                    .collect()
            }
        };
        flows.extend(records);
        parsed.push(m.clone());
    }
    flows.sort();
    (flows, parsed)
}
