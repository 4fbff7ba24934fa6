//! Encoders for every format levee decodes (feature `encode`): packets
//! (Ethernet/IPv4/IPv6/L4 headers), sFlow v5, NetFlow v5, NetFlow v9 and
//! IPFIX. Tests, the scenario generator and the load tool use them to make
//! traffic whose content is known exactly; the decoders' round-trip property
//! tests check that decode(encode(x)) keeps every field levee carries.
//!
//! Encoders write into a caller's buffer and never fail: they build what
//! they are told, including nonsense a test wants to send on purpose.

pub mod netflow;
pub mod packet;
pub mod pcap;
pub mod samples;
pub mod sflow;
