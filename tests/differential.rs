//! levee's compiled-template decoder against the reference, netgauze-flow-pkt:
//! on random templates and records (proptest) and on real IPFIX and NetFlow
//! v9 captures, both must produce the same records — addresses,
//! protocol, ports, TCP flags, counters, interfaces, TTL.
//!
//! The whole corpus of real captures is beside the clone
//! (`../shared/captures`), not in the repository: that test is `#[ignore]`d
//! and `make test-corpus` runs it. The random one, and the same comparison on
//! the golden set committed in `tests/data/captures`, run in every `make test`.
//!
//! levee decodes data records with per-template offsets rather than
//! netgauze's allocating model (ARCHITECTURE.md says why); this test is what
//! keeps the fast path honest. `fuzz/fuzz_targets/differential.rs` runs the
//! same comparison on fuzzed messages.

mod support {
    pub mod differential;
}

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use levee_collectors::capture::PcapFile;
use levee_collectors::encode::netflow::{self as nf, Field, Set, Template, Value};
use levee_collectors::packet;
use proptest::prelude::*;
use support::differential::{levee_flows, netgauze_flows, Flow};

// ---- random templates and records ----------------------------------------

/// One record's values: src, dst, ports, TCP flags, packets, octets,
/// interfaces, TTL (protocols cycle through `Case::protocols`).
type Raw = (u128, u128, u16, u16, u8, u64, u64, u32, u32, u8);

#[derive(Debug, Clone)]
struct Case {
    v6: bool,
    counter_len: u16,
    if_len: u16,
    with_ttl: bool,
    with_varlen: bool,
    protocols: Vec<u8>,
    records: Vec<Raw>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        prop_oneof![Just(1u16), Just(2), Just(4), Just(8)],
        prop_oneof![Just(2u16), Just(4)],
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(
            prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(47)],
            1..4,
        ),
        prop::collection::vec(
            (
                any::<u128>(),
                any::<u128>(),
                any::<u16>(),
                any::<u16>(),
                any::<u8>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u8>(),
            ),
            1..30,
        ),
    )
        .prop_map(
            |(v6, counter_len, if_len, with_ttl, with_varlen, protocols, records)| Case {
                v6,
                counter_len,
                if_len,
                with_ttl,
                with_varlen,
                protocols,
                records,
            },
        )
}

fn encode(c: &Case, ipfix_version: bool) -> Vec<Vec<u8>> {
    let (s, d, alen) = if c.v6 { (27, 28, 16) } else { (8, 12, 4) };
    let mut fields = vec![
        Field::new(s, alen),
        Field::new(d, alen),
        Field::new(4, 1),
        Field::new(7, 2),
        Field::new(11, 2),
        Field::new(6, 1),
        Field::new(2, c.counter_len),
        Field::new(1, c.counter_len),
        Field::new(10, c.if_len),
        Field::new(14, c.if_len),
    ];
    if c.with_ttl {
        fields.push(Field::new(192, 1));
    }
    let varlen = c.with_varlen && ipfix_version;
    if varlen {
        fields.insert(2, Field::new(82, 65535));
    }
    let t = Template {
        id: 400,
        scope_fields: 0,
        fields,
    };
    let mask = |v: u64, len: u16| {
        if len >= 8 {
            v
        } else {
            v & ((1u64 << (8 * len)) - 1)
        }
    };
    let records: Vec<Vec<Value>> = c
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let addr = |v: u128| {
                if c.v6 {
                    Ipv6Addr::from(v).octets().to_vec()
                } else {
                    Ipv4Addr::from(v as u32).octets().to_vec()
                }
            };
            let mut v = vec![
                Value::Bytes(addr(r.0)),
                Value::Bytes(addr(r.1)),
                Value::Uint(u64::from(c.protocols[i % c.protocols.len()])),
                Value::Uint(u64::from(r.2)),
                Value::Uint(u64::from(r.3)),
                Value::Uint(u64::from(r.4)),
                Value::Uint(mask(r.5, c.counter_len)),
                Value::Uint(mask(r.6, c.counter_len)),
                Value::Uint(mask(u64::from(r.7), c.if_len)),
                Value::Uint(mask(u64::from(r.8), c.if_len)),
            ];
            if c.with_ttl {
                v.push(Value::Uint(u64::from(r.9)));
            }
            if varlen {
                v.insert(2, Value::Bytes(b"Gi0/0/0/1".repeat(i % 3)));
            }
            v
        })
        .collect();
    let sets = [Set::Templates(vec![t.clone()])];
    let data = [Set::Data {
        template: t,
        records,
    }];
    let mut a = Vec::new();
    let mut b = Vec::new();
    if ipfix_version {
        nf::ipfix(1_700_000_000, 0, 1, &sets, &mut a);
        nf::ipfix(1_700_000_000, 0, 1, &data, &mut b);
    } else {
        nf::v9(100_000, 1_700_000_000, 0, 1, &sets, &mut a);
        nf::v9(100_000, 1_700_000_000, 1, 1, &data, &mut b);
    }
    vec![a, b]
}

proptest! {
    #[test]
    fn random_templates_decode_as_netgauze_decodes_them(c in case(), ipfix_version in any::<bool>()) {
        let messages = encode(&c, ipfix_version);
        let version = if ipfix_version { 10 } else { 9 };
        let (reference, parsed) = netgauze_flows(version, &messages);
        prop_assert_eq!(parsed.len(), messages.len(), "netgauze parses what levee encodes");
        prop_assert_eq!(reference.len(), c.records.len());
        prop_assert_eq!(levee_flows(&messages), reference);
    }
}

// ---- real captures ------------------------------------------------------------

/// The capture corpus: `LEVEE_CAPTURES`, or `../shared/captures` beside the
/// clone. Panics when it is not there, so `make test-corpus` cannot pass
/// having compared nothing.
fn captures() -> std::path::PathBuf {
    let dir: std::path::PathBuf = std::env::var_os("LEVEE_CAPTURES")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/captures"));
    assert!(
        dir.join("PROVENANCE.md").is_file(),
        "no capture corpus at {} (no PROVENANCE.md there): put `shared/` beside the clone \
         or set LEVEE_CAPTURES to the captures folder",
        dir.display()
    );
    dir
}

/// The flow-export payloads of a capture, by exporter and version.
fn streams(file: &Path) -> BTreeMap<(IpAddr, u16), Vec<Vec<u8>>> {
    let mut pcap = PcapFile::open(file).unwrap();
    let mut out: BTreeMap<(IpAddr, u16), Vec<Vec<u8>>> = BTreeMap::new();
    while let Some(frame) = pcap.next_frame() {
        let frame = frame.unwrap();
        let Ok(p) = packet::parse(frame.link, frame.data) else {
            continue;
        };
        let Some((at, len)) = p.udp_payload else {
            continue;
        };
        let data = &frame.data[at..(at + len).min(frame.data.len())];
        if data.len() < 2 {
            continue;
        }
        let version = u16::from_be_bytes([data[0], data[1]]);
        if version == 9 || version == 10 {
            out.entry((p.src.ip(), version))
                .or_default()
                .push(data.to_vec());
        }
    }
    out
}

/// Compares levee with netgauze on every IPFIX and NetFlow v9 capture under
/// `root`; returns the number of flows compared.
fn compare_captures(root: &Path) -> usize {
    let mut compared = 0;
    let mut skipped = Vec::new();
    for dir in ["ipfix", "netflow9"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for file in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "pcap"))
        {
            for ((_, version), messages) in streams(&file) {
                // netgauze refuses some real-world quirks (zero-length
                // fields, data before templates, variable-length fields in
                // NetFlow v9): levee decodes only what netgauze parsed.
                let (reference, parsed) = netgauze_flows(version, &messages);
                if parsed.len() < messages.len() {
                    skipped.push(format!(
                        "{} ({}/{})",
                        file.file_name().unwrap().to_string_lossy(),
                        messages.len() - parsed.len(),
                        messages.len()
                    ));
                }
                let ours = levee_flows(&parsed);
                // Biflows: levee adds the reverse direction as its own flow;
                // netgauze reports one record. Compare the forward ones.
                let ours: Vec<Flow> = if ours.len() > reference.len() {
                    ours.into_iter().filter(|f| reference.contains(f)).collect()
                } else {
                    ours
                };
                if ours != reference {
                    let only_ours: Vec<&Flow> = ours
                        .iter()
                        .filter(|f| !reference.contains(f))
                        .take(4)
                        .collect();
                    let only_theirs: Vec<&Flow> = reference
                        .iter()
                        .filter(|f| !ours.contains(f))
                        .take(4)
                        .collect();
                    panic!(
                        "{}: {} flows vs netgauze's {}\nonly levee: {only_ours:#?}\nonly netgauze: {only_theirs:#?}",
                        file.display(),
                        ours.len(),
                        reference.len()
                    );
                }
                compared += reference.len();
            }
        }
    }
    eprintln!("compared {compared} flows; netgauze refused {skipped:?}");
    compared
}

#[test]
#[ignore = "needs the capture corpus (../shared/captures or LEVEE_CAPTURES): run `make test-corpus`"]
fn real_captures_decode_as_netgauze_decodes_them() {
    let compared = compare_captures(&captures());
    assert!(compared > 1000, "only {compared} flows compared");
}

/// The golden set committed with the repository (`tests/data/captures`):
/// the same comparison on its handful of IPFIX and NetFlow v9 captures, so
/// `make test` compares real exporters' records without the corpus.
#[test]
fn golden_captures_decode_as_netgauze_decodes_them() {
    let compared =
        compare_captures(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures"));
    assert!(compared > 50, "only {compared} flows compared");
}
