//! levee-bgp: levee's BGP side — the FlowSpec/RTBH/diversion route model and
//! the GoBGP gRPC client. Filled in by the mitigation work (MIT-*).
