//! decode(encode(x)) keeps every field levee carries, for every format, over
//! random inputs (proptest).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use levee_collectors::encode::{netflow as enc_nf, packet as enc_pkt, sflow as enc_sf};
use levee_collectors::exporter::Exporter;
use levee_collectors::record::{flags, proto};
use levee_collectors::{Addr, Datagram, FlowRecord};
use proptest::prelude::*;

fn decode_one(bytes: &[u8], source: IpAddr, now_ms: u64) -> (Exporter, Vec<FlowRecord>) {
    let mut e = Exporter::default();
    let mut out = Vec::new();
    let dg = Datagram {
        data: bytes,
        source,
        received_ms: now_ms,
    };
    e.decode(&dg, &mut out)
        .unwrap_or_else(|err| panic!("{err}"));
    (e, out)
}

fn ip_strategy() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
    ]
}

prop_compose! {
    fn packet_strategy()(
        (src, dst) in ip_strategy(),
        protocol in prop_oneof![Just(proto::TCP), Just(proto::UDP), Just(proto::ICMP), Just(proto::GRE)],
        src_port in any::<u16>(), dst_port in any::<u16>(), tcp_flags in any::<u8>(), ttl in 1u8..,
        ip_len in 64u16..9000, icmp_type in any::<u8>(), icmp_code in any::<u8>(),
        fragment in prop_oneof![Just(None), (0u16..100, any::<bool>()).prop_map(Some)],
        vlan in prop_oneof![Just(None), (1u16..4095).prop_map(Some)],
    ) -> enc_pkt::PacketSpec {
        let protocol = if protocol == proto::ICMP && src.is_ipv6() { proto::ICMPV6 } else { protocol };
        enc_pkt::PacketSpec { src, dst, protocol, src_port, dst_port, tcp_flags, ttl, ip_len, icmp_type, icmp_code, fragment, vlan, ident: 7, ext_headers: 0 }
    }
}

/// What a decoded record must say about a packet sampled at `rate`.
fn expect_packet(r: &FlowRecord, p: &enc_pkt::PacketSpec, rate: u32) {
    assert_eq!(r.src, Addr::from(p.src));
    assert_eq!(r.dst, Addr::from(p.dst));
    assert_eq!(r.protocol, p.protocol);
    assert_eq!(r.packets, u64::from(rate));
    assert_eq!(r.bytes, u64::from(p.ip_len) * u64::from(rate));
    assert_eq!(r.sampling, rate);
    assert_eq!(r.ttl(), Some(p.ttl));
    assert_eq!(r.is_ipv6(), p.src.is_ipv6());
    let later = matches!(p.fragment, Some((off, _)) if off > 0);
    assert_eq!(
        r.is_fragment(),
        matches!(p.fragment, Some((off, more)) if off > 0 || more)
    );
    assert_eq!(r.flags & flags::LATER_FRAGMENT != 0, later);
    if later {
        assert_eq!((r.src_port, r.dst_port), (0, 0));
        return;
    }
    match p.protocol {
        proto::TCP => assert_eq!(
            (r.src_port, r.dst_port, r.tcp_flags),
            (p.src_port, p.dst_port, p.tcp_flags)
        ),
        proto::UDP => assert_eq!((r.src_port, r.dst_port), (p.src_port, p.dst_port)),
        proto::ICMP | proto::ICMPV6 => {
            assert_eq!((r.icmp_type, r.icmp_code), (p.icmp_type, p.icmp_code))
        }
        _ => assert_eq!((r.src_port, r.dst_port), (0, 0)),
    }
}

proptest! {
    #[test]
    fn sflow_flow_samples_round_trip(
        packets in prop::collection::vec(packet_strategy(), 1..10),
        rate in 1u32..100_000,
        expanded in any::<bool>(),
        snap in 64usize..256,
        agent in any::<u32>(),
        input in 0u32..1 << 30, output in 0u32..1 << 30,
    ) {
        let samples = packets.iter().enumerate().map(|(i, p)| {
            let mut header = Vec::new();
            enc_pkt::ethernet(p, snap, &mut header);
            enc_sf::Sample::Flow {
                expanded, seq: i as u32, source_index: 3, rate, pool: rate * (i as u32 + 1), drops: 0,
                input, output, frame_len: u32::from(p.ip_len) + 18, header,
            }
        }).collect();
        let agent = IpAddr::V4(Ipv4Addr::from(agent));
        let d = enc_sf::Datagram { agent, sub_agent: 0, seq: 1, uptime_ms: 1000, samples };
        let mut bytes = Vec::new();
        enc_sf::encode(&d, &mut bytes);
        let (e, out) = decode_one(&bytes, "127.0.0.1".parse().unwrap(), 5_000);
        prop_assert_eq!(out.len(), packets.len());
        prop_assert_eq!(e.counters().records[0], packets.len() as u64);
        for (r, p) in out.iter().zip(&packets) {
            expect_packet(r, p, rate);
            prop_assert_eq!(r.exporter, Addr::from(agent));
            prop_assert_eq!((r.in_if, r.out_if), (if input == 0x3fff_ffff { 0 } else { input }, if output == 0x3fff_ffff { 0 } else { output }));
            prop_assert_eq!(r.time_ms, 5_000);
        }
    }

    #[test]
    fn netflow5_round_trips(
        recs in prop::collection::vec((any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>(),
                                       any::<u16>(), any::<u16>(), any::<u8>(), prop_oneof![Just(6u8), Just(17), Just(1), Just(47)],
                                       0u32..100_000), 1..30),
        sampling in 0u16..0x3fff,
        mode in 0u16..3,
    ) {
        let uptime = 1_000_000u32;
        let records: Vec<enc_nf::V5Record> = recs.iter().map(|r| enc_nf::V5Record {
            src: Ipv4Addr::from(r.0), dst: Ipv4Addr::from(r.1), next_hop: Ipv4Addr::UNSPECIFIED,
            input: r.2, output: r.3, packets: r.4, octets: r.5, first: uptime - r.10 - 10, last: uptime - r.10,
            src_port: r.6, dst_port: r.7, tcp_flags: r.8, protocol: r.9, tos: 0,
        }).collect();
        let h = enc_nf::V5Header { uptime_ms: uptime, unix_secs: 1_700_000_000, unix_nsecs: 500_000_000, seq: 7,
                                  engine_type: 0, engine_id: 0, sampling: (mode << 14) | sampling };
        let mut bytes = Vec::new();
        enc_nf::v5(&h, &records, &mut bytes);
        let (_, out) = decode_one(&bytes, "192.0.2.9".parse().unwrap(), 1_700_000_000_500);
        prop_assert_eq!(out.len(), records.len());
        let rate = u64::from(sampling.max(1));
        for (d, r) in out.iter().zip(&records) {
            prop_assert_eq!(d.src, Addr::v4(r.src.octets()));
            prop_assert_eq!(d.dst, Addr::v4(r.dst.octets()));
            prop_assert_eq!(d.packets, u64::from(r.packets) * rate);
            prop_assert_eq!(d.bytes, u64::from(r.octets) * rate);
            prop_assert_eq!((d.in_if, d.out_if), (u32::from(r.input), u32::from(r.output)));
            prop_assert_eq!(d.protocol, r.protocol);
            prop_assert_eq!(d.time_ms, 1_700_000_000_500 - u64::from(uptime - r.last));
            prop_assert_eq!(d.duration_s, 0, "first = last - 10 ms");
            if r.protocol == proto::ICMP {
                prop_assert_eq!((d.icmp_type, d.icmp_code), ((r.dst_port >> 8) as u8, r.dst_port as u8));
            } else {
                prop_assert_eq!((d.src_port, d.dst_port, d.tcp_flags), (r.src_port, r.dst_port, r.tcp_flags));
            }
            prop_assert_eq!(d.exporter, Addr::v4([192, 0, 2, 9]));
        }
    }
}

#[test]
fn sflow_counter_samples_are_kept_per_agent_and_interface() {
    let counters = levee_collectors::sflow::IfCounters {
        if_type: 6,
        speed: 10_000_000_000,
        in_octets: 123_456_789,
        in_packets: 1000,
        out_octets: 987_654_321,
        out_packets: 2000,
        in_discards: 1,
        in_errors: 2,
        out_discards: 3,
        out_errors: 4,
        at_ms: 0,
    };
    let agent: IpAddr = "10.0.0.1".parse().unwrap();
    let d = enc_sf::Datagram {
        agent,
        sub_agent: 0,
        seq: 1,
        uptime_ms: 0,
        samples: vec![enc_sf::Sample::Counters {
            seq: 1,
            if_index: 42,
            counters,
        }],
    };
    let mut bytes = Vec::new();
    enc_sf::encode(&d, &mut bytes);
    let (e, out) = decode_one(&bytes, agent, 77);
    assert!(out.is_empty());
    let got = e
        .sflow
        .interface(Addr::from(agent), 42)
        .expect("counters kept");
    assert_eq!(
        *got,
        levee_collectors::sflow::IfCounters {
            at_ms: 77,
            ..counters
        }
    );
}

#[test]
fn sequence_gaps_count_lost_datagrams_and_flows() {
    let agent: IpAddr = "10.0.0.1".parse().unwrap();
    let mut e = Exporter::default();
    let mut out = Vec::new();
    for seq in [1u32, 2, 5, 6] {
        let d = enc_sf::Datagram {
            agent,
            sub_agent: 0,
            seq,
            uptime_ms: 0,
            samples: vec![],
        };
        let mut bytes = Vec::new();
        enc_sf::encode(&d, &mut bytes);
        e.decode(
            &Datagram {
                data: &bytes,
                source: agent,
                received_ms: 0,
            },
            &mut out,
        )
        .unwrap();
    }
    assert_eq!(e.counters().lost, 2);

    let mut e = Exporter::default();
    let rec = enc_nf::V5Record {
        src: Ipv4Addr::LOCALHOST,
        dst: Ipv4Addr::LOCALHOST,
        next_hop: Ipv4Addr::UNSPECIFIED,
        input: 0,
        output: 0,
        packets: 1,
        octets: 40,
        first: 0,
        last: 0,
        src_port: 1,
        dst_port: 2,
        tcp_flags: 0,
        protocol: 6,
        tos: 0,
    };
    // 10 flows at seq 0, then seq 10 (fine), then seq 50: 30 flows lost.
    for seq in [0u32, 10, 50] {
        let mut bytes = Vec::new();
        enc_nf::v5(
            &enc_nf::V5Header {
                seq,
                ..Default::default()
            },
            &[rec; 10],
            &mut bytes,
        );
        e.decode(
            &Datagram {
                data: &bytes,
                source: agent,
                received_ms: 0,
            },
            &mut out,
        )
        .unwrap();
    }
    assert_eq!(e.counters().lost, 30);
}

/// One flow as the IPFIX/NetFlow v9 round trip writes it.
#[derive(Debug, Clone)]
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    packets: u32,
    octets: u64,
    in_if: u32,
    out_if: u32,
    ttl: u8,
    age_s: u32,
}

prop_compose! {
    fn flow_strategy(v6: bool)(
        (a, b) in (any::<u128>(), any::<u128>()),
        protocol in prop_oneof![Just(proto::TCP), Just(proto::UDP), Just(proto::GRE)],
        src_port in any::<u16>(), dst_port in any::<u16>(), tcp_flags in any::<u8>(),
        packets in 1u32.., octets in 1u64..1 << 40, in_if in any::<u32>(), out_if in any::<u32>(),
        ttl in any::<u8>(), age_s in 0u32..300,
    ) -> Flow {
        let (src, dst) = if v6 {
            (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))
        } else {
            (IpAddr::V4(Ipv4Addr::from(a as u32)), IpAddr::V4(Ipv4Addr::from(b as u32)))
        };
        Flow { src, dst, protocol, src_port, dst_port, tcp_flags, packets, octets, in_if, out_if, ttl, age_s }
    }
}

fn template_for(v6: bool, packets_len: u16, varlen: bool) -> enc_nf::Template {
    let (s, d, alen) = if v6 { (27, 28, 16) } else { (8, 12, 4) };
    let mut fields = vec![
        enc_nf::Field::new(s, alen),
        enc_nf::Field::new(d, alen),
        enc_nf::Field::new(4, 1),
        enc_nf::Field::new(7, 2),
        enc_nf::Field::new(11, 2),
        enc_nf::Field::new(6, 1),
        enc_nf::Field::new(2, packets_len),
        enc_nf::Field::new(1, 8),
        enc_nf::Field::new(10, 4),
        enc_nf::Field::new(14, 4),
        enc_nf::Field::new(192, 1),
        enc_nf::Field::new(151, 4),
        enc_nf::Field::new(302, 4),
        enc_nf::Field::new(150, 4),
    ];
    if varlen {
        fields.insert(3, enc_nf::Field::new(82, 65535));
    }
    enc_nf::Template {
        id: 256 + u16::from(v6) * 2 + u16::from(varlen),
        scope_fields: 0,
        fields,
    }
}

fn values_for(f: &Flow, export_s: u32, varlen: bool) -> Vec<enc_nf::Value> {
    use enc_nf::Value::{Bytes, Uint};
    let addr = |ip: IpAddr| match ip {
        IpAddr::V4(a) => Bytes(a.octets().to_vec()),
        IpAddr::V6(a) => Bytes(a.octets().to_vec()),
    };
    let mut v = vec![
        addr(f.src),
        addr(f.dst),
        Uint(f.protocol.into()),
        Uint(f.src_port.into()),
        Uint(f.dst_port.into()),
        Uint(f.tcp_flags.into()),
        Uint(f.packets.into()),
        Uint(f.octets),
        Uint(f.in_if.into()),
        Uint(f.out_if.into()),
        Uint(f.ttl.into()),
        Uint(u64::from(export_s - f.age_s)),
        Uint(7),
        Uint(u64::from(export_s - f.age_s - f.age_s / 2)),
    ];
    if varlen {
        v.insert(3, Bytes(b"ge-0/0/1.100".to_vec()));
    }
    v
}

proptest! {
    #[test]
    fn ipfix_and_netflow9_round_trip(
        v6 in any::<bool>(),
        ipfix in any::<bool>(),
        varlen in any::<bool>(),
        packets_len in prop_oneof![Just(4u16), Just(8)],
        flows in prop::collection::vec(flow_strategy(false), 1..25),
        flows6 in prop::collection::vec(flow_strategy(true), 1..25),
        rate in 1u32..10_000,
        data_first in any::<bool>(),
    ) {
        // NetFlow v9 has no variable-length fields by the RFC.
        let varlen = varlen && ipfix;
        let flows = if v6 { flows6 } else { flows };
        let export_s = 1_700_000_000u32;
        let t = template_for(v6, packets_len, varlen);
        // The sampler table: selector 7 samples 1 in `rate`.
        let opt = enc_nf::Template {
            id: 900,
            scope_fields: 1,
            fields: vec![enc_nf::Field::new(if ipfix { 302 } else { 1 }, 4), enc_nf::Field::new(302, 4), enc_nf::Field::new(34, 4)],
        };
        let opt_rec = vec![enc_nf::Value::Uint(7), enc_nf::Value::Uint(7), enc_nf::Value::Uint(rate.into())];
        let data = enc_nf::Set::Data { template: t.clone(), records: flows.iter().map(|f| values_for(f, export_s, varlen)).collect() };
        let mut sets = vec![
            enc_nf::Set::Templates(vec![t]),
            enc_nf::Set::OptionsTemplates(vec![opt.clone()]),
            enc_nf::Set::Data { template: opt, records: vec![opt_rec] },
        ];
        // Data before its template in the same datagram must decode too.
        if data_first { sets.insert(0, data) } else { sets.push(data) }
        let mut bytes = Vec::new();
        if ipfix {
            enc_nf::ipfix(export_s, 0, 3, &sets, &mut bytes);
        } else {
            enc_nf::v9(500_000, export_s, 0, 3, &sets, &mut bytes);
        }
        let received_ms = 2_000_000_000_000u64;
        let (e, out) = decode_one(&bytes, "192.0.2.50".parse().unwrap(), received_ms);
        prop_assert_eq!(out.len(), flows.len());
        prop_assert_eq!(e.counters().template_misses, 0);
        for (r, f) in out.iter().zip(&flows) {
            prop_assert_eq!(r.src, Addr::from(f.src));
            prop_assert_eq!(r.dst, Addr::from(f.dst));
            prop_assert_eq!(r.protocol, f.protocol);
            prop_assert_eq!((r.src_port, r.dst_port, r.tcp_flags), (f.src_port, f.dst_port, f.tcp_flags));
            prop_assert_eq!(r.sampling, rate);
            prop_assert_eq!(r.packets, u64::from(f.packets) * u64::from(rate));
            prop_assert_eq!(r.bytes, f.octets * u64::from(rate));
            prop_assert_eq!((r.in_if, r.out_if), (f.in_if, f.out_if));
            prop_assert_eq!(r.ttl(), Some(f.ttl));
            prop_assert_eq!(r.is_ipv6(), v6);
            // The flow's age at export is carried over to levee's clock.
            prop_assert_eq!(r.time_ms, received_ms - u64::from(f.age_s) * 1000);
            prop_assert_eq!(u32::from(r.duration_s), f.age_s / 2);
            prop_assert_eq!(r.exporter, Addr::v4([192, 0, 2, 50]));
        }
    }
}
