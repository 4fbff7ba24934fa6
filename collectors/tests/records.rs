//! Which record a decoder makes when the input leaves it a choice, and that a
//! sample or packet that fails leaves nothing half-written behind: sFlow's
//! choice between raw header and sampled IPv4/IPv6 records, NetFlow v5's
//! clock and ICMP handling, and the packet parser writing in place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use levee_collectors::encode::netflow as enc_nf;
use levee_collectors::encode::packet::{self as enc_pkt, PacketSpec};
use levee_collectors::exporter::Exporter;
use levee_collectors::packet::{self, LinkType};
use levee_collectors::record::{flags, proto, Addr};
use levee_collectors::{Datagram, FlowRecord};
use proptest::prelude::*;

fn w(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// An XDR block: format, length, body (padded to 4 bytes).
fn block(out: &mut Vec<u8>, format: u32, body: &[u8]) {
    w(out, format);
    w(out, body.len().next_multiple_of(4) as u32);
    out.extend_from_slice(body);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A raw packet header record (format 1) of an Ethernet frame.
fn raw_header(frame: &[u8]) -> (u32, Vec<u8>) {
    let mut b = Vec::new();
    w(&mut b, 1); // Ethernet
    w(&mut b, frame.len() as u32 + 4);
    w(&mut b, 4);
    w(&mut b, frame.len() as u32);
    b.extend_from_slice(frame);
    (1, b)
}

/// A sampled IPv4 record (format 3).
fn sampled_ipv4(
    len: u32,
    protocol: u8,
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
) -> (u32, Vec<u8>) {
    let mut b = Vec::new();
    w(&mut b, len);
    w(&mut b, u32::from(protocol));
    b.extend_from_slice(&src);
    b.extend_from_slice(&dst);
    w(&mut b, u32::from(ports.0));
    w(&mut b, u32::from(ports.1));
    w(&mut b, 0x18); // tcp flags
    w(&mut b, 0); // tos
    (3, b)
}

/// A sampled IPv6 record (format 4).
fn sampled_ipv6(len: u32, protocol: u8, src: Ipv6Addr, dst: Ipv6Addr) -> (u32, Vec<u8>) {
    let mut b = Vec::new();
    w(&mut b, len);
    w(&mut b, u32::from(protocol));
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    w(&mut b, 1234);
    w(&mut b, 53);
    w(&mut b, 0);
    w(&mut b, 0); // priority
    (4, b)
}

/// A compact flow sample at 1-in-`rate` with these records, as raw bytes:
/// `lie` adds to the record count the sample claims.
fn flow_sample(rate: u32, records: &[(u32, Vec<u8>)], lie: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [1, 3, rate, rate * 10, 0, 5, 9] {
        w(&mut b, v);
    }
    w(&mut b, records.len() as u32 + lie);
    for (format, body) in records {
        block(&mut b, *format, body);
    }
    b
}

fn datagram(samples: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [5, 1] {
        w(&mut b, v);
    }
    b.extend_from_slice(&[10, 0, 0, 1]);
    for v in [0, 1, 1000, samples.len() as u32] {
        w(&mut b, v);
    }
    for s in samples {
        block(&mut b, 1, s);
    }
    b
}

fn decode(e: &mut Exporter, bytes: &[u8]) -> (Vec<FlowRecord>, bool) {
    let mut out = Vec::new();
    let ok = e
        .decode(
            &Datagram {
                data: bytes,
                source: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                received_ms: 7_000,
            },
            &mut out,
        )
        .is_ok();
    (out, ok)
}

fn frame(spec: &PacketSpec) -> Vec<u8> {
    let mut f = Vec::new();
    enc_pkt::ethernet(spec, 110, &mut f);
    f
}

fn tcp(dst: [u8; 4], dport: u16) -> PacketSpec {
    PacketSpec {
        ip_len: 1500,
        ..PacketSpec::tcp(
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            IpAddr::V4(Ipv4Addr::from(dst)),
            40_000,
            dport,
        )
    }
}

const ARP: [u8; 42] = {
    let mut f = [0u8; 42];
    f[12] = 0x08;
    f[13] = 0x06;
    f
};

#[test]
fn the_raw_header_wins_over_the_sampled_ipv4_record_whichever_comes_first() {
    let raw = raw_header(&frame(&tcp([192, 0, 2, 7], 443)));
    let sampled = sampled_ipv4(99, proto::UDP, [1, 1, 1, 1], [2, 2, 2, 2], (1, 2));
    for records in [
        vec![raw.clone(), sampled.clone()],
        vec![sampled.clone(), raw.clone()],
    ] {
        let mut e = Exporter::default();
        let (out, ok) = decode(&mut e, &datagram(&[flow_sample(512, &records, 0)]));
        assert!(ok);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(r.dst, Addr::v4([192, 0, 2, 7]));
        assert_eq!((r.protocol, r.dst_port), (proto::TCP, 443));
        assert_eq!((r.packets, r.bytes, r.sampling), (512, 1500 * 512, 512));
        assert_eq!((r.in_if, r.out_if, r.time_ms), (5, 9, 7_000));
        assert_eq!(r.exporter, Addr::v4([10, 0, 0, 1]));
        assert_eq!(r.ttl(), Some(64));
    }
}

#[test]
fn a_sample_whose_header_is_not_ip_falls_back_to_its_sampled_records() {
    let mut e = Exporter::default();
    let v4 = sampled_ipv4(576, proto::TCP, [1, 2, 3, 4], [192, 0, 2, 9], (1234, 80));
    let (out, _) = decode(
        &mut e,
        &datagram(&[flow_sample(100, &[raw_header(&ARP), v4], 0)]),
    );
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(
        (r.src, r.dst),
        (Addr::v4([1, 2, 3, 4]), Addr::v4([192, 0, 2, 9]))
    );
    assert_eq!((r.src_port, r.dst_port, r.tcp_flags), (1234, 80, 0x18));
    assert_eq!((r.packets, r.bytes), (100, 57_600));
    // Nothing of a header parse is left: no TTL, no fragment, IPv4.
    assert_eq!((r.ttl(), r.flags), (None, 0));
    assert_eq!(e.counters().non_ip, 1);

    let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let b: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let (out, _) = decode(
        &mut e,
        &datagram(&[flow_sample(10, &[sampled_ipv6(1280, proto::UDP, a, b)], 0)]),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].src, out[0].dst),
        (Addr::v6(a.octets()), Addr::v6(b.octets()))
    );
    assert!(out[0].is_ipv6());
    assert_eq!((out[0].bytes, out[0].dst_port), (12_800, 53));
}

#[test]
fn a_short_sampled_record_does_not_hide_a_later_good_one() {
    // Found by comparing with the decoder before records were written in
    // place: a cut-off format 3 record took the fallback's place.
    let mut e = Exporter::default();
    let mut short = Vec::new();
    w(&mut short, 576);
    w(&mut short, u32::from(proto::TCP));
    let good = sampled_ipv4(576, proto::TCP, [1, 2, 3, 4], [192, 0, 2, 9], (1234, 80));
    let (out, ok) = decode(
        &mut e,
        &datagram(&[flow_sample(100, &[(3, short), good], 0)]),
    );
    assert!(ok);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].dst, out[0].bytes),
        (Addr::v4([192, 0, 2, 9]), 57_600)
    );
}

#[test]
fn a_sample_without_an_ip_packet_makes_no_record_but_counts() {
    let mut e = Exporter::default();
    let (out, ok) = decode(
        &mut e,
        &datagram(&[flow_sample(64, &[raw_header(&ARP)], 0)]),
    );
    assert!(ok);
    assert!(out.is_empty());
    assert_eq!((e.counters().records[0], e.counters().non_ip), (1, 1));
}

#[test]
fn a_second_raw_header_is_counted_but_does_not_replace_the_first() {
    let mut e = Exporter::default();
    let first = raw_header(&frame(&tcp([192, 0, 2, 1], 22)));
    let second = raw_header(&frame(&tcp([192, 0, 2, 2], 25)));
    let broken = raw_header(&[0u8; 10]);
    let (out, _) = decode(
        &mut e,
        &datagram(&[flow_sample(1, &[first, second, broken], 0)]),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].dst, out[0].dst_port),
        (Addr::v4([192, 0, 2, 1]), 22)
    );
    let bad = e.counters().errors[levee_collectors::Protocol::Sflow.index()]
        [levee_collectors::ErrorKind::BadPacket.index()];
    assert_eq!(bad, 1, "the truncated third header");
}

#[test]
fn a_sample_that_fails_after_its_header_parsed_leaves_no_record() {
    // The first sample is good; the second parses its raw header, then
    // claims a record that is not there. Its record must not stay behind.
    let mut e = Exporter::default();
    let good = flow_sample(8, &[raw_header(&frame(&tcp([192, 0, 2, 1], 80)))], 0);
    let lying = flow_sample(8, &[raw_header(&frame(&tcp([192, 0, 2, 66], 80)))], 1);
    let (out, ok) = decode(&mut e, &datagram(&[good, lying]));
    assert!(!ok);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, Addr::v4([192, 0, 2, 1]));
}

#[test]
fn netflow5_clock_skew_icmp_and_duration() {
    let rec = |protocol, dst_port, first, last| enc_nf::V5Record {
        src: Ipv4Addr::new(198, 51, 100, 1),
        dst: Ipv4Addr::new(192, 0, 2, 1),
        next_hop: Ipv4Addr::UNSPECIFIED,
        input: 1,
        output: 2,
        packets: 10,
        octets: 1000,
        first,
        last,
        src_port: 7,
        dst_port,
        tcp_flags: 0x12,
        protocol,
        tos: 0,
    };
    let uptime: u32 = 100_000;
    let records = [
        // ICMP echo request (type 8, code 0), 30 s long, ended 1 s before export.
        rec(proto::ICMP, 0x0800, 69_000, 99_000),
        // Ended after the export: a confused clock, placed at arrival.
        rec(proto::TCP, 443, 100_500, 101_000),
        // Ended more than an hour before (across the uptime wrap): the same.
        rec(
            proto::TCP,
            443,
            uptime.wrapping_sub(3_600_001),
            uptime.wrapping_sub(3_600_001),
        ),
    ];
    let h = enc_nf::V5Header {
        uptime_ms: uptime,
        unix_secs: 0,
        unix_nsecs: 0,
        seq: 0,
        engine_type: 0,
        engine_id: 0,
        sampling: 0,
    };
    let mut bytes = Vec::new();
    enc_nf::v5(&h, &records, &mut bytes);
    let mut e = Exporter::default();
    let (out, ok) = decode(&mut e, &bytes);
    assert!(ok);
    let icmp = &out[0];
    assert_eq!((icmp.icmp_type, icmp.icmp_code), (8, 0));
    assert_eq!((icmp.src_port, icmp.dst_port, icmp.tcp_flags), (0, 0, 0x12));
    assert_eq!((icmp.time_ms, icmp.duration_s), (6_000, 30));
    assert_eq!((out[1].time_ms, out[1].dst_port), (7_000, 443));
    assert_eq!((out[2].time_ms, out[2].duration_s), (7_000, 0));
    assert_eq!(e.counters().clock_skew, 2);
}

proptest! {
    /// Whatever the bytes, a failed parse leaves the record as it was, and a
    /// successful one agrees with `packet::parse`.
    #[test]
    fn parse_into_writes_only_on_success(
        frame in prop::collection::vec(any::<u8>(), 0..120),
        link in 0usize..5,
        lead in prop::sample::select(vec![&[][..], &[0x08, 0x00][..], &[0x86, 0xdd][..], &[0x81, 0x00, 0, 1, 0x08, 0x00][..]]),
    ) {
        // Bias towards IP: an Ethernet header whose type is IP, then noise.
        let mut f = vec![0u8; 12];
        f.extend_from_slice(lead);
        f.extend_from_slice(&frame);
        if let Some(b) = f.get_mut(14) {
            *b = (*b & 0x0f) | if frame.len() % 2 == 0 { 0x40 } else { 0x60 };
        }
        let link = [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll, LinkType::Ipv4, LinkType::Ipv6][link];
        let sentinel = FlowRecord {
            time_ms: 1,
            packets: 2,
            bytes: 3,
            src: Addr::v4([9, 9, 9, 9]),
            src_port: 77,
            icmp_code: 5,
            flags: flags::EGRESS,
            ..FlowRecord::default()
        };
        let mut r = sentinel;
        match packet::parse_into(link, &f, &mut r) {
            Err(e) => {
                prop_assert_eq!(r, sentinel);
                prop_assert_eq!(packet::parse(link, &f), Err(e));
            }
            Ok(extra) => {
                let p = packet::parse(link, &f).unwrap();
                prop_assert_eq!(packet::Packet::from_record(&r, extra), p);
                prop_assert_eq!((r.time_ms, r.packets), (1, 2), "fields it does not own");
            }
        }
    }
}

/// A flow sample whose pool runs backwards, or far ahead of what its
/// sequence numbers allow, contradicts its source's earlier samples: it is
/// counted, and its record marked untrusted (never the ground for a
/// mitigation). A pool that stands still (agents update it lazily) is fine.
#[test]
fn sflow_pools_that_contradict_their_source_are_untrusted() {
    use levee_collectors::encode::sflow as sf;
    use levee_collectors::ErrorKind;
    let spec = PacketSpec::udp(
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        53,
        1234,
        512,
    );
    let mut header = Vec::new();
    enc_pkt::ethernet(&spec, 110, &mut header);
    let datagram = |seq: u32, pool: u32| {
        let mut out = Vec::new();
        sf::encode(
            &sf::Datagram {
                agent: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                sub_agent: 0,
                seq,
                uptime_ms: 1000,
                samples: vec![sf::Sample::Flow {
                    expanded: false,
                    seq,
                    source_index: 7,
                    rate: 1000,
                    pool,
                    drops: 0,
                    input: 1,
                    output: 2,
                    frame_len: 530,
                    header: header.clone(),
                }],
            },
            &mut out,
        );
        out
    };
    let mut e = Exporter::default();
    let mut decode = |seq: u32, pool: u32| -> FlowRecord {
        let data = datagram(seq, pool);
        let mut out = Vec::new();
        e.decode(
            &Datagram {
                data: &data,
                source: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                received_ms: 0,
            },
            &mut out,
        )
        .unwrap();
        out[0]
    };
    let trusted = |r: &FlowRecord| r.flags & flags::UNTRUSTED == 0;
    assert!(
        trusted(&decode(100, 100_000)),
        "the first sample sets the baseline"
    );
    assert!(trusted(&decode(101, 101_000)));
    assert!(trusted(&decode(102, 101_000)), "a pool that stands still");
    assert!(!trusted(&decode(103, 50)), "a pool that runs backwards");
    assert!(!trusted(&decode(104, 900_000_000)), "a pool far ahead");
    assert!(trusted(&decode(105, 106_000)), "the real source goes on");
    let implausible: u64 = e
        .counters()
        .errors
        .iter()
        .map(|row| row[ErrorKind::ImplausibleCounters.index()])
        .sum();
    assert_eq!(implausible, 2);
}
