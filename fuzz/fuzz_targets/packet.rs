//! Fuzzes L2–L4 header parsing (pcap frames and sFlow raw headers): the
//! first byte picks the link type.
#![no_main]

use levee_collectors::packet::{self, LinkType};
use libfuzzer_sys::fuzz_target;

const LINKS: [LinkType; 7] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::RawIp,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::Null,
];

fuzz_target!(|data: &[u8]| {
    if let Some((&pick, frame)) = data.split_first() {
        let _ = packet::parse(LINKS[usize::from(pick) % LINKS.len()], frame);
    }
});
