//! The shard's contract: per-second counters by class, snapshots when a
//! second ends, immediate triggers on the sliding window, details for busy
//! hosts, bounded memory.

use super::*;
use levee_collectors::record::proto;

fn rec(dst: [u8; 4], protocol: u8, tcp_flags: u8, packets: u64, bytes: u64) -> FlowRecord {
    FlowRecord {
        time_ms: 0,
        packets,
        bytes,
        src: Addr::v4([198, 51, 100, 1]),
        dst: Addr::v4(dst),
        sampling: 1,
        protocol,
        tcp_flags,
        flags: flags::TTL_KNOWN,
        ttl: 60,
        src_port: 1234,
        dst_port: 80,
        ..FlowRecord::default()
    }
}

const HOST: [u8; 4] = [192, 0, 2, 10];

fn shard(pps: Option<u64>) -> Shard {
    Shard::new(
        vec![Limit {
            pps,
            bps: None,
            prefix: None,
        }],
        Bounds::default(),
    )
}

#[test]
fn a_second_is_counted_by_class_and_handed_over_when_it_ends() {
    let mut s = shard(None);
    assert!(s.advance(10_000_000).is_none());
    let h = Addr::v4(HOST);
    s.account(&Rec::new(&rec(HOST, proto::TCP, 0x02, 1, 60), 0, false));
    s.account(&Rec::new(&rec(HOST, proto::TCP, 0x10, 2, 100), 0, false));
    s.account(&Rec::new(&rec(HOST, proto::UDP, 0, 3, 300), 0, false));
    s.account(&Rec::new(&rec(HOST, proto::ICMP, 0, 4, 400), 0, false));
    let mut frag = rec(HOST, proto::UDP, 0, 5, 500);
    frag.flags |= flags::FRAGMENT | flags::LATER_FRAGMENT;
    s.account(&Rec::new(&frag, 0, false));
    s.account(&Rec::new(&rec(HOST, 47, 0, 6, 600), 0, false));
    // Outbound: the host as a source.
    let mut out = rec([203, 0, 113, 1], proto::UDP, 0, 7, 700);
    out.src = h;
    s.account(&Rec::new(&out, 0, true));
    assert!(s.advance(10_000_999).is_none(), "still the same second");
    let snap = s.advance(10_001_000).expect("the second ended");
    assert_eq!(snap.second, 10_000);
    assert_eq!(snap.hosts.len(), 1);
    let c = &snap.hosts[0].inbound;
    assert_eq!(c.packets[class::ALL], 21);
    assert_eq!(c.bytes, 1960);
    assert_eq!(c.packets[class::TCP], 3);
    assert_eq!(c.packets[class::TCP_SYN], 1);
    assert_eq!(
        c.packets[class::UDP],
        3,
        "the later fragment is a fragment, not UDP"
    );
    assert_eq!(c.packets[class::ICMP], 4);
    assert_eq!(c.packets[class::FRAGMENT], 5);
    assert_eq!(c.packets[class::OTHER], 6);
    assert_eq!(c.flows, 6);
    assert_eq!(
        snap.hosts[0].outbound,
        Outbound {
            packets: 7,
            bytes: 700,
            flows: 1
        }
    );
    // A quiet second: nothing to hand over.
    assert!(s.advance(10_002_000).unwrap().hosts.is_empty());
}

#[test]
fn long_flows_add_their_rate_not_their_total() {
    let mut s = shard(None);
    s.advance(5_000_000);
    let mut r = rec(HOST, proto::TCP, 0x10, 60_000, 90_000_000);
    r.duration_s = 60;
    s.account(&Rec::new(&r, 0, false));
    let snap = s.advance(5_001_000).unwrap();
    assert_eq!(snap.hosts[0].inbound.packets[class::ALL], 1_000);
    assert_eq!(snap.hosts[0].inbound.bytes, 1_500_000);
}

#[test]
fn a_window_crossing_triggers_at_once_and_re_arms_below() {
    let mut s = shard(Some(1_000));
    s.advance(1_000_000);
    // 100 packets every 10 ms: 10k pps; the window reaches 1000 packets after 100 ms.
    let mut t = 1_000_000;
    let mut first = None;
    while t < 1_000_500 {
        s.advance(t);
        s.account(&Rec::new(&rec(HOST, proto::UDP, 0, 100, 5_000), 0, false));
        if first.is_none() {
            first = s.take_triggers().into_iter().next();
        }
        t += 10;
    }
    let trig = first.expect("a trigger");
    // Over means past the limit: 1,100 packets at 110 ms.
    assert!(trig.at_ms <= 1_000_110, "triggered at {}", trig.at_ms);
    assert!(trig.pps > 1_000);
    assert!(s.take_triggers().is_empty(), "one trigger per crossing");
    // Quiet for two seconds: the window empties and the trigger re-arms.
    s.advance(1_002_500);
    s.advance(1_003_500);
    s.account(&Rec::new(
        &rec(HOST, proto::UDP, 0, 1_001, 50_000),
        0,
        false,
    ));
    assert_eq!(s.take_triggers().len(), 1);
}

#[test]
fn sampling_noise_is_no_crossing() {
    // 1:1000: two samples a third of a second apart are "2,000 pps" and
    // mean nothing against a 1,000 pps limit.
    let mut s = shard(Some(1_000));
    s.advance(2_000_000);
    let sample = FlowRecord {
        sampling: 1000,
        ..rec(HOST, proto::TCP, 0x10, 1000, 52_000)
    };
    s.account(&Rec::new(&sample, 0, false));
    s.advance(2_000_380);
    s.account(&Rec::new(&sample, 0, false));
    assert!(s.take_triggers().is_empty());
    // Forty samples in the second (40,000 pps): that is over, whatever
    // the noise.
    for t in 0..40 {
        s.advance(2_001_000 + t * 20);
        s.account(&Rec::new(&sample, 0, false));
    }
    assert_eq!(s.take_triggers().len(), 1);
}

#[test]
fn busy_hosts_get_details() {
    let mut s = shard(None);
    s.advance(7_000_000);
    for i in 0..600u32 {
        let mut r = rec(HOST, proto::UDP, 0, 1, 468);
        r.src = Addr::v4((0x0a00_0000 + i).to_be_bytes());
        r.src_port = 123;
        r.ttl = (i % 200) as u8;
        s.account(&Rec::new(&r, 0, false));
    }
    let snap = s.advance(7_001_000).unwrap();
    let d = snap.hosts[0]
        .details
        .as_ref()
        .expect("details after 500 pps");
    // Details start when the host became busy, mid-second.
    assert!(d.packets >= 100 && d.packets <= 600, "{}", d.packets);
    assert_eq!(d.udp_src_ports.top()[0].0, 123);
    assert!(d.sources.estimate() > 50.0);
}

#[test]
fn a_very_busy_hosts_distributions_are_estimated_from_a_sample() {
    let mut s = shard(None);
    s.advance(9_000_000);
    // 20 000 records in one second, flows interleaved with a period of ten:
    // seven DNS responses (UDP from port 53, TTL 50), three web requests
    // (TCP to port 80, TTL 120).
    for i in 0..20_000u32 {
        let mut r = if i % 10 < 7 {
            let mut r = rec(HOST, proto::UDP, 0, 2, 1_000);
            r.src_port = 53;
            r.ttl = 50;
            r
        } else {
            let mut r = rec(HOST, proto::TCP, 0x18, 2, 1_000);
            r.dst_port = 80;
            r.ttl = 120;
            r
        };
        r.src = Addr::v4((0x0a00_0000 + i % 5_000).to_be_bytes());
        s.account(&Rec::new(&r, 0, false));
    }
    let snap = s.advance(9_001_000).unwrap();
    let d = snap.hosts[0].details.as_ref().unwrap();
    // Exact: the counts every record adds.
    assert_eq!(d.classes[class::ALL], d.packets);
    assert_eq!(d.records * 2, d.packets);
    assert!(d.records > 19_000, "details from the first busy moment");
    let (udp, tcp) = (d.classes[class::UDP] as f64, d.classes[class::TCP] as f64);
    assert!((udp / (udp + tcp) - 0.7).abs() < 0.01, "{udp} {tcp}");
    let sources = d.sources.estimate();
    assert!((sources - 5_000.0).abs() < 500.0, "{sources}");
    // Estimated: within a few percent of the truth, whatever the period.
    let near = |got: u64, want: f64| (got as f64 / want - 1.0).abs() < 0.05;
    let dns = d.udp_src_ports.top()[0];
    assert_eq!(dns.0, 53);
    assert!(
        near(dns.1, 0.7 * d.packets as f64),
        "{dns:?} of {}",
        d.packets
    );
    assert!(near(d.ttl[50], 0.7 * d.ttl_known as f64), "{}", d.ttl[50]);
    assert!(near(d.ttl[120], 0.3 * d.ttl_known as f64), "{}", d.ttl[120]);
    assert!(near(d.ttl_known, d.packets as f64), "{}", d.ttl_known);
}

#[test]
fn the_table_grows_a_few_hosts_at_a_time() {
    let mut s = shard(None);
    // Even small tables made off the shard's thread, as large ones are.
    s.off_thread_bytes = 0;
    s.advance(3_000_000);
    // The next table is made on another thread; waiting for it after each
    // record makes the test deterministic: growth starts as soon as the
    // load passes half.
    let put = |s: &mut Shard, i: u32, packets: u64| {
        let a = (0xc000_0000 + i).to_be_bytes();
        s.account(&Rec::new(&rec(a, proto::UDP, 0, packets, 100), 0, false));
        s.settle();
    };
    let mut migrating = 0;
    for i in 0..5_000 {
        put(&mut s, i, 1);
        migrating += usize::from(s.old.is_some());
    }
    // 2048 slots, then 4096, 8192 and 16384: each time the old table's
    // hosts move across with the next hundreds of new ones, not all at once.
    assert_eq!(s.table.slots.len(), 16_384);
    assert!(migrating > 800, "{migrating}");
    s.check().unwrap();
    let first = s.advance(3_001_000).unwrap();
    assert_eq!(first.hosts.len(), 5_000);
    // New hosts until the table passes half full again and the next one
    // takes over; then everyone of the first second comes back while the
    // old table still holds them (each moves as it is found), then the
    // rest of 4000 new hosts arrive.
    let mut i = 5_000;
    while s.old.is_none() {
        put(&mut s, i, 3);
        i += 1;
    }
    assert_eq!(s.table.slots.len(), 32_768);
    for j in 0..5_000 {
        put(&mut s, j, 2);
    }
    assert!(s.old.is_some());
    s.check().unwrap();
    for j in i..9_000 {
        put(&mut s, j, 3);
    }
    s.check().unwrap();
    let next = s.advance(3_002_000).unwrap();
    assert_eq!(next.hosts.len(), 9_000);
    for h in &next.hosts {
        let i = u32::from_be_bytes(h.addr.0[12..].try_into().unwrap()) - 0xc000_0000;
        assert_eq!(h.inbound.packets[class::ALL], if i < 5_000 { 2 } else { 3 });
    }
    assert_eq!(s.stats.hosts, 9_000);
    // A second's end finishes the move.
    s.advance(3_003_000);
    assert!(s.old.is_none());
    s.check().unwrap();
}

/// Without waiting for the next table, growth happens whenever it is
/// ready (or at ⅞ at the latest): nobody is lost either way.
#[test]
fn a_table_made_off_thread_loses_nobody() {
    let mut s = shard(None);
    s.off_thread_bytes = 0;
    s.advance(3_000_000);
    for i in 0..50_000u32 {
        let a = (0xc000_0000 + i).to_be_bytes();
        s.account(&Rec::new(&rec(a, proto::UDP, 0, 1, 100), 0, false));
    }
    s.check().unwrap();
    let snap = s.advance(3_001_000).unwrap();
    assert_eq!(snap.hosts.len(), 50_000);
    assert!(s.table.slots.len() >= 65_536);
}

#[test]
fn the_host_table_is_bounded_and_idle_hosts_leave() {
    let bounds = Bounds {
        max_hosts: 100,
        idle_s: 5,
        ..Bounds::default()
    };
    let mut s = Shard::new(vec![Limit::default()], bounds);
    s.advance(1_000);
    for i in 0..150u32 {
        let a = (0xc000_0000 + i).to_be_bytes();
        s.account(&Rec::new(&rec(a, proto::UDP, 0, 1, 100), 0, false));
    }
    assert_eq!(s.stats.refused, 50);
    s.advance(2_000);
    assert_eq!(s.stats.hosts, 100);
    // Ten quiet seconds later they are gone.
    for t in 3..20 {
        s.advance(t * 1000);
    }
    assert_eq!(s.stats.hosts, 0);
    assert_eq!(s.stats.evicted, 100);
}

mod table {
    //! The host table against a plain map: whatever the order of arrivals,
    //! seconds and evictions (backward-shift deletion in crowded probe
    //! chains), every host is found again, counted once, and forgotten
    //! exactly when idle (hosts stay under half the smallest table, whose
    //! eviction sweep covers all of it every second).
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_a_map(ops in proptest::collection::vec((0u32..450, 0u64..3), 1..4000), idle in 0u64..3) {
            let bounds = Bounds { max_hosts: 10_000, idle_s: idle, detail_pps: u64::MAX, ..Bounds::default() };
            let mut s = Shard::new(vec![Limit::default()], bounds);
            let mut now = 50_000_000u64;
            s.advance(now);
            let mut second: BTreeMap<u32, u32> = BTreeMap::new();
            let mut last: BTreeMap<u32, u64> = BTreeMap::new();
            let check = |snap: Snapshot, second: &mut BTreeMap<u32, u32>, last: &mut BTreeMap<u32, u64>| {
                let got: BTreeMap<u32, u32> = snap
                    .hosts
                    .iter()
                    .map(|h| (u32::from_be_bytes(h.addr.0[12..].try_into().unwrap()), h.inbound.packets[class::ALL]))
                    .collect();
                prop_assert_eq!(got.len(), snap.hosts.len(), "a host reported twice");
                prop_assert_eq!(&got, &*second);
                second.clear();
                last.retain(|_, &mut l| l + idle >= snap.second);
                Ok(())
            };
            for (host, dt) in ops {
                now += dt * 400;
                if let Some(snap) = s.advance(now) {
                    check(snap, &mut second, &mut last)?;
                    prop_assert_eq!(s.stats.hosts as usize, last.len());
                }
                let a = 0xc633_0000 + host * 7;
                s.account(&Rec::new(&rec(a.to_be_bytes(), proto::UDP, 0, 1, 100), 0, false));
                s.check().map_err(TestCaseError::fail)?;
                *second.entry(a).or_default() += 1;
                last.insert(a, now / 1000);
            }
            let snap = s.flush();
            check(snap, &mut second, &mut last)?;
        }

        /// Thousands of hosts arriving within seconds and leaving: the table
        /// grows while hosts come and go, migrating a few at a time, and
        /// every host is still found once, counted once, forgotten when idle.
        #[test]
        fn growth_loses_nobody(ops in proptest::collection::vec((0u32..6000, 0u64..400), 1..6000), idle in 0u64..3, off_thread: bool) {
            let bounds = Bounds { max_hosts: 100_000, idle_s: idle, detail_pps: u64::MAX, ..Bounds::default() };
            let mut s = Shard::new(vec![Limit::default()], bounds);
            if off_thread {
                s.off_thread_bytes = 0;
            }
            let mut now = 60_000_000u64;
            s.advance(now);
            let mut second: BTreeMap<u32, u32> = BTreeMap::new();
            let mut last: BTreeMap<u32, u64> = BTreeMap::new();
            for (host, dt) in ops {
                // Mostly the same second: hosts pile up before it ends.
                if dt == 0 {
                    now += 700;
                }
                if let Some(snap) = s.advance(now) {
                    let got: BTreeMap<u32, u32> = snap
                        .hosts
                        .iter()
                        .map(|h| (u32::from_be_bytes(h.addr.0[12..].try_into().unwrap()), h.inbound.packets[class::ALL]))
                        .collect();
                    prop_assert_eq!(got.len(), snap.hosts.len(), "a host reported twice");
                    prop_assert_eq!(&got, &second);
                    second.clear();
                    last.retain(|_, &mut l| l + idle >= snap.second);
                    // Eviction is exact only while the whole table is swept
                    // each second; never early.
                    prop_assert!(s.stats.hosts as usize >= last.len());
                }
                let a = 0xc000_0000 + host;
                s.account(&Rec::new(&rec(a.to_be_bytes(), proto::UDP, 0, 1, 100), 0, false));
                *second.entry(a).or_default() += 1;
                last.insert(a, now / 1000);
                if host % 64 == 0 {
                    s.check().map_err(TestCaseError::fail)?;
                }
            }
            s.check().map_err(TestCaseError::fail)?;
            let snap = s.flush();
            let n: u32 = snap.hosts.iter().map(|h| h.inbound.packets[class::ALL]).sum();
            prop_assert_eq!(n, second.values().sum::<u32>());
        }

        /// One long probe chain that wraps around the table's end, its
        /// members arriving and leaving in any order.
        #[test]
        fn a_crowded_chain_survives_any_eviction_order(ops in proptest::collection::vec((0usize..48, 0u64..3), 1..2000)) {
            let chain = colliding(48);
            let bounds = Bounds { max_hosts: 1_000, idle_s: 0, detail_pps: u64::MAX, ..Bounds::default() };
            let mut s = Shard::new(vec![Limit::default()], bounds);
            let mut now = 80_000_000u64;
            s.advance(now);
            let mut second: BTreeMap<u32, u32> = BTreeMap::new();
            for (k, dt) in ops {
                now += dt * 600;
                if let Some(snap) = s.advance(now) {
                    let got: BTreeMap<u32, u32> = snap
                        .hosts
                        .iter()
                        .map(|h| (u32::from_be_bytes(h.addr.0[12..].try_into().unwrap()), h.inbound.packets[class::ALL]))
                        .collect();
                    prop_assert_eq!(got.len(), snap.hosts.len(), "a host reported twice");
                    prop_assert_eq!(&got, &second);
                    second.clear();
                }
                let a = chain[k];
                s.account(&Rec::new(&rec(a.to_be_bytes(), proto::UDP, 0, 1, 100), 0, false));
                s.check().map_err(TestCaseError::fail)?;
                *second.entry(a).or_default() += 1;
            }
        }
    }

    /// `n` IPv4 addresses whose home slot in the smallest table (2048
    /// slots) is one of its last eight or first eight.
    fn colliding(n: usize) -> Vec<u32> {
        let t = Table::with_capacity(1024);
        assert_eq!(t.slots.len(), 2048);
        (0xc000_0000u32..)
            .filter(|&a| {
                let h = t.home(u128::from_be_bytes(Addr::v4(a.to_be_bytes()).0));
                !(8..2040).contains(&h)
            })
            .take(n)
            .collect()
    }
}

/// Five records of `packets` packets each for 192.0.2.`host`.
fn burst(s: &mut Shard, host: u8, packets: u64) {
    for _ in 0..5 {
        let r = rec([192, 0, 2, host], proto::UDP, 0, packets, packets * 100);
        s.account(&Rec::new(&r, 0, false));
    }
}

fn detailed(snap: &Snapshot) -> Vec<u8> {
    let mut v: Vec<u8> = snap
        .hosts
        .iter()
        .filter(|h| h.details.is_some())
        .map(|h| h.addr.0[15])
        .collect();
    v.sort_unstable();
    v
}

/// A full pool of quiet hosts must not shut the target of an attack out
/// of the details its classification needs: a far busier host takes them
/// from the quietest holder.
#[test]
fn a_far_busier_host_takes_details_from_the_quietest() {
    let bounds = Bounds {
        max_detailed: 4,
        detail_pps: 100,
        ..Bounds::default()
    };
    let mut s = Shard::new(vec![Limit::default()], bounds);
    s.advance(5_000_000);
    for h in 1..=4 {
        burst(&mut s, h, 40 + u64::from(h));
    }
    let snap = s.advance(5_001_000).unwrap();
    assert_eq!(detailed(&snap), [1, 2, 3, 4]);
    for h in 1..=4 {
        burst(&mut s, h, 40 + u64::from(h));
    }
    burst(&mut s, 9, 20_000);
    // Busy, but not four times the quietest: refused.
    burst(&mut s, 10, 50);
    let snap = s.advance(5_002_000).unwrap();
    assert_eq!(detailed(&snap), [2, 3, 4, 9], "host 1 was the quietest");
    assert_eq!(s.stats.details_replaced, 1);
    assert_eq!(s.stats.details_refused, 1);
    assert_eq!(s.stats.detailed, 4);
}

/// Details of a host that went silent are let go ten seconds later (not
/// only when the host is forgotten, minutes later), so the pool does not
/// fill up with the hosts of an attack that moved on.
#[test]
fn details_of_a_host_gone_silent_are_let_go() {
    let bounds = Bounds {
        max_detailed: 1,
        detail_pps: 100,
        ..Bounds::default()
    };
    let mut s = Shard::new(vec![Limit::default()], bounds);
    let mut now = 5_000_000;
    s.advance(now);
    burst(&mut s, 1, 1000);
    now += 1000;
    assert_eq!(detailed(&s.advance(now).unwrap()), [1]);
    for _ in 0..11 {
        now += 1000;
        s.advance(now);
    }
    assert_eq!(s.stats.detailed, 0);
    // A new host as busy as the first was gets them without a fight.
    burst(&mut s, 2, 1000);
    now += 1000;
    assert_eq!(detailed(&s.advance(now).unwrap()), [2]);
    assert_eq!(s.stats.details_refused, 0);
    assert_eq!(s.stats.details_replaced, 0);
}

#[test]
fn a_triggered_host_is_peeked_at_until_its_evidence_has_come() {
    let mut s = shard(Some(1000));
    s.advance(20_000_000);
    // Sampled at 1:100: each record a packet of 100.
    let sampled = |i: u16| FlowRecord {
        src_port: 123,
        dst_port: 1000 + i,
        protocol: proto::UDP,
        sampling: 100,
        ..rec(HOST, proto::UDP, 0, 100, 46_800)
    };
    for i in 0..30 {
        s.account(&Rec::new(&sampled(i), 0, false));
    }
    assert_eq!(
        s.take_triggers().len(),
        1,
        "3,000 pps > 1,000, from 30 samples"
    );
    let p = s.take_peeks();
    assert_eq!(p.len(), 1, "a look at once");
    assert_eq!(p[0].addr, Addr::v4(HOST));
    assert_eq!(p[0].second, 20_000);
    assert!(p[0].details.sampled >= 5, "{}", p[0].details.sampled);
    assert_eq!(p[0].details.sized, p[0].details.sampled, "one packet each");
    assert!(s.take_peeks().is_empty(), "not again at once");
    s.advance(20_000_000 + PEEK_EVERY_MS);
    s.account(&Rec::new(&sampled(99), 0, false));
    assert_eq!(s.take_peeks().len(), 1);
    // Past the watch: no more.
    for t in (PEEK_EVERY_MS..=PEEK_FOR_MS + PEEK_EVERY_MS).step_by(PEEK_EVERY_MS as usize) {
        s.advance(20_000_000 + t);
        s.account(&Rec::new(&sampled(7), 0, false));
        s.take_peeks();
    }
    s.advance(20_000_000 + PEEK_FOR_MS + 3 * PEEK_EVERY_MS);
    assert!(s.take_peeks().is_empty());
}

#[test]
fn lengths_come_only_from_records_of_one_packet() {
    let mut s = Shard::new(
        vec![Limit::default()],
        Bounds {
            detail_pps: 1,
            ..Bounds::default()
        },
    );
    s.advance(30_000_000);
    // A flow of 64- and 1400-byte packets: 10 packets, 7,320 bytes.
    for _ in 0..10 {
        s.account(&Rec::new(&rec(HOST, proto::UDP, 0, 10, 7_320), 0, false));
    }
    let snap = s.advance(30_001_000).unwrap();
    let d = snap.hosts[0].details.as_ref().expect("details");
    assert_eq!(d.sized, 0, "an average is no packet's length");
    assert_eq!((d.min_size, d.max_size), (0, 0));
    // Samples of single packets say their lengths.
    for len in [64, 1400, 700] {
        for _ in 0..4 {
            s.account(&Rec::new(&rec(HOST, proto::UDP, 0, 1, len), 0, false));
        }
    }
    let snap = s.advance(30_002_000).unwrap();
    let d = snap.hosts[0].details.as_ref().expect("details");
    assert_eq!((d.min_size, d.max_size), (64, 1400));
    assert!(d.seen.items().iter().all(|x| x.length > 0));
}

#[test]
fn records_without_their_l4_header_stay_out_of_ports_flags_and_protocols() {
    let mut s = Shard::new(
        vec![Limit::default()],
        Bounds {
            detail_pps: 1,
            ..Bounds::default()
        },
    );
    s.advance(40_000_000);
    // NetFlow v5 has no fragment fields: a UDP "flow" with both ports 0
    // is later fragments, a TCP one with flags 0x02 and no header a SYN
    // nobody saw.
    let mut frag = rec(HOST, proto::UDP, 0, 10, 15_000);
    frag.src_port = 0;
    frag.dst_port = 0;
    let mut cut = rec(HOST, proto::TCP, 0x02, 10, 600);
    cut.flags |= flags::NO_L4;
    // IPv6 whose chain never reached the upper layer: protocol 60.
    let mut chain = rec(HOST, 60, 0, 10, 1000);
    chain.flags |= flags::NO_L4;
    for r in [&frag, &cut, &chain] {
        for _ in 0..5 {
            s.account(&Rec::new(r, 0, false));
        }
    }
    let snap = s.advance(40_001_000).unwrap();
    let h = &snap.hosts[0];
    assert_eq!(h.inbound.packets[class::ALL], 150, "all counted");
    assert_eq!(
        h.inbound.packets[class::TCP_SYN],
        0,
        "no flags seen, no SYN"
    );
    let d = h.details.as_ref().unwrap();
    assert!(d.dst_ports.is_empty() && d.src_ports.is_empty(), "{d:?}");
    assert_eq!(d.tcp.iter().sum::<u64>(), 0);
    assert!(d.protocols.is_empty(), "no extension header as a protocol");
}

#[test]
fn a_long_flow_keeps_its_rate_over_the_seconds_after_its_record() {
    let mut s = shard(Some(50_000));
    s.advance(50_000_000);
    // A flood in one persistent 5-tuple, exported after a 60 s active
    // timeout: 6,000,000 packets in 60 s, 100 kpps.
    let mut r = rec(HOST, proto::UDP, 0, 6_000_001, 600_000_100);
    r.duration_s = 60;
    s.account(&Rec::new(&r, 0, false));
    let mut total = 0u64;
    let mut seconds = Vec::new();
    for t in 1..=70u64 {
        if let Some(snap) = s.advance(50_000_000 + t * 1000) {
            let p = snap
                .hosts
                .iter()
                .map(|h| u64::from(h.inbound.packets[class::ALL]))
                .sum::<u64>();
            total += p;
            seconds.push(p);
        }
        // A trigger at the rate, not at 1/60 of it.
        if t == 2 {
            assert_eq!(s.take_triggers().len(), 1, "100 kpps > 50 kpps");
        }
    }
    assert_eq!(total, 6_000_001, "the total is exact");
    assert_eq!(
        seconds[0], 100_001,
        "the first second: its rate and the remainder"
    );
    assert!(seconds[1..60].iter().all(|&p| p == 100_000), "{seconds:?}");
    assert!(seconds[60..].iter().all(|&p| p == 0));
    // Held seconds bring packets but no new flows.
    let mut s = shard(None);
    s.advance(60_000_000);
    let mut r = rec(HOST, proto::TCP, 0x10, 300, 30_000);
    r.duration_s = 3;
    s.account(&Rec::new(&r, 0, false));
    let first = s.advance(60_001_000).unwrap();
    assert_eq!(first.hosts[0].inbound.flows, 1);
    let second = s.advance(60_002_000).unwrap();
    assert_eq!(second.hosts[0].inbound.flows, 0);
    assert_eq!(second.hosts[0].inbound.packets[class::ALL], 100);
    assert_eq!(second.hosts[0].inbound.bytes, 10_000);
}

#[test]
fn a_full_table_forgets_a_silent_host_for_a_new_one() {
    let mut s = Shard::new(
        vec![Limit::default()],
        Bounds {
            max_hosts: 500,
            ..Bounds::default()
        },
    );
    s.advance(70_000_000);
    // A spray: one packet to each of 500 addresses fills the table.
    for i in 0..500u32 {
        let [a, b, c, d] = (0xc000_0000u32 + i).to_be_bytes();
        s.account(&Rec::new(
            &rec([a, b, c, d], proto::UDP, 0, 1, 80),
            0,
            false,
        ));
    }
    assert_eq!(s.stats.refused, 0);
    // A host already active this second, and a new one at once: refused.
    s.account(&Rec::new(&rec(HOST, proto::UDP, 0, 1, 80), 0, false));
    assert_eq!(s.stats.refused, 1);
    // Seconds later, the sprayed addresses are silent: the victim gets a
    // slot (and keeps its counts in the snapshot).
    s.advance(70_005_000);
    for _ in 0..10 {
        s.account(&Rec::new(&rec(HOST, proto::UDP, 0, 100, 8_000), 0, false));
    }
    assert_eq!(s.stats.made_room, 1);
    let snap = s.advance(70_006_000).unwrap();
    let victim = snap
        .hosts
        .iter()
        .find(|h| h.addr == Addr::v4(HOST))
        .unwrap();
    assert_eq!(victim.inbound.packets[class::ALL], 1000);
    s.check().unwrap();
}

#[test]
fn a_prefix_aggregate_costs_what_the_docs_say() {
    // docs/detection.md states the cost per prefix; hold it to the structs.
    // Every record touches one line of it.
    assert_eq!(std::mem::size_of::<super::PrefixRun>(), 64);
    let acc = std::mem::size_of::<super::PrefixAcc>();
    // This second's busiest hosts and the second before's.
    let top = 2 * super::PREFIX_TOP * std::mem::size_of::<(Addr, u64)>();
    eprintln!("prefix aggregate: 64 + {acc} bytes, its busiest hosts {top} more");
    assert!(64 + acc + top <= 1024, "64 + {acc} + {top}");
}

fn prefix_shard(pps: u64) -> Shard {
    Shard::new(
        vec![Limit {
            pps: None,
            bps: None,
            prefix: Some(PrefixLimit {
                len_v4: 24,
                len_v6: 64,
                pps: Some(pps),
                bps: None,
            }),
        }],
        Bounds::default(),
    )
}

#[test]
fn a_prefix_sums_its_hosts_and_names_the_busiest_exactly() {
    let mut s = prefix_shard(1_000_000);
    s.advance(20_000_000);
    // 200 hosts of 192.0.2.0/24 with 10 packets each, .7 with 500 more, and
    // one host of the /24 beside it.
    for round in 0..10u16 {
        for h in 0..200u8 {
            let mut r = rec([192, 0, 2, h], proto::UDP, 0, 1, 100);
            r.src_port = 53 + round;
            s.account(&Rec::new(&r, 0, false));
        }
    }
    s.account(&Rec::new(
        &rec([192, 0, 2, 7], proto::UDP, 0, 500, 50_000),
        0,
        false,
    ));
    s.account(&Rec::new(
        &rec([192, 0, 3, 1], proto::TCP, 0x02, 3, 180),
        0,
        false,
    ));
    let snap = s.advance(20_001_000).unwrap();
    assert_eq!(snap.prefixes.len(), 2);
    let p = snap
        .prefixes
        .iter()
        .find(|p| p.prefix == Addr::v4([192, 0, 2, 0]))
        .unwrap();
    assert_eq!(p.len, 24);
    assert_eq!(p.inbound.packets[class::ALL], 2_500);
    assert_eq!(p.inbound.packets[class::UDP], 2_500);
    assert_eq!(p.inbound.bytes, 250_000);
    assert_eq!(p.inbound.flows, 2_001);
    assert_eq!(p.hosts, 200);
    assert_eq!(p.top_hosts.len(), PREFIX_TOP);
    assert_eq!(p.top_hosts[0], (Addr::v4([192, 0, 2, 7]), 510));
    assert!(p.top_hosts[1..].iter().all(|t| t.1 == 10));
    let q = snap
        .prefixes
        .iter()
        .find(|p| p.prefix == Addr::v4([192, 0, 3, 0]))
        .unwrap();
    assert_eq!((q.hosts, q.inbound.packets[class::TCP_SYN]), (1, 3));
    assert_eq!(q.inbound.packets[class::TCP], 3);
    // A quiet second hands over nothing.
    assert!(s.advance(20_002_000).unwrap().prefixes.is_empty());
}

#[test]
fn a_busy_prefix_is_looked_at_before_its_second_ends() {
    let mut s = prefix_shard(8_000);
    s.advance(30_000_000);
    // 999 packets: under an eighth of the limit, nothing to look at.
    for h in 0..111u8 {
        s.account(&Rec::new(
            &rec([192, 0, 2, h], proto::UDP, 0, 9, 900),
            0,
            false,
        ));
    }
    assert!(s.take_prefix_peeks().is_empty());
    s.advance(30_000_100);
    for h in 0..100u8 {
        s.account(&Rec::new(
            &rec([192, 0, 2, h], proto::UDP, 0, 30, 3_000),
            0,
            false,
        ));
    }
    let peeks = s.take_prefix_peeks();
    assert_eq!(peeks.len(), 1, "looked at once, however many records");
    let p = &peeks[0];
    assert_eq!(p.prefix, Addr::v4([192, 0, 2, 0]));
    assert_eq!(p.window.packets[class::ALL], 3_999);
    assert!(p.details.is_some(), "past a quarter of the limit: details");
    assert_eq!(p.hosts, 111);
    // Spread evenly: no host is surely among the busiest.
    assert!(p.top_hosts.iter().all(|t| t.1 <= 60), "{:?}", p.top_hosts);
    // Not again before PEEK_EVERY_MS.
    s.advance(30_000_150);
    s.account(&Rec::new(
        &rec([192, 0, 2, 1], proto::UDP, 0, 30, 3_000),
        0,
        false,
    ));
    assert!(s.take_prefix_peeks().is_empty());
    // The next second's look slides over the one before.
    let snap = s.advance(30_001_500).unwrap();
    assert_eq!(snap.prefixes[0].inbound.packets[class::ALL], 4_029);
    assert_eq!(snap.prefixes[0].hosts, 111);
    s.account(&Rec::new(
        &rec([192, 0, 2, 1], proto::UDP, 0, 1, 100),
        0,
        false,
    ));
    let peeks = s.take_prefix_peeks();
    assert_eq!(peeks.len(), 1);
    // Half of the second before is still within the last 1000 ms.
    assert_eq!(peeks[0].window.packets[class::ALL], 4_029 / 2 + 1);
    assert_eq!(peeks[0].hosts, 111);
}

#[test]
fn idle_prefixes_are_forgotten_and_their_room_reused() {
    let mut s = prefix_shard(1_000_000);
    s.advance(40_000_000);
    s.account(&Rec::new(
        &rec([192, 0, 2, 1], proto::UDP, 0, 1, 100),
        0,
        false,
    ));
    s.advance(40_001_000);
    // Past the idle time, at a second that sweeps, then another prefix
    // takes the room.
    let idle = Bounds::default().idle_s;
    let sweep_at = 40_000 + idle + u64::from(PREFIX_SWEEP_S);
    assert_eq!(sweep_at % u64::from(PREFIX_SWEEP_S), 0);
    s.advance(sweep_at * 1000);
    assert_eq!(s.prefix_ids.len(), 1, "not swept before its second ends");
    s.advance(sweep_at * 1000 + 1000);
    assert!(s.prefix_ids.is_empty());
    s.account(&Rec::new(
        &rec([198, 51, 100, 1], proto::UDP, 0, 2, 200),
        0,
        false,
    ));
    assert_eq!(s.prefix_runs.len(), 1, "the forgotten slot is reused");
    let snap = s.advance(sweep_at * 1000 + 2000).unwrap();
    assert_eq!(snap.prefixes.len(), 1);
    assert_eq!(snap.prefixes[0].prefix, Addr::v4([198, 51, 100, 0]));
    assert_eq!(snap.prefixes[0].hosts, 1);
}

#[test]
fn forged_counts_saturate_and_never_panic() {
    // An export may claim any count (IPFIX's are 64-bit): the host and its
    // prefix saturate, the look and the second are still made.
    let mut s = prefix_shard(1_000);
    s.advance(50_000_000);
    for h in 0..3u8 {
        let mut r = rec([192, 0, 2, h], proto::UDP, 0, u64::MAX, u64::MAX);
        r.sampling = u32::MAX;
        s.account(&Rec::new(&r, 0, false));
        s.account(&Rec::new(&r, 0, false));
    }
    s.advance(50_000_500);
    assert_eq!(s.take_prefix_peeks().len(), 1);
    let snap = s.advance(50_001_000).unwrap();
    assert_eq!(snap.prefixes[0].inbound.packets[class::ALL], u32::MAX);
    assert_eq!(snap.prefixes[0].inbound.bytes, 6 * MAX_RECORD_BYTES);
    assert_eq!(snap.hosts[0].inbound.packets[class::ALL], u32::MAX);
    s.account(&Rec::new(
        &rec([192, 0, 2, 1], proto::UDP, 0, 1, 1),
        0,
        false,
    ));
    s.advance(50_001_500);
    let peeks = s.take_prefix_peeks();
    assert!(peeks[0].window.bytes >= 2 * MAX_RECORD_BYTES);
}

#[test]
fn a_full_shard_makes_room_for_a_new_prefix_from_the_longest_idle() {
    let mut s = prefix_shard(1_000_000);
    s.advance(60_000_000);
    // Every slot taken by a prefix seen once (as forged records would).
    for i in 0..MAX_PREFIXES as u32 {
        let a = (0x0a00_0000u32 + (i << 8)).to_be_bytes();
        s.account(&Rec::new(&rec(a, proto::UDP, 0, 1, 100), 0, false));
    }
    s.advance(60_001_000);
    s.advance(60_002_000);
    // Two seconds on, a real prefix gets room; the refused count stays 0.
    for h in 0..50u8 {
        s.account(&Rec::new(
            &rec([192, 0, 2, h], proto::UDP, 0, 100, 10_000),
            0,
            false,
        ));
    }
    assert_eq!(s.stats.prefixes_refused, 0);
    assert_eq!(s.stats.prefixes_evicted, MAX_PREFIXES as u64 / 16);
    let snap = s.advance(60_003_000).unwrap();
    let p = snap
        .prefixes
        .iter()
        .find(|p| p.prefix == Addr::v4([192, 0, 2, 0]))
        .unwrap();
    assert_eq!((p.hosts, p.inbound.packets[class::ALL]), (50, 5_000));
}

#[test]
fn a_prefix_refused_room_is_counted_once_a_second_per_host() {
    let mut s = prefix_shard(1_000_000);
    s.advance(70_000_000);
    for i in 0..MAX_PREFIXES as u32 {
        let a = (0x0a00_0000u32 + (i << 8)).to_be_bytes();
        s.account(&Rec::new(&rec(a, proto::UDP, 0, 1, 100), 0, false));
    }
    // All busy this second: nothing idle to forget, the new host waits.
    for _ in 0..100 {
        s.account(&Rec::new(
            &rec([192, 0, 2, 1], proto::UDP, 0, 1, 100),
            0,
            false,
        ));
    }
    assert_eq!(s.stats.prefixes_refused, 1);
}

#[test]
fn a_sampled_record_costs_what_the_docs_say() {
    // ARCHITECTURE.md: 48 bytes a record, 256 a reservoir (12 KiB).
    assert_eq!(std::mem::size_of::<super::sketch::Seen>(), 48);
    assert_eq!(super::sketch::RESERVOIR, 256);
}
