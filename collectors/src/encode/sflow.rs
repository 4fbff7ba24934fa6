//! sFlow v5 datagrams: flow samples (compact or expanded) carrying a raw
//! packet header record, and counter samples with generic interface counters.

use std::net::IpAddr;

use crate::sflow::IfCounters;

/// One sample of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    Flow {
        expanded: bool,
        seq: u32,
        source_index: u32,
        rate: u32,
        pool: u32,
        drops: u32,
        input: u32,
        output: u32,
        /// The frame's length on the wire (Ethernet, FCS included per the spec).
        frame_len: u32,
        /// The sampled header bytes (an Ethernet frame, usually cut at 128 bytes).
        header: Vec<u8>,
    },
    Counters {
        seq: u32,
        if_index: u32,
        counters: IfCounters,
    },
}

/// A whole datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub agent: IpAddr,
    pub sub_agent: u32,
    pub seq: u32,
    pub uptime_ms: u32,
    pub samples: Vec<Sample>,
}

fn w(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn q(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes a length-prefixed XDR block: `fmt`, then the length of what `f` writes.
fn block(out: &mut Vec<u8>, fmt: u32, f: impl FnOnce(&mut Vec<u8>)) {
    w(out, fmt);
    let len_at = out.len();
    w(out, 0);
    f(out);
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends the encoded datagram to `out`.
pub fn encode(d: &Datagram, out: &mut Vec<u8>) {
    w(out, 5);
    match d.agent {
        IpAddr::V4(a) => {
            w(out, 1);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            w(out, 2);
            out.extend_from_slice(&a.octets());
        }
    }
    w(out, d.sub_agent);
    w(out, d.seq);
    w(out, d.uptime_ms);
    w(out, d.samples.len() as u32);
    for s in &d.samples {
        match s {
            Sample::Flow {
                expanded,
                seq,
                source_index,
                rate,
                pool,
                drops,
                input,
                output,
                frame_len,
                header,
            } => block(out, if *expanded { 3 } else { 1 }, |out| {
                w(out, *seq);
                if *expanded {
                    w(out, 0);
                    w(out, *source_index);
                } else {
                    w(out, *source_index & 0x00ff_ffff);
                }
                w(out, *rate);
                w(out, *pool);
                w(out, *drops);
                if *expanded {
                    for v in [0, *input, 0, *output] {
                        w(out, v);
                    }
                } else {
                    w(out, *input & 0x3fff_ffff);
                    w(out, *output & 0x3fff_ffff);
                }
                w(out, 1); // one record: the raw packet header
                block(out, 1, |out| {
                    w(out, 1); // header protocol: Ethernet
                    w(out, *frame_len);
                    w(out, 4); // stripped: the FCS
                    w(out, header.len() as u32);
                    out.extend_from_slice(header);
                    out.resize(out.len() + (4 - header.len() % 4) % 4, 0);
                });
            }),
            Sample::Counters {
                seq,
                if_index,
                counters: c,
            } => block(out, 2, |out| {
                w(out, *seq);
                w(out, *if_index & 0x00ff_ffff);
                w(out, 1);
                block(out, 1, |out| {
                    w(out, *if_index);
                    w(out, c.if_type);
                    q(out, c.speed);
                    w(out, 1); // direction: full duplex
                    w(out, 3); // status: admin and oper up
                    q(out, c.in_octets);
                    w(out, c.in_packets as u32);
                    w(out, 0);
                    w(out, 0);
                    w(out, c.in_discards);
                    w(out, c.in_errors);
                    w(out, 0);
                    q(out, c.out_octets);
                    w(out, c.out_packets as u32);
                    w(out, 0);
                    w(out, 0);
                    w(out, c.out_discards);
                    w(out, c.out_errors);
                    w(out, 0);
                });
            }),
        }
    }
}
