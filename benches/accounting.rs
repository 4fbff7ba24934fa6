//! Accounting and the pipeline, per record:
//!
//! - `account/1M_hosts`: one counter update (`Shard::account`) for a random
//!   one of a million tracked hosts — the cost is the cache misses of a
//!   table far larger than the caches (goal ≤ 40 ns, one thread);
//!   `account/1M_hosts_batched` the same through `Shard::account_batch`,
//!   as the shard workers call it; `account_prefixes/…` the same with
//!   every host's /24 summed as well (carpet-bombing aggregates, DET-6;
//!   goal: at most 10 % more).
//! - `pipeline/netflow5`: decode a 30-record NetFlow v5 datagram, route each
//!   record (hostgroup lookup), through an SPSC ring, into a shard.
//! - `replay/sflow`: `levee replay`'s engine (decode, account, detect) over
//!   sFlow datagrams.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use levee::accounting::{Bounds, Limit, PrefixLimit, Rec, Shard};
use levee::hostgroups::Hostgroups;
use levee::pipeline::{Inline, Routing};
use levee_collectors::encode::samples;
use levee_collectors::exporter::Exporter;
use levee_collectors::record::proto;
use levee_collectors::{Addr, Datagram, FlowRecord};

fn config(prefix: &str) -> levee::config::Config {
    let text = format!("[[hostgroup]]\nname = \"all\"\nprefixes = [\"{prefix}\"]\n[hostgroup.thresholds]\npps = 100000000000\n");
    levee::config::parse(std::path::Path::new("b.toml"), &text)
        .unwrap()
        .config
}

fn account(c: &mut Criterion) {
    account_with(c, "account", None);
    // The same with every host's /24 summed too (DET-6): 65,536 prefix
    // aggregates beside the million hosts.
    account_with(
        c,
        "account_prefixes",
        Some(PrefixLimit {
            len_v4: 24,
            len_v6: 64,
            pps: Some(u64::MAX),
            bps: None,
        }),
    );
}

fn account_with(c: &mut Criterion, name: &str, prefix: Option<PrefixLimit>) {
    const HOSTS: u32 = 1_000_000;
    let bounds = Bounds {
        max_hosts: 2_000_000,
        detail_pps: u64::MAX,
        ..Bounds::default()
    };
    let mut shard = Shard::new(
        vec![Limit {
            pps: Some(u64::MAX),
            bps: None,
            prefix,
        }],
        bounds,
    );
    shard.advance(1_000_000);
    // A million hosts in 10.0.0.0/8, in a scattered order.
    let addrs: Vec<Addr> = (0..HOSTS)
        .map(|i| {
            Addr::v4((0x0a00_0000 + i.wrapping_mul(2_654_435_761) % 0x00ff_ffff).to_be_bytes())
        })
        .collect();
    let rec = FlowRecord {
        packets: 1,
        bytes: 100,
        protocol: proto::UDP,
        ..FlowRecord::default()
    };
    let at = |a: Addr| Rec::new(&FlowRecord { dst: a, ..rec }, 0, false);
    for a in &addrs {
        shard.account(&at(*a));
    }
    // The records' hosts in random order, read in sequence as a shard reads
    // its rings: the cost measured is the host table's, not the bench's.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let order: Vec<Rec> = (0..1 << 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            at(addrs[(x % u64::from(HOSTS)) as usize])
        })
        .collect();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("1M_hosts", |b| {
        b.iter(|| {
            i = (i + 1) & (order.len() - 1);
            shard.account(black_box(&order[i]));
        })
    });
    // As the shard workers account: a ring's batch at a time, the slots of
    // the next records fetched while the current one is counted.
    const BATCH: usize = 1024;
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut j = 0usize;
    g.bench_function("1M_hosts_batched", |b| {
        b.iter(|| {
            j = (j + BATCH) & (order.len() - 1);
            shard.account_batch(black_box(&order[j..j + BATCH]))
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let cfg = config("192.0.2.0/24");
    let routing = Routing {
        groups: Arc::new(Hostgroups::new(&cfg.hostgroups)),
        shards: 1,
    };
    let d = samples::netflow5(30);
    let mut e = Exporter::default();
    let mut out: Vec<FlowRecord> = Vec::with_capacity(64);
    let (mut tx, mut rx) = rtrb::RingBuffer::<Rec>::new(4096);
    let mut shard = Shard::new(
        levee::pipeline::limits(&cfg),
        levee::pipeline::bounds(&cfg, 1),
    );
    shard.advance(1_000_000);
    let src: IpAddr = "10.0.0.1".parse().unwrap();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(30));
    g.bench_function("netflow5", |b| {
        b.iter(|| {
            out.clear();
            e.decode(
                &Datagram {
                    data: &d,
                    source: src,
                    received_ms: 1_000_000,
                },
                &mut out,
            )
            .unwrap();
            for r in &out {
                routing.route(r, |_, _, g, o| {
                    let _ = tx.push(Rec::new(r, g, o));
                });
            }
            if let Ok(chunk) = rx.read_chunk(rx.slots()) {
                let (a, b) = chunk.as_slices();
                shard.account_batch(a.iter().chain(b));
                chunk.commit_all();
            }
        })
    });
    g.finish();
}

fn replay(c: &mut Criterion) {
    let cfg = config("192.0.0.0/16");
    let grams: Vec<Vec<u8>> = (0..64).map(|_| samples::sflow(8)).collect();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(8 * 64));
    let src: IpAddr = "10.0.0.1".parse().unwrap();
    g.bench_function("sflow", |b| {
        b.iter_batched_ref(
            || {
                (
                    Inline::new(&cfg, false),
                    Exporter::default(),
                    Vec::with_capacity(64),
                    1_700_000_000_000u64,
                )
            },
            |(engine, e, out, now)| {
                for d in &grams {
                    *now += 2;
                    engine.advance(*now);
                    out.clear();
                    e.decode(
                        &Datagram {
                            data: d,
                            source: src,
                            received_ms: *now,
                        },
                        out,
                    )
                    .unwrap();
                    engine.feed(out);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, account, pipeline, replay);
criterion_main!(benches);
