//! levee-collectors: turns every flow source into one compact [`FlowRecord`].
//!
//! The decoders are sans-IO, one module per protocol ([`sflow`],
//! [`netflow5`], and the template-driven NetFlow v9/IPFIX), plus [`packet`]
//! for L2–L4 header parsing shared by sFlow raw headers and pcap. Each takes a
//! [`Datagram`] (bytes, source, receive time), the exporter's state, a
//! caller-owned output buffer and a [`Tally`]; none opens a socket, starts a
//! thread or reads a clock. [`exporter::Exporter`] holds one exporter's state
//! and counters and picks the decoder by sniffing the datagram.
//!
//! Decoders never allocate per record: records are appended to the caller's
//! reused `Vec<FlowRecord>`, and errors are `Copy` values counted by kind.

pub mod capture;
pub mod clock;
#[cfg(feature = "encode")]
pub mod encode;
pub mod error;
pub mod exporter;
pub mod ipfix;
pub mod listen;
pub mod netflow5;
pub mod packet;
pub mod receiver;
pub mod record;
pub mod sflow;
pub mod template;

pub use error::{DecodeError, ErrorKind, Protocol};
pub use record::{Addr, FlowRecord};

use std::net::IpAddr;

/// One received flow-export datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    pub data: &'a [u8],
    /// The datagram's IP source: the exporter as the network sees it.
    pub source: IpAddr,
    /// Arrival time, Unix milliseconds (the capture time in replay).
    pub received_ms: u64,
}

/// What decoding found besides records. Decoders only add to it, so a
/// `Tally` can be a running total: an [`exporter::Exporter`] keeps one per
/// protocol and hands it to every decode (nothing to clear or merge per
/// datagram).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Flow records decoded (sFlow: flow samples, IP or not).
    pub records: u64,
    /// Loss told by sequence numbers: sFlow and NetFlow v9 count datagrams,
    /// NetFlow v5 flows, IPFIX data records.
    pub lost: u64,
    /// Data sets (v9/IPFIX) whose template was unknown.
    pub template_misses: u64,
    /// Packets the exporter itself reports dropping (sFlow `drops`).
    pub exporter_drops: u64,
    /// Sampled packets that were not IP (ARP, LLDP, …).
    pub non_ip: u64,
    /// Records whose age at export was implausible (the exporter's header
    /// time and flow times disagree); they were placed at their arrival.
    pub clock_skew: u64,
    /// Problems stepped over without ending the datagram, by [`ErrorKind`].
    pub errors: [u64; ErrorKind::COUNT],
}

/// The oldest a flow can plausibly be when exported (routers' active
/// timeouts are at most 30 minutes); an older age means the exporter's
/// clocks disagree, not that the flow is that old.
pub const MAX_FLOW_AGE_MS: u64 = 3_600_000;

/// The exporter address records carry for a datagram from `dg.source`.
#[inline]
pub(crate) fn exporter_addr(dg: &Datagram<'_>) -> Addr {
    Addr::from(dg.source)
}
