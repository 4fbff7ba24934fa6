//! Fuzzes the whole per-exporter path (protocol sniffing, every decoder,
//! counters) with a sequence of datagrams split at "\n--\n".
#![no_main]

use levee_collectors::exporter::Exporter;
use levee_collectors::Datagram;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut e = Exporter::default();
    let mut out = Vec::new();
    for (i, dgram) in data.split(|&b| b == 0xff).enumerate() {
        let dg = Datagram { data: dgram, source: [192, 0, 2, 1].into(), received_ms: 1_000 * i as u64 };
        let _ = e.decode(&dg, &mut out);
        out.clear();
    }
});
