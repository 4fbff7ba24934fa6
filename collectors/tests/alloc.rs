//! Decoding allocates nothing per datagram in steady state: after the first
//! datagrams (templates learnt, the output buffer grown), decoding more of
//! them makes no heap allocation at all. Counted with a global allocator
//! that counts (this test binary only), on the decoding thread only: the
//! test harness's own threads may allocate whenever they like.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use levee_collectors::encode::samples;
use levee_collectors::exporter::Exporter;
use levee_collectors::{Datagram, FlowRecord};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the thread whose allocations are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's obligations are passed on as they are.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_decoding_does_not_allocate() {
    COUNTED.with(|c| c.set(true));
    let src: IpAddr = "192.0.2.1".parse().unwrap();
    let (ipfix_t, ipfix_d) = samples::ipfix(27);
    let (v9_t, v9_d) = samples::netflow9(27);
    /// (protocol, a template datagram to learn first, the data datagram)
    type Case = (&'static str, Option<Vec<u8>>, Vec<u8>);
    let cases: Vec<Case> = vec![
        ("ipfix", Some(ipfix_t), ipfix_d),
        ("netflow9", Some(v9_t), v9_d),
        ("netflow5", None, samples::netflow5(30)),
        ("sflow", None, samples::sflow(8)),
    ];
    for (name, template, data) in cases {
        let mut e = Exporter::default();
        let mut out: Vec<FlowRecord> = Vec::with_capacity(64);
        let mut feed = |bytes: &[u8], out: &mut Vec<FlowRecord>| {
            out.clear();
            e.decode(
                &Datagram {
                    data: bytes,
                    source: src,
                    received_ms: 1,
                },
                out,
            )
            .unwrap();
        };
        if let Some(t) = &template {
            feed(t, &mut out);
        }
        for _ in 0..10 {
            feed(&data, &mut out);
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..1000 {
            feed(&data, &mut out);
        }
        let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert!(!out.is_empty(), "{name}: nothing decoded");
        assert_eq!(made, 0, "{name}: {made} allocations in 1000 datagrams");
    }
}
