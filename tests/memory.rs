//! Memory per tracked host (goal ≤ 512 bytes, ACC-3): the heap a shard
//! holds for its hosts, counted by a global allocator that tracks live
//! bytes (this test binary only), plus its host tables (anonymous mappings
//! that bypass the allocator, counted by `accounting::mapped_bytes`), divided
//! by the hosts it tracks — at an ordinary fill, while a doubling moves
//! hosts (both tables held, for the seconds that takes) and once it has
//! (the emptiest table, the steady worst case). And `max_hosts` bounds it:
//! hosts beyond it are refused, not stored.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use levee::accounting::{mapped_bytes, Bounds, Limit, Rec, Shard};
use levee_collectors::record::proto;
use levee_collectors::{Addr, FlowRecord};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's obligations are passed on as they are.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes, and the host tables, which are mappings of their own.
fn live() -> isize {
    LIVE.load(Ordering::Relaxed) + mapped_bytes() as isize
}

fn record() -> FlowRecord {
    FlowRecord {
        packets: 3,
        bytes: 300,
        protocol: proto::UDP,
        ..FlowRecord::default()
    }
}

/// A shard holding `hosts` hosts after a second ended. Growth is waited
/// for after each record, so it happens at a known point.
fn filled(hosts: u32, bounds: Bounds) -> Shard {
    let mut shard = Shard::new(vec![Limit::default()], bounds);
    shard.advance(1_000_000);
    let r = record();
    for i in 0..hosts {
        let dst = Addr::v4((0x0a00_0000 + i).to_be_bytes());
        shard.account(&Rec::new(&FlowRecord { dst, ..r }, 0, false));
        shard.settle();
    }
    drop(shard.advance(1_001_000).expect("a second ended"));
    shard
}

/// Ends seconds until no host is moving between tables any more, then
/// waits until the tables given up are unmapped (that happens on a thread
/// of its own): the shard's steady state.
fn steady(shard: &mut Shard) {
    let mut now = 1_002_000;
    shard.settle();
    while shard.migrating() {
        drop(shard.advance(now));
        now += 1000;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while mapped_bytes() != shard.table_bytes() {
        assert!(
            Instant::now() < deadline,
            "a spent table was never unmapped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn per_host(before: isize, shard: &Shard) -> f64 {
    (live() - before) as f64 / shard.stats.hosts.max(1) as f64
}

#[test]
fn a_tracked_host_costs_at_most_512_bytes_and_max_hosts_bounds_them() {
    let bounds = Bounds {
        max_hosts: 1_000_000,
        ..Bounds::default()
    };
    // An ordinary fill.
    let before = live();
    let mut shard = filled(200_000, bounds);
    steady(&mut shard);
    assert_eq!(shard.stats.hosts, 200_000);
    let at = per_host(before, &shard);
    eprintln!("200k hosts: {at:.0} bytes per tracked host");
    assert!(at <= 512.0, "{at:.0} bytes per host at 200k");
    drop(shard);

    // One host past half the table: it doubles. While the hosts move
    // across, both tables are held (for the seconds that takes); once
    // they have, the table is the emptiest (most bytes per host) it
    // ever is in a steady state.
    let before = live();
    let mut shard = filled((1 << 17) + 1, bounds);
    shard.settle();
    assert!(shard.migrating());
    let moving = per_host(before, &shard);
    eprintln!("while a doubling moves hosts: {moving:.0} bytes per tracked host");
    assert!(moving <= 768.0, "{moving:.0} bytes per host while growing");
    steady(&mut shard);
    let worst = per_host(before, &shard);
    eprintln!("steady worst case: {worst:.0} bytes per tracked host");
    assert!(worst <= 512.0, "{worst:.0} bytes per host after growth");
    drop(shard);

    // Twice `max_hosts` offered: the rest refused and counted, the memory
    // that of `max_hosts` hosts.
    let bounds = Bounds {
        max_hosts: 50_000,
        ..Bounds::default()
    };
    let before = live();
    let mut shard = filled(100_000, bounds);
    steady(&mut shard);
    assert_eq!(shard.stats.hosts, 50_000);
    assert_eq!(shard.stats.refused, 50_000);
    let at = per_host(before, &shard);
    assert!(at <= 512.0, "{at:.0} bytes per host at max_hosts");
}
