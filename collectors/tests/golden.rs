//! The golden set: a handful of real exporters' captures per format,
//! committed in `tests/data/captures/` (PROVENANCE.md there says where each
//! comes from and under which licence), each with its expected decode
//! beside it:
//!
//! - `NAME.flows.jsonl`: one line per `FlowRecord`, in decode order;
//! - `NAME.counters.jsonl`: one line per exporter (datagram source): its
//!   counters and the errors that ended a datagram.
//!
//! The decode is `common::replay`, the one `captures.rs` and `tshark.rs` use
//! on the whole corpus. A difference fails with a line diff; when the change
//! is intended, regenerate the expected files and review their diff:
//!
//!     LEVEE_BLESS=1 cargo test -p levee-collectors --test golden

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use levee_collectors::exporter::Exporter;
use levee_collectors::record::{flags, proto};
use levee_collectors::{ErrorKind, FlowRecord, Protocol};

const BLESS: &str = "LEVEE_BLESS=1 cargo test -p levee-collectors --test golden";

/// Licences that let the files live in this repository.
const REDISTRIBUTABLE: [&str; 4] = ["Apache-2.0", "MIT", "BSD-3-Clause", "MPL-2.0"];

fn blessing() -> bool {
    std::env::var_os("LEVEE_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The pcaps of the golden set, relative to its folder, sorted.
fn pcaps(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["sflow", "netflow5", "netflow9", "ipfix"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pcap") {
                out.push(format!("{sub}/{name}"));
            }
        }
    }
    out.sort();
    out
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Unix milliseconds as RFC 3339 UTC (proleptic Gregorian calendar).
fn rfc3339(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let in_day = ms % 86_400_000;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

fn protocol_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        proto::GRE => "gre".into(),
        proto::ESP => "esp".into(),
        n => n.to_string(),
    }
}

/// TCP flags as letters, lowest bit first: FIN SYN RST PSH ACK URG ECE CWR.
fn tcp_flag_letters(f: u8) -> String {
    "FSRPAUEC"
        .chars()
        .enumerate()
        .filter(|(i, _)| f & (1 << i) != 0)
        .map(|(_, c)| c)
        .collect()
}

fn record_flag_names(f: u8) -> String {
    let names = [
        (flags::IPV6, "ipv6"),
        (flags::FRAGMENT, "fragment"),
        (flags::LATER_FRAGMENT, "later_fragment"),
        (flags::TTL_KNOWN, "ttl_known"),
        (flags::DIRECTION_KNOWN, "direction_known"),
        (flags::EGRESS, "egress"),
    ];
    let known = names.iter().fold(0, |a, (bit, _)| a | bit);
    let mut out: Vec<String> = names
        .iter()
        .filter(|(bit, _)| f & bit != 0)
        .map(|(_, n)| json_str(n))
        .collect();
    out.extend(
        (0..8)
            .filter(|i| f & !known & (1 << i) != 0)
            .map(|i| json_str(&format!("bit{i}"))),
    );
    format!("[{}]", out.join(","))
}

/// One record as a JSON line. Every field of `FlowRecord` is named here
/// (the destructuring fails to compile when one is added), so the expected
/// files show all that the decoders produce.
fn flow_line(r: &FlowRecord) -> String {
    let FlowRecord {
        time_ms,
        packets,
        bytes,
        src,
        dst,
        exporter,
        sampling,
        in_if,
        out_if,
        src_port,
        dst_port,
        protocol,
        tcp_flags,
        ttl,
        icmp_type,
        icmp_code,
        flags,
        duration_s,
    } = *r;
    format!(
        "{{\"time_ms\":{time_ms},\"time\":\"{}\",\"exporter\":\"{exporter}\",\
         \"protocol\":\"{}\",\"src\":\"{src}\",\"src_port\":{src_port},\
         \"dst\":\"{dst}\",\"dst_port\":{dst_port},\"icmp_type\":{icmp_type},\
         \"icmp_code\":{icmp_code},\"tcp_flags\":\"{}\",\"packets\":{packets},\
         \"bytes\":{bytes},\"sampling\":{sampling},\"duration_s\":{duration_s},\
         \"in_if\":{in_if},\"out_if\":{out_if},\"ttl\":{ttl},\"flags\":{}}}",
        rfc3339(time_ms),
        protocol_name(protocol),
        tcp_flag_letters(tcp_flags),
        record_flag_names(flags),
    )
}

/// A per-protocol table as a JSON object, without the zero entries.
fn by_protocol(values: impl Fn(Protocol) -> Option<String>) -> String {
    let parts: Vec<String> = Protocol::ALL
        .iter()
        .filter_map(|&p| Some(format!("{}:{}", json_str(p.as_str()), values(p)?)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// One exporter's counters, and the errors that ended its datagrams, as a
/// JSON line.
fn counters_line(source: &std::net::IpAddr, e: &Exporter, errors: &[String]) -> String {
    let c = e.counters();
    let count = |n: u64| (n != 0).then(|| n.to_string());
    let errors_by_kind = |p: Protocol| {
        let row = &c.errors[p.index()];
        let parts: Vec<String> = ErrorKind::ALL
            .iter()
            .filter(|k| row[k.index()] != 0)
            .map(|k| format!("{}:{}", json_str(k.as_str()), row[k.index()]))
            .collect();
        (!parts.is_empty()).then(|| format!("{{{}}}", parts.join(",")))
    };
    let mut line = String::new();
    write!(
        line,
        "{{\"exporter\":\"{source}\",\"datagrams\":{},\"records\":{},\"errors\":{},\
         \"template_misses\":{},\"lost\":{},\"exporter_drops\":{},\"non_ip\":{},\
         \"clock_skew\":{},\"last_seen_ms\":{},\"decode_errors\":[{}]}}",
        by_protocol(|p| count(c.datagrams[p.index()])),
        by_protocol(|p| count(c.records[p.index()])),
        by_protocol(errors_by_kind),
        c.template_misses,
        c.lost,
        c.exporter_drops,
        c.non_ip,
        c.clock_skew,
        c.last_seen_ms,
        errors
            .iter()
            .map(|s| json_str(s))
            .collect::<Vec<_>>()
            .join(","),
    )
    .unwrap();
    line
}

/// The expected files of one capture and what the decode gives now.
fn decode(dir: &Path, pcap: &str) -> [(PathBuf, String); 2] {
    let r = common::replay(&dir.join(pcap));
    let stem = pcap.strip_suffix(".pcap").unwrap();
    let mut flows = String::new();
    for f in &r.flows {
        flows.push_str(&flow_line(f));
        flows.push('\n');
    }
    let mut counters = String::new();
    for (source, e) in &r.exporters {
        let errors: Vec<String> = r
            .errors
            .iter()
            .filter(|(s, _)| s == source)
            .map(|(_, e)| e.clone())
            .collect();
        counters.push_str(&counters_line(source, e, &errors));
        counters.push('\n');
    }
    [
        (dir.join(format!("{stem}.flows.jsonl")), flows),
        (dir.join(format!("{stem}.counters.jsonl")), counters),
    ]
}

/// A line diff of `want` → `got` (longest common subsequence): removed lines
/// with `-`, added with `+`, each with its line number; at most `max` lines.
fn diff(want: &str, got: &str, max: usize) -> String {
    let a: Vec<&str> = want.lines().collect();
    let b: Vec<&str> = got.lines().collect();
    // lcs[i][j]: longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    let (mut removed, mut added) = (0, 0);
    // The last line removed, while the next may be its replacement.
    let mut last_removed: Option<&str> = None;
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
            last_removed = None;
        } else if j == b.len() || (i < a.len() && lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("  -{:5} {}", i + 1, a[i]));
            removed += 1;
            last_removed = Some(a[i]);
            i += 1;
        } else {
            out.push(format!("  +{:5} {}", j + 1, b[j]));
            if let Some(fields) = last_removed.and_then(|was| changed_fields(was, b[j])) {
                out.push(format!("         changed: {fields}"));
            }
            added += 1;
            last_removed = None;
            j += 1;
        }
    }
    let more = out.len().saturating_sub(max);
    out.truncate(max);
    if more > 0 {
        out.push(format!("  … and {more} more lines"));
    }
    format!(
        "{removed} line(s) expected but not decoded (-), {added} decoded but not expected (+):\n{}",
        out.join("\n")
    )
}

/// For a line replaced by another, both JSON objects: the fields whose
/// values differ, as `name: was → now`.
fn changed_fields(was: &str, now: &str) -> Option<String> {
    let was: serde_json::Map<String, serde_json::Value> = serde_json::from_str(was).ok()?;
    let now: serde_json::Map<String, serde_json::Value> = serde_json::from_str(now).ok()?;
    let null = serde_json::Value::Null;
    let keys: BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    let changed: Vec<String> = keys
        .into_iter()
        .filter_map(|k| {
            let (a, b) = (was.get(k).unwrap_or(&null), now.get(k).unwrap_or(&null));
            (a != b).then(|| format!("{k}: {a} → {b}"))
        })
        .collect();
    (!changed.is_empty()).then(|| changed.join(", "))
}

#[test]
fn golden_captures_decode_to_their_expected_records_and_counters() {
    let dir = common::golden();
    let bless = blessing();
    let mut wrong = Vec::new();
    let mut wanted = BTreeSet::new();
    for pcap in pcaps(&dir) {
        for (path, got) in decode(&dir, &pcap) {
            wanted.insert(path.clone());
            let rel = path.strip_prefix(&dir).unwrap().display().to_string();
            if bless {
                std::fs::write(&path, &got).unwrap_or_else(|e| panic!("{rel}: {e}"));
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(want) if want == got => {}
                Ok(want) => wrong.push(format!("{rel}: {}", diff(&want, &got, 40))),
                Err(e) => wrong.push(format!("{rel}: {e}")),
            }
        }
    }
    // Expected files whose capture is gone.
    for sub in ["sflow", "netflow5", "netflow9", "ipfix"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".jsonl") && !wanted.contains(&path) {
                if bless {
                    std::fs::remove_file(&path).unwrap();
                } else {
                    wrong.push(format!("{sub}/{name}: no capture of that name"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} expected file(s) differ from the decode:\n\n{}\n\n\
         If the change is intended, regenerate them with\n    {BLESS}\n\
         and review the diff (git diff tests/data/captures).",
        wrong.len(),
        wrong.join("\n\n")
    );
}

/// PROVENANCE.md lists exactly the pcaps there are, with their sizes and a
/// licence that lets them be redistributed here, and the clean ones decode
/// to tshark's record counts (the same check `captures.rs` makes on the
/// whole corpus).
#[test]
fn golden_captures_are_the_ones_provenance_lists() {
    let dir = common::golden();
    let expected = common::provenance(&dir);
    let listed: Vec<String> = {
        let mut v: Vec<String> = expected.iter().map(|e| e.file.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(listed, pcaps(&dir), "PROVENANCE.md's file table");
    for per_format in ["sflow/", "netflow5/", "netflow9/", "ipfix/"] {
        let n = listed.iter().filter(|f| f.starts_with(per_format)).count();
        assert!(n >= 3, "only {n} {per_format} captures in the golden set");
    }
    for e in &expected {
        let size = std::fs::metadata(dir.join(&e.file)).unwrap().len();
        assert_eq!(size, e.bytes, "{}: size in PROVENANCE.md", e.file);
        assert!(
            REDISTRIBUTABLE.iter().any(|l| e.license.starts_with(l)) && !e.license.contains("GPL"),
            "{}: licence {:?} is not one we may commit",
            e.file,
            e.license
        );
    }
    let wrong = common::check_record_counts(&dir, &expected);
    assert!(
        wrong.is_empty(),
        "{} captures decode wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_diff_names_the_lines_that_differ() {
    let d = diff("a\nb\nc\n", "a\nx\nc\nd\n", 40);
    assert!(d.starts_with("1 line(s) expected but not decoded (-), 2 decoded"));
    assert!(d.contains("-    2 b"), "{d}");
    assert!(d.contains("+    2 x"), "{d}");
    assert!(d.contains("+    4 d"), "{d}");
    let d = diff("{\"a\":1,\"b\":2}\n", "{\"a\":1,\"b\":3}\n", 40);
    assert!(d.contains("changed: b: 2 → 3"), "{d}");
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(tcp_flag_letters(0x12), "SA");
}
