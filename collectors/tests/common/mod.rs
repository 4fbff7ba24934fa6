//! What the capture tests share: where the captures are, the file table of
//! their PROVENANCE.md, and the replay of a pcap through levee's decoders.
//!
//! Two sets of captures use it: the golden set committed with the
//! repository (`tests/data/captures/`, read by `golden.rs` in every
//! `make test`) and the whole corpus beside the clone
//! (`../shared/captures/`, read by the `#[ignore]`d tests of `captures.rs`
//! and `tshark.rs` that `make test-corpus` runs).

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use levee_collectors::capture::PcapFile;
use levee_collectors::exporter::Exporter;
use levee_collectors::{packet, Datagram, FlowRecord};

/// The golden set: captures committed with the repository, each with its
/// expected decode beside it.
pub fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/captures")
}

/// The whole capture corpus: `LEVEE_CAPTURES`, or `../shared/captures`
/// beside the clone. Panics when it is not there: whoever runs a corpus test
/// (`make test-corpus`) asked for the corpus, and a test that found nothing
/// to check must not pass.
pub fn corpus() -> PathBuf {
    let dir = std::env::var_os("LEVEE_CAPTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures"));
    assert!(
        dir.join("PROVENANCE.md").is_file(),
        "no capture corpus at {} (no PROVENANCE.md there): put `shared/` beside the clone \
         or set LEVEE_CAPTURES to the captures folder",
        dir.display()
    );
    dir
}

/// One pcap row of a PROVENANCE.md file table.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Path relative to the captures folder, e.g. `sflow/lcs_sflow-flow.pcap`.
    pub file: String,
    /// The file's size as the table gives it.
    pub bytes: u64,
    /// The license column, as written.
    pub license: String,
    /// "Records" as tshark counted them: NetFlow v5 records, NetFlow
    /// v9/IPFIX data and options-data records, sFlow flow samples (compact
    /// and expanded).
    pub records: u64,
    /// tshark found nothing malformed and no data set lacks its template.
    pub clean: bool,
}

/// The rows of a PROVENANCE.md file table that describe a pcap.
pub fn provenance(dir: &Path) -> Vec<Expected> {
    let path = dir.join("PROVENANCE.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 10 || !cols[1].ends_with(".pcap`") {
            continue;
        }
        let file = cols[1].trim_matches('`').to_owned();
        let facts = cols[7];
        let records = if file.starts_with("sflow/") {
            // "5 samples (flow×5)", "7 samples (expanded-counters×2, expanded-flow×5)"
            facts
                .split(['(', ',', ')'])
                .filter_map(|part| {
                    let part = part.trim();
                    let (kind, n) = part.split_once('×')?;
                    matches!(kind, "flow" | "expanded-flow").then(|| n.parse::<u64>().unwrap())
                })
                .sum()
        } else {
            facts
                .split(';')
                .find_map(|f| {
                    f.trim()
                        .strip_suffix(" records")
                        .and_then(|n| n.parse().ok())
                })
                .unwrap_or_else(|| panic!("no record count for {file}: {facts}"))
        };
        let clean = facts.contains("tshark malformed: 0") && !facts.contains("sets w/o template");
        out.push(Expected {
            bytes: cols[2]
                .parse()
                .unwrap_or_else(|_| panic!("{file}: bytes column {:?}", cols[2])),
            license: cols[5].to_owned(),
            file,
            records,
            clean,
        });
    }
    out
}

/// What replaying one capture gave.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every record decoded, in capture order.
    pub flows: Vec<FlowRecord>,
    /// One exporter per datagram source, with its state and counters.
    pub exporters: BTreeMap<IpAddr, Exporter>,
    /// Errors that ended a datagram, in capture order, by source.
    pub errors: Vec<(IpAddr, String)>,
}

impl Replay {
    /// Records decoded, as the exporters counted them (sFlow: flow samples,
    /// IP or not).
    pub fn records(&self) -> u64 {
        self.exporters.values().map(Exporter::records).sum()
    }
}

/// Feeds every UDP payload of a capture to a per-source exporter, as levee's
/// receivers would, received at the frame's capture time.
pub fn replay(path: &Path) -> Replay {
    let mut pcap = PcapFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = Replay::default();
    while let Some(frame) = pcap.next_frame() {
        let frame = frame.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let Ok(p) = packet::parse(frame.link, frame.data) else {
            continue;
        };
        let Some((at, len)) = p.udp_payload else {
            continue;
        };
        let data = &frame.data[at..(at + len).min(frame.data.len())];
        let dg = Datagram {
            data,
            source: p.src.ip(),
            received_ms: frame.time_us / 1000,
        };
        if let Err(e) = r
            .exporters
            .entry(dg.source)
            .or_default()
            .decode(&dg, &mut r.flows)
        {
            r.errors.push((dg.source, e.to_string()));
        }
    }
    r
}

/// Replays every pcap of `expected` under `dir`: each must decode without a
/// panic, and the clean ones to exactly their record count and without a
/// decode error. Returns what was wrong, one line per capture.
pub fn check_record_counts(dir: &Path, expected: &[Expected]) -> Vec<String> {
    let mut wrong = Vec::new();
    for e in expected {
        let r = replay(&dir.join(&e.file));
        let records = r.records();
        eprintln!(
            "{:70} records {records:4} (want {:4}) flows {:4} errors {}{}",
            e.file,
            e.records,
            r.flows.len(),
            r.errors.len(),
            if e.clean { "" } else { " [quirky]" }
        );
        if e.clean && (records != e.records || !r.errors.is_empty()) {
            wrong.push(format!(
                "{}: {records} records, want {}; errors {:?}",
                e.file, e.records, r.errors
            ));
        }
    }
    wrong
}
