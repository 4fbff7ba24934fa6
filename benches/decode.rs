//! Decoding throughput per protocol on realistic datagrams (see
//! `encode::samples`): records (sFlow: samples) per second, one core.
//!
//! The comparison with other Rust decoders lives in `compare.rs`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use levee_collectors::encode::samples;
use levee_collectors::exporter::Exporter;
use levee_collectors::{Datagram, FlowRecord};

const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

fn bench_one(c: &mut Criterion, name: &str, setup: Option<&[u8]>, data: &[u8], records: u64) {
    let mut e = Exporter::default();
    let mut out: Vec<FlowRecord> = Vec::with_capacity(64);
    if let Some(t) = setup {
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
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(records));
    g.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            let dg = Datagram {
                data: black_box(data),
                source: SRC,
                received_ms: 1_700_000_000_000,
            };
            e.decode(&dg, &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let (t, d) = samples::ipfix(27);
    bench_one(c, "ipfix_27", Some(&t), &d, 27);
    let (t, d) = samples::netflow9(27);
    bench_one(c, "netflow9_27", Some(&t), &d, 27);
    bench_one(c, "netflow5_30", None, &samples::netflow5(30), 30);
    bench_one(c, "netflow5_1", None, &samples::netflow5(1), 1);
    bench_one(c, "sflow_8_raw_headers", None, &samples::sflow(8), 8);
}

criterion_group!(benches, decode);
criterion_main!(benches);
