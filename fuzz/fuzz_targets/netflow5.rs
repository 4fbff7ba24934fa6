//! Fuzzes the netflow5 decoder with one datagram at a time and fresh state.
#![no_main]

use levee_collectors::{netflow5, Datagram, Tally};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dg = Datagram { data, source: [192, 0, 2, 1].into(), received_ms: 1_700_000_000_000 };
    let mut state = netflow5::State::default();
    let mut out = Vec::new();
    let _ = netflow5::decode(&dg, &mut state, &mut out, &mut Tally::default());
});
