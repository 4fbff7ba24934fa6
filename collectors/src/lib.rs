//! levee-collectors: turns every flow source into one compact `FlowRecord`.
//!
//! Filled in by the ingest work (IN-1 … IN-7): sans-IO decoders for sFlow v5,
//! NetFlow v5/v9, IPFIX and pcap, and the socket and capture readers on top.
