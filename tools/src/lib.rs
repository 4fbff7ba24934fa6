//! levee-tools: the scenario generator and the load tool.
//!
//! [`scenario`] makes labelled traffic with its ground truth — as raw packets
//! (a pcap, like a mirror port) and, through [`export`], as the flow export a
//! router would send (sampled sFlow, IPFIX). Tests call it directly; the
//! `levee-scenario` binary writes the same traffic to files, so anyone can
//! regenerate every capture a test uses. [`gobgpd`] runs real BGP peers
//! (levee's speaker and a border router) for the mitigation tests, and
//! watches every route the router receives; [`flowspec`] holds the
//! router's FlowSpec rules against scenario packets (coverage); [`shapes`]
//! makes attacks shaped to provoke a wrong rule, beside the traffic a
//! rule must spare; [`carpet`] spreads attacks (and benign surges) over a
//! prefix.

pub mod attacks;
pub mod carpet;
pub mod export;
pub mod flowspec;
pub mod gobgpd;
pub mod scenario;
pub mod shapes;
