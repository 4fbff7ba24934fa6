//! Real exporters' captures (`../shared/captures/`, read in place; see its
//! PROVENANCE.md): every one decodes without a panic, and the clean ones to
//! exactly the record counts PROVENANCE.md gives.
//!
//! "Records" is what tshark counted: NetFlow v5 records, NetFlow v9/IPFIX
//! data and options-data records, sFlow flow samples (compact and expanded).
//! A capture is "clean" when tshark found nothing malformed and no data set
//! lacks its template; the others must only decode without a panic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use levee_collectors::capture::PcapFile;
use levee_collectors::exporter::Exporter;
use levee_collectors::{packet, Datagram};

fn captures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("LEVEE_CAPTURES") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures")
}

struct Expected {
    file: String,
    records: u64,
    clean: bool,
}

/// The rows of PROVENANCE.md's file table that describe a pcap.
fn provenance() -> Vec<Expected> {
    let path = captures_dir().join("PROVENANCE.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set LEVEE_CAPTURES to the captures folder)",
            path.display()
        )
    });
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
            file,
            records,
            clean,
        });
    }
    out
}

/// Feeds every UDP payload of a capture to a per-source exporter, as levee's
/// receivers would; returns the records decoded and the decode errors.
fn decode_capture(path: &Path) -> (u64, u64, Vec<String>) {
    let mut pcap = PcapFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut exporters: HashMap<IpAddr, Exporter> = HashMap::new();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    while let Some(frame) = pcap.next_frame() {
        let frame = frame.unwrap_or_else(|e| panic!("{e}"));
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
        if let Err(e) = exporters
            .entry(dg.source)
            .or_default()
            .decode(&dg, &mut out)
        {
            errors.push(e.to_string());
        }
    }
    let records = exporters.values().map(|e| e.records()).sum();
    (records, out.len() as u64, errors)
}

#[test]
fn every_capture_decodes_and_clean_ones_to_their_record_counts() {
    let expected = provenance();
    assert!(
        expected.len() >= 80,
        "PROVENANCE.md lists only {} pcaps",
        expected.len()
    );
    let mut wrong = Vec::new();
    for e in &expected {
        let path = captures_dir().join(&e.file);
        let (records, flows, errors) = decode_capture(&path);
        eprintln!(
            "{:70} records {records:4} (want {:4}) flows {flows:4} errors {}{}",
            e.file,
            e.records,
            errors.len(),
            if e.clean { "" } else { " [quirky]" }
        );
        if e.clean && (records != e.records || !errors.is_empty()) {
            wrong.push(format!(
                "{}: {records} records, want {}; errors {errors:?}",
                e.file, e.records
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} captures decode wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The records' sampling rates, per capture.
fn rates(file: &str) -> std::collections::BTreeSet<u32> {
    let mut pcap = PcapFile::open(&captures_dir().join(file)).unwrap();
    let mut exporters: HashMap<IpAddr, Exporter> = HashMap::new();
    let mut out = Vec::new();
    while let Some(frame) = pcap.next_frame() {
        let frame = frame.unwrap();
        let Ok(p) = packet::parse(frame.link, frame.data) else {
            continue;
        };
        let Some((at, len)) = p.udp_payload else {
            continue;
        };
        let dg = Datagram {
            data: &frame.data[at..(at + len).min(frame.data.len())],
            source: p.src.ip(),
            received_ms: 0,
        };
        let _ = exporters
            .entry(dg.source)
            .or_default()
            .decode(&dg, &mut out);
    }
    out.iter().map(|r| r.sampling).collect()
}

#[test]
fn sampling_rates_come_from_where_each_vendor_puts_them() {
    let cases: &[(&str, &[u32])] = &[
        // NetFlow v5 header: interval 1000.
        ("netflow5/juniper-mx80_netflow5.pcap", &[1000]),
        // IPFIX options: selector with samplingPopulation 256 / samplingSize 1.
        (
            "ipfix/cisco-asr9k-xr_ipfix-ipv6-sampling-options.pcap",
            &[256],
        ),
        // NetFlow v9 options: two samplers, 1:2000 and 1:4000, named per record.
        (
            "netflow9/cisco-ncs55-iosxr_nfv9-multiple-samplers.pcap",
            &[2000, 4000],
        ),
        // Huawei: sampling interval (34) in every data record.
        (
            "netflow9/huawei-ce8851_netstream-sampling-in-data.pcap",
            &[2048],
        ),
        // Juniper MS-DPC: options data after the flows, in the same datagram.
        (
            "netflow9/juniper-mx960-msdpc_nfv9-data-before-template.pcap",
            &[100],
        ),
        // (pktvisor's capture is no case: its sampling options come from
        // another exporter address, minutes after the data.)
        ("netflow9/akvorado_nfv9-options-sampling.pcap", &[30000]),
        // sFlow: the rate of each sample.
        ("sflow/akvorado_sflow-5-flow-samples.pcap", &[1024]),
        ("sflow/lcs_sflow-expanded-lag-counters.pcap", &[1024, 16384]),
    ];
    for (file, want) in cases {
        let got: Vec<u32> = rates(file).into_iter().collect();
        assert_eq!(got, *want, "{file}");
    }
}
