//! Realistic datagrams for benchmarks, allocation tests and the load tool:
//! what a busy border router sends.

use std::net::{IpAddr, Ipv4Addr};

use super::netflow::{self as nf, Field, Set, Template, Value};
use super::packet::{self as pkt, PacketSpec};
use super::sflow as sf;

/// The IPv4 template most routers export (Cisco/Juniper-like, 18 fields, 51 bytes).
pub fn ipv4_template(id: u16) -> Template {
    let f = Field::new;
    Template {
        id,
        scope_fields: 0,
        fields: vec![
            f(8, 4),
            f(12, 4),
            f(15, 4),
            f(7, 2),
            f(11, 2),
            f(4, 1),
            f(6, 1),
            f(5, 1),
            f(10, 4),
            f(14, 4),
            f(2, 4),
            f(1, 4),
            f(152, 8),
            f(153, 8),
            f(61, 1),
            f(16, 2),
            f(17, 2),
            f(89, 1),
        ],
    }
}

fn ipv4_values(i: u32, export_ms: u64) -> Vec<Value> {
    let src = Ipv4Addr::from(0xc633_6400 + (i * 7919) % 65_536);
    let dst = Ipv4Addr::from(0xc000_0200 + i % 256);
    vec![
        Value::Bytes(src.octets().to_vec()),
        Value::Bytes(dst.octets().to_vec()),
        Value::Bytes(vec![10, 0, 0, 1]),
        Value::Uint(u64::from(1024 + i % 60_000)),
        Value::Uint(if i.is_multiple_of(3) { 53 } else { 443 }),
        Value::Uint(if i.is_multiple_of(3) { 17 } else { 6 }),
        Value::Uint(0x18),
        Value::Uint(0),
        Value::Uint(3),
        Value::Uint(7),
        Value::Uint(u64::from(10 + i % 100)),
        Value::Uint(u64::from(1500 * (10 + i % 100))),
        Value::Uint(export_ms.saturating_sub(60_000)),
        Value::Uint(export_ms.saturating_sub(1_000)),
        Value::Uint(0),
        Value::Uint(64_512),
        Value::Uint(64_513),
        Value::Uint(0),
    ]
}

/// An IPFIX message with `records` data records of [`ipv4_template`], and
/// (separately) the template message that must be seen first.
pub fn ipfix(records: u32) -> (Vec<u8>, Vec<u8>) {
    let t = ipv4_template(256);
    let export_s = 1_700_000_000u32;
    let mut template = Vec::new();
    nf::ipfix(
        export_s,
        0,
        1,
        &[Set::Templates(vec![t.clone()])],
        &mut template,
    );
    let recs = (0..records)
        .map(|i| ipv4_values(i, u64::from(export_s) * 1000))
        .collect();
    let mut data = Vec::new();
    nf::ipfix(
        export_s,
        0,
        1,
        &[Set::Data {
            template: t,
            records: recs,
        }],
        &mut data,
    );
    (template, data)
}

/// The same for NetFlow v9.
pub fn netflow9(records: u32) -> (Vec<u8>, Vec<u8>) {
    let mut t = ipv4_template(256);
    // NetFlow v9 routers send uptime-relative times (LAST/FIRST_SWITCHED).
    t.fields[12] = Field::new(22, 4);
    t.fields[13] = Field::new(21, 4);
    let export_s = 1_700_000_000u32;
    let mut template = Vec::new();
    nf::v9(
        3_600_000,
        export_s,
        0,
        1,
        &[Set::Templates(vec![t.clone()])],
        &mut template,
    );
    let recs = (0..records)
        .map(|i| {
            let mut v = ipv4_values(i, 0);
            v[12] = Value::Uint(3_540_000);
            v[13] = Value::Uint(3_599_000);
            v
        })
        .collect();
    let mut data = Vec::new();
    nf::v9(
        3_600_000,
        export_s,
        1,
        1,
        &[Set::Data {
            template: t,
            records: recs,
        }],
        &mut data,
    );
    (template, data)
}

/// A NetFlow v5 datagram with `records` records (at most 30 by the format).
pub fn netflow5(records: u32) -> Vec<u8> {
    let recs: Vec<nf::V5Record> = (0..records)
        .map(|i| nf::V5Record {
            src: Ipv4Addr::from(0xc633_6400 + (i * 7919) % 65_536),
            dst: Ipv4Addr::from(0xc000_0200 + i % 256),
            next_hop: Ipv4Addr::new(10, 0, 0, 1),
            input: 3,
            output: 7,
            packets: 10 + i % 100,
            octets: 1500 * (10 + i % 100),
            first: 3_540_000,
            last: 3_599_000,
            src_port: (1024 + i % 60_000) as u16,
            dst_port: if i.is_multiple_of(3) { 53 } else { 443 },
            tcp_flags: 0x18,
            protocol: if i.is_multiple_of(3) { 17 } else { 6 },
            tos: 0,
        })
        .collect();
    let mut out = Vec::new();
    let h = nf::V5Header {
        uptime_ms: 3_600_000,
        unix_secs: 1_700_000_000,
        unix_nsecs: 0,
        seq: 0,
        engine_type: 0,
        engine_id: 0,
        sampling: 0x4000 | 1000,
    };
    nf::v5(&h, &recs, &mut out);
    out
}

/// An sFlow datagram with `samples` flow samples, each a 128-byte raw
/// Ethernet/IPv4/TCP-or-UDP header.
pub fn sflow(samples: u32) -> Vec<u8> {
    let samples = (0..samples)
        .map(|i| {
            let src = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + (i * 7919) % 65_536));
            let dst = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i % 256));
            let p = if i.is_multiple_of(3) {
                PacketSpec::udp(src, dst, 53, (1024 + i) as u16, 512)
            } else {
                PacketSpec {
                    ip_len: 1500,
                    ..PacketSpec::tcp(src, dst, (1024 + i) as u16, 443)
                }
            };
            let mut header = Vec::new();
            pkt::ethernet(
                &PacketSpec {
                    vlan: Some(100),
                    ..p
                },
                128 - 18,
                &mut header,
            );
            sf::Sample::Flow {
                expanded: false,
                seq: i,
                source_index: 3,
                rate: 4096,
                pool: 4096 * (i + 1),
                drops: 0,
                input: 3,
                output: 7,
                frame_len: u32::from(p.ip_len) + 22,
                header,
            }
        })
        .collect();
    let mut out = Vec::new();
    sf::encode(
        &sf::Datagram {
            agent: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            sub_agent: 0,
            seq: 1,
            uptime_ms: 3_600_000,
            samples,
        },
        &mut out,
    );
    out
}
