//! Fuzzes the netflow9 decoder. The input is split into datagrams at each
//! "\n--\n", all fed to one exporter state, so templates sent in one
//! datagram are used (and abused) by the next.
#![no_main]

use levee_collectors::ipfix::{self, State, Version};
use levee_collectors::{Datagram, Tally};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut state = State::default();
    let mut out = Vec::new();
    let mut rest = data;
    let mut now = 1_700_000_000_000u64;
    loop {
        let (dgram, next) = match rest.windows(4).position(|w| w == b"\n--\n") {
            Some(i) => (&rest[..i], Some(&rest[i + 4..])),
            None => (rest, None),
        };
        let dg = Datagram { data: dgram, source: [192, 0, 2, 1].into(), received_ms: now };
        let _ = ipfix::decode(Version::V9, &dg, &mut state, &mut out, &mut Tally::default());
        now += 1000;
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
});
