//! Differential fuzzing: fuzzed NetFlow v9/IPFIX streams (split at
//! "\n--\n") decoded by levee and by netgauze-flow-pkt must give the same
//! flows, on the messages netgauze accepts. The first byte picks the version.
#![no_main]

#[path = "../../tests/support/differential.rs"]
mod differential;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let version: u16 = if pick & 1 == 0 { 9 } else { 10 };
    let messages: Vec<Vec<u8>> = rest
        .split(|&b| b == 0xff)
        .filter(|m| m.len() >= 4)
        .map(|m| {
            // Make each piece claim the chosen version, so both decoders
            // get past the first two bytes.
            let mut m = m.to_vec();
            m[..2].copy_from_slice(&version.to_be_bytes());
            m
        })
        .collect();
    let (reference, parsed) = differential::netgauze_flows(version, &messages);
    let ours = differential::levee_flows(&parsed);
    // levee adds the reverse flow of RFC 5103 biflows; compare the others.
    let ours: Vec<_> = if ours.len() > reference.len() { ours.into_iter().filter(|f| reference.contains(f)).collect() } else { ours };
    assert_eq!(ours, reference);
});
