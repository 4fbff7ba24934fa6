//! Writing classic pcap files (microsecond timestamps), for the scenario
//! generator and for test fixtures of captured export.

use std::io::{self, Write};

/// pcap LINKTYPE values levee writes.
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;

/// A pcap writer over any `Write`.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W, linktype: u32, snaplen: u32) -> io::Result<PcapWriter<W>> {
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&snaplen.to_le_bytes())?;
        out.write_all(&linktype.to_le_bytes())?;
        Ok(PcapWriter { out, snaplen })
    }

    /// Writes one frame captured at `time_us` (Unix µs); `wire_len` is its
    /// length on the wire (the frame may be cut at the snap length).
    pub fn write(&mut self, time_us: u64, frame: &[u8], wire_len: usize) -> io::Result<()> {
        let cap = frame.len().min(self.snaplen as usize);
        self.out
            .write_all(&((time_us / 1_000_000) as u32).to_le_bytes())?;
        self.out
            .write_all(&((time_us % 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&(cap as u32).to_le_bytes())?;
        self.out
            .write_all(&(wire_len.max(cap) as u32).to_le_bytes())?;
        self.out.write_all(&frame[..cap])
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// An Ethernet/IPv4/UDP frame around `payload`, as flow export arrives on
/// the wire (for fixtures of captured export).
pub fn udp_frame(
    src: std::net::Ipv4Addr,
    sport: u16,
    dst: std::net::Ipv4Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let spec = super::packet::PacketSpec::udp(
        src.into(),
        dst.into(),
        sport,
        dport,
        (28 + payload.len()) as u16,
    );
    let mut f = Vec::with_capacity(42 + payload.len());
    super::packet::ethernet(&spec, 28, &mut f);
    f.extend_from_slice(payload);
    f
}
