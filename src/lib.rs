//! levee: a flow collector appliance for border routers that detects DDoS
//! attacks and mitigates them.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules, from the
//! traffic in to the routes out:
//!
//! - [`ingest`] — the collectors' threads; [`hostgroups`] — which hostgroup
//!   an address is in;
//! - [`accounting`] — per protected host (and prefix), what each second
//!   brought; [`pipeline`], [`dataplane`] — the path from records to
//!   decisions, on one thread (replay) or many (run); [`replay`] — `levee
//!   replay`;
//! - [`detect`] — thresholds, baselines, classification, incidents;
//!   [`report`] — how an incident is shown;
//! - [`mitigation`] — from incidents to routes, firewall rules and
//!   diversions;
//! - [`config`] — the TOML configuration, its defaults and validation;
//! - [`store`] — the one RocksDB database and everything that touches it;
//! - [`audit`] — the hash-chained audit log, its export and offline check;
//! - [`app`] — `levee run`: start-up, signals, reload, shutdown;
//! - [`web`] — the HTTP side: router, JSON API, `/metrics` (each
//!   subsystem writes its own metrics with [`exposition`]); [`apikeys`] —
//!   the API's keys; [`cli_backend`] — how the CLI reaches a running levee
//!   (its admin socket) or, when none answers, the store;
//! - [`logging`] — log output and its filter.
//!
//! ARCHITECTURE.md describes how they fit together and the invariants each keeps.

pub mod accounting;
pub mod apikeys;
pub mod app;
pub mod audit;
pub mod cli_backend;
pub mod config;
pub mod dataplane;
pub mod detect;
pub mod exposition;
pub mod hostgroups;
pub mod ingest;
pub mod logging;
pub mod mitigation;
pub mod pipeline;
pub mod replay;
pub mod report;
pub mod store;
pub mod web;
