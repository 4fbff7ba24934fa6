//! `levee replay` (OPS-4): the decode → account → detect → classify path of
//! `run`, offline, over recorded traffic, with time taken from the capture.
//!
//! An input frame that is UDP to one of the configured collector ports, and
//! not addressed to a host inside a hostgroup, is flow export (its IP
//! source is the exporter); any other IP frame is a raw packet, as from a
//! mirror port — a packet to a protected host is traffic to that host
//! whatever its port. Nothing is announced, alerted or written:
//! the data dir is not opened.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use levee_collectors::capture::{captured, PcapFile};
use levee_collectors::exporter::Exporter;
use levee_collectors::{packet, Addr, Datagram};

use crate::config::Config;
use crate::detect::Event;
use crate::pipeline::Inline;
use crate::report::{incident_json, incident_text};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// What the input held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Flow records decoded plus raw packets accounted.
    pub records: u64,
    /// Flow-export datagrams.
    pub datagrams: u64,
    pub decode_errors: u64,
    pub incidents: u64,
}

fn write_event(out: &mut dyn Write, e: &Event, format: Format) -> std::io::Result<()> {
    let Event::Ended(i) = e else { return Ok(()) };
    match format {
        Format::Json => {
            let mut v = incident_json(i);
            if let Some(o) = v.as_object_mut() {
                let mut with_type = serde_json::Map::new();
                with_type.insert("type".into(), "incident".into());
                with_type.extend(std::mem::take(o));
                *o = with_type;
            }
            writeln!(out, "{v}")
        }
        Format::Text => writeln!(out, "{}", incident_text(i)),
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input capture could not be opened or read.
    #[error(transparent)]
    Input(#[from] levee_collectors::capture::CaptureError),
    /// The output could not be written (a closed pipe, a full disk).
    #[error("writing the output")]
    Output(#[from] std::io::Error),
}

pub fn replay(
    config: &Config,
    inputs: &[PathBuf],
    format: Format,
    summary: bool,
    out: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    let ports: HashSet<u16> = config
        .collector
        .sflow
        .listen
        .iter()
        .chain(&config.collector.netflow.listen)
        .map(|a| a.port())
        .collect();
    let mut engine = Inline::new(config, summary);
    let mut exporters: HashMap<IpAddr, Exporter> = HashMap::new();
    let mut records = Vec::with_capacity(4096);
    let mut s = Summary::default();
    let raw_exporter = Addr::UNSPECIFIED;

    for path in inputs {
        let mut pcap = PcapFile::open(path)?;
        while let Some(frame) = pcap.next_frame() {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    // A truncated capture: keep what was read, say so.
                    tracing::warn!(error = %e, "Capture ends early");
                    break;
                }
            };
            let now_ms = frame.time_us / 1000;
            engine.advance(now_ms);
            let mut rec = captured(now_ms, raw_exporter);
            let Ok(extra) = packet::parse_into(frame.link, frame.data, &mut rec) else {
                continue;
            };
            // Flow export is meant for the collector: UDP to a collector
            // port, and not addressed to a protected host — a flood with
            // random ports puts 3 in 65,536 of its packets on 6343, 2055
            // or 4739, and they are traffic to the host all the same.
            let export = extra.udp_payload.filter(|_| {
                ports.contains(&rec.dst_port) && engine.groups().lookup(&rec.dst).is_none()
            });
            match export {
                Some((at, len)) => {
                    let data = &frame.data[at..(at + len).min(frame.data.len())];
                    let dg = Datagram {
                        data,
                        source: rec.src.ip(),
                        received_ms: now_ms,
                    };
                    s.datagrams += 1;
                    let e = exporters.entry(dg.source).or_default();
                    let before = e.records();
                    if e.decode(&dg, &mut records).is_err() {
                        s.decode_errors += 1;
                    }
                    s.records += e.records() - before;
                    engine.feed(&records);
                    records.clear();
                }
                None => {
                    s.records += 1;
                    engine.feed(&[rec]);
                }
            }
            for e in engine.take_events() {
                s.incidents += u64::from(matches!(e, Event::Ended(_)));
                write_event(out, &e, format).map_err(ReplayError::Output)?;
            }
        }
    }
    engine.finish();
    for e in engine.take_events() {
        s.incidents += u64::from(matches!(e, Event::Ended(_)));
        write_event(out, &e, format).map_err(ReplayError::Output)?;
    }
    // Decode errors counted inside datagrams (stepped over) too.
    s.decode_errors += exporters
        .values()
        .map(|e| e.counters().errors.iter().flatten().sum::<u64>())
        .sum::<u64>()
        .saturating_sub(s.decode_errors);
    if summary {
        let hosts: BTreeMap<String, serde_json::Value> = engine
            .totals()
            .into_iter()
            .flatten()
            .map(|(a, t)| {
                (
                    a.to_string(),
                    serde_json::json!({ "packets": t.packets, "bytes": t.bytes }),
                )
            })
            .collect();
        match format {
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "type": "summary",
                    "records": s.records,
                    "datagrams": s.datagrams,
                    "decode_errors": s.decode_errors,
                    "incidents": s.incidents,
                    "hosts": hosts,
                })
            )?,
            Format::Text => {
                writeln!(
                    out,
                    "summary: {} records, {} datagrams, {} decode errors, {} incidents",
                    s.records, s.datagrams, s.decode_errors, s.incidents
                )?;
                for (h, t) in hosts {
                    writeln!(out, "  {h}: {} packets, {} bytes", t["packets"], t["bytes"])?;
                }
            }
        }
    }
    out.flush()?;
    Ok(s)
}
