//! Memory per tracked host (goal ≤ 512 bytes, ACC-3): the heap a shard
//! holds for its hosts, counted by a global allocator that tracks live
//! bytes (this test binary only), divided by the hosts it tracks — at an
//! ordinary fill and just after the table doubled, the worst moment. And
//! `max_hosts` bounds it: hosts beyond it are refused, not stored.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use levee::account::{Bounds, Limit, Rec, Shard};
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

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn record() -> FlowRecord {
    FlowRecord {
        packets: 3,
        bytes: 300,
        protocol: proto::UDP,
        ..FlowRecord::default()
    }
}

/// Bytes per host of a shard holding `hosts` hosts after a second ended.
fn bytes_per_host(hosts: u32, bounds: Bounds) -> (f64, Shard) {
    let before = live();
    let mut shard = Shard::new(vec![Limit::default()], bounds);
    shard.advance(1_000_000);
    let r = record();
    for i in 0..hosts {
        let dst = Addr::v4((0x0a00_0000 + i).to_be_bytes());
        shard.account(&Rec::new(&FlowRecord { dst, ..r }, 0, false));
    }
    let snap = shard.advance(1_001_000).expect("a second ended");
    drop(snap);
    let held = live() - before;
    let tracked = shard.stats.hosts.max(1);
    (held as f64 / tracked as f64, shard)
}

#[test]
fn a_tracked_host_costs_at_most_512_bytes_and_max_hosts_bounds_them() {
    let bounds = Bounds {
        max_hosts: 1_000_000,
        ..Bounds::default()
    };
    // An ordinary fill.
    let (per_host, shard) = bytes_per_host(200_000, bounds);
    assert_eq!(shard.stats.hosts, 200_000);
    assert!(per_host <= 512.0, "{per_host:.0} bytes per host at 200k");
    drop(shard);
    // One host past half the table: it has just doubled, the emptiest
    // (most bytes per host) the table ever is.
    let (per_host, shard) = bytes_per_host((1 << 17) + 1, bounds);
    assert!(
        per_host <= 512.0,
        "{per_host:.0} bytes per host just after growth"
    );
    eprintln!("worst case: {per_host:.0} bytes per tracked host");
    drop(shard);

    // Twice `max_hosts` offered: the rest refused and counted, the memory
    // that of `max_hosts` hosts.
    let bounds = Bounds {
        max_hosts: 50_000,
        ..Bounds::default()
    };
    let (per_host, shard) = bytes_per_host(100_000, bounds);
    assert_eq!(shard.stats.hosts, 50_000);
    assert_eq!(shard.stats.refused, 50_000);
    assert!(
        per_host <= 512.0,
        "{per_host:.0} bytes per host at max_hosts"
    );
}
