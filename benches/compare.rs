//! levee's decoders side by side with other Rust decoders, in the same run,
//! on the same realistic datagrams (`encode::samples`): netgauze-flow-pkt
//! for IPFIX and NetFlow v9, netflow_parser for NetFlow v5,
//! flowparser-sflow for sFlow. Throughput is in records (sFlow: samples).
//!
//! Not quite like for like, in the others' favour: levee's sFlow decode
//! parses each raw header down to L4 (flowparser-sflow keeps the header as
//! bytes), and every levee record is normalised (sampling applied, times
//! placed) while the others return the fields as sent.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use levee_collectors::encode::samples;
use levee_collectors::exporter::Exporter;
use levee_collectors::{Datagram, FlowRecord};
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;

const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

fn levee(template: Option<&[u8]>) -> (Exporter, Vec<FlowRecord>) {
    let mut e = Exporter::default();
    let mut out = Vec::with_capacity(64);
    if let Some(t) = template {
        e.decode(
            &Datagram {
                data: t,
                source: SRC,
                received_ms: 0,
            },
            &mut out,
        )
        .unwrap();
    }
    (e, out)
}

fn ipfix(c: &mut Criterion) {
    let (t, d) = samples::ipfix(27);
    let mut g = c.benchmark_group("ipfix_27_records");
    g.throughput(Throughput::Elements(27));
    let (mut e, mut out) = levee(Some(&t));
    g.bench_function("levee", |b| {
        b.iter(|| {
            out.clear();
            e.decode(
                &Datagram {
                    data: black_box(&d),
                    source: SRC,
                    received_ms: 1,
                },
                &mut out,
            )
            .unwrap();
            black_box(out.len())
        })
    });
    let mut templates = HashMap::new();
    netgauze_flow_pkt::ipfix::IpfixPacket::parse(&mut SliceReader::new(&t), &mut templates)
        .unwrap();
    g.bench_function("netgauze", |b| {
        b.iter(|| {
            let p = netgauze_flow_pkt::ipfix::IpfixPacket::parse(
                &mut SliceReader::new(black_box(&d)),
                &mut templates,
            )
            .unwrap();
            black_box(p.sets().len())
        })
    });
    g.finish();
}

fn netflow9(c: &mut Criterion) {
    let (t, d) = samples::netflow9(27);
    let mut g = c.benchmark_group("netflow9_27_records");
    g.throughput(Throughput::Elements(27));
    let (mut e, mut out) = levee(Some(&t));
    g.bench_function("levee", |b| {
        b.iter(|| {
            out.clear();
            e.decode(
                &Datagram {
                    data: black_box(&d),
                    source: SRC,
                    received_ms: 1,
                },
                &mut out,
            )
            .unwrap();
            black_box(out.len())
        })
    });
    let mut templates = HashMap::new();
    netgauze_flow_pkt::netflow::NetFlowV9Packet::parse(&mut SliceReader::new(&t), &mut templates)
        .unwrap();
    g.bench_function("netgauze", |b| {
        b.iter(|| {
            let p = netgauze_flow_pkt::netflow::NetFlowV9Packet::parse(
                &mut SliceReader::new(black_box(&d)),
                &mut templates,
            )
            .unwrap();
            black_box(p.sets().len())
        })
    });
    g.finish();
}

fn netflow5(c: &mut Criterion) {
    let d = samples::netflow5(30);
    let mut g = c.benchmark_group("netflow5_30_records");
    g.throughput(Throughput::Elements(30));
    let (mut e, mut out) = levee(None);
    g.bench_function("levee", |b| {
        b.iter(|| {
            out.clear();
            e.decode(
                &Datagram {
                    data: black_box(&d),
                    source: SRC,
                    received_ms: 1,
                },
                &mut out,
            )
            .unwrap();
            black_box(out.len())
        })
    });
    let mut parser = netflow_parser::NetflowParser::default();
    g.bench_function("netflow_parser", |b| {
        b.iter(|| {
            let r = parser.parse_bytes(black_box(&d));
            black_box(r.packets.len())
        })
    });
    g.finish();
}

fn sflow(c: &mut Criterion) {
    let d = samples::sflow(8);
    let mut g = c.benchmark_group("sflow_8_samples");
    g.throughput(Throughput::Elements(8));
    let (mut e, mut out) = levee(None);
    g.bench_function("levee", |b| {
        b.iter(|| {
            out.clear();
            e.decode(
                &Datagram {
                    data: black_box(&d),
                    source: SRC,
                    received_ms: 1,
                },
                &mut out,
            )
            .unwrap();
            black_box(out.len())
        })
    });
    let parser = flowparser_sflow::SflowParser::default();
    g.bench_function("flowparser_sflow", |b| {
        b.iter(|| {
            let r = parser.parse_bytes(black_box(&d));
            black_box(r.datagrams.len())
        })
    });
    g.finish();
}

criterion_group!(benches, ipfix, netflow9, netflow5, sflow);
criterion_main!(benches);
