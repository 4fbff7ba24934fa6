//! levee: a flow collector appliance for border routers that detects DDoS
//! attacks and mitigates them.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules:
//!
//! - [`config`] — the TOML configuration, its defaults and validation;
//! - [`store`] — the one RocksDB database and everything that touches it;
//! - [`audit`] — the hash-chained audit log, its export and offline check;
//! - [`app`] — `levee run`: start-up, signals, reload, shutdown;
//! - [`api`], [`apikeys`] — the JSON API and its keys; [`admin`] — how the
//!   CLI reaches a running levee;
//! - [`ingest`] — the collectors' threads; [`metrics`] — `/metrics`;
//! - [`web`] — the HTTP server (`/healthz`, `/metrics`);
//! - [`logging`] — log output and its filter.
//!
//! ARCHITECTURE.md describes how they fit together and the invariants each keeps.

pub mod account;
pub mod admin;
pub mod api;
pub mod apikeys;
pub mod app;
pub mod audit;
pub mod config;
pub mod dataplane;
pub mod detect;
pub mod hostgroups;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod mitigation;
pub mod pipeline;
pub mod replay;
pub mod report;
pub mod store;
pub mod web;
