//! levee-bgp: levee's BGP side (MIT-2…4, MIT-8, MIT-9).
//!
//! - [`model`] — the routes levee announces, in its own terms:
//!   [`FlowSpecRule`], [`BlackholeRoute`], [`Diversion`].
//! - [`client`] — [`Speaker`], the client of levee's local gobgpd (GoBGP
//!   3.10's gRPC API): announce, withdraw, list, peers.
//! - `gobgp` — the translation to and from GoBGP's API; the only module
//!   that sees generated types.

pub mod client;
mod gobgp;
pub mod model;

pub use client::{Error, Peer, Sent, Speaker};
pub use model::{
    BlackholeRoute, Community, Diversion, FlowAction, FlowSpecRule, Fragment, Range, Route,
    TcpFlags, Translation,
};
