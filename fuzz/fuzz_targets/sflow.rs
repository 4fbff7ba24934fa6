//! Fuzzes the sflow decoder with one datagram at a time and fresh state.
#![no_main]

use levee_collectors::{sflow, Datagram, Tally};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dg = Datagram { data, source: [192, 0, 2, 1].into(), received_ms: 1_700_000_000_000 };
    let mut state = sflow::State::default();
    let mut out = Vec::new();
    let _ = sflow::decode(&dg, &mut state, &mut out, &mut Tally::default());
});
