//! Hostile input: every malformed datagram is a clear, counted error or a
//! clean partial decode — never a panic, never unbounded memory. The random
//! cases run in debug builds, so integer overflow would panic here too.

use std::net::{IpAddr, Ipv4Addr};

use levee_collectors::encode::netflow::{self as nf, Field, Set, Template, Value};
use levee_collectors::encode::{packet as pkt, sflow as sf};
use levee_collectors::exporter::Exporter;
use levee_collectors::ipfix::{Version, MAX_TEMPLATES};
use levee_collectors::{Datagram, ErrorKind, Protocol};
use proptest::prelude::*;

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn feed(e: &mut Exporter, bytes: &[u8]) -> Vec<levee_collectors::FlowRecord> {
    let mut out = Vec::new();
    let _ = e.decode(
        &Datagram {
            data: bytes,
            source: SRC,
            received_ms: 1_000,
        },
        &mut out,
    );
    out
}

fn errors(e: &Exporter, p: Protocol, k: ErrorKind) -> u64 {
    e.counters().errors[p.index()][k.index()]
}

fn ipv4_template(id: u16) -> Template {
    Template {
        id,
        scope_fields: 0,
        fields: vec![
            Field::new(8, 4),
            Field::new(12, 4),
            Field::new(7, 2),
            Field::new(11, 2),
            Field::new(4, 1),
            Field::new(1, 8),
            Field::new(2, 8),
        ],
    }
}

fn ipv4_record(i: u64) -> Vec<Value> {
    vec![
        Value::Bytes(vec![10, 0, 0, 1]),
        Value::Bytes(vec![192, 0, 2, (i % 250) as u8]),
        Value::Uint(1234),
        Value::Uint(80),
        Value::Uint(6),
        Value::Uint(1500 * i),
        Value::Uint(i),
    ]
}

/// A valid datagram of each protocol, to be mutated.
fn seeds() -> Vec<Vec<u8>> {
    let t = ipv4_template(300);
    let data = Set::Data {
        template: t.clone(),
        records: (1..20).map(ipv4_record).collect(),
    };
    let mut ipfix = Vec::new();
    nf::ipfix(
        1_700_000_000,
        0,
        1,
        &[Set::Templates(vec![t.clone()]), data.clone()],
        &mut ipfix,
    );
    let mut v9 = Vec::new();
    nf::v9(
        100_000,
        1_700_000_000,
        0,
        1,
        &[Set::Templates(vec![t]), data],
        &mut v9,
    );
    let mut sflow = Vec::new();
    let p = pkt::PacketSpec::tcp(
        "10.0.0.1".parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
        1,
        2,
    );
    let mut header = Vec::new();
    pkt::ethernet(&p, 128, &mut header);
    let sample = sf::Sample::Flow {
        expanded: false,
        seq: 1,
        source_index: 1,
        rate: 100,
        pool: 100,
        drops: 0,
        input: 1,
        output: 2,
        frame_len: 64,
        header,
    };
    sf::encode(
        &sf::Datagram {
            agent: SRC,
            sub_agent: 0,
            seq: 1,
            uptime_ms: 0,
            samples: vec![sample.clone(), sample],
        },
        &mut sflow,
    );
    let mut v5 = Vec::new();
    let rec = nf::V5Record {
        src: Ipv4Addr::LOCALHOST,
        dst: Ipv4Addr::LOCALHOST,
        next_hop: Ipv4Addr::UNSPECIFIED,
        input: 0,
        output: 0,
        packets: 1,
        octets: 40,
        first: 0,
        last: 0,
        src_port: 1,
        dst_port: 2,
        tcp_flags: 2,
        protocol: 6,
        tos: 0,
    };
    nf::v5(&nf::V5Header::default(), &[rec; 5], &mut v5);
    vec![ipfix, v9, sflow, v5]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        version in prop_oneof![Just(vec![0u8, 0, 0, 5]), Just(vec![0, 5]), Just(vec![0, 9]), Just(vec![0, 10])],
        rest in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let mut e = Exporter::default();
        let mut bytes = version;
        bytes.extend(rest);
        feed(&mut e, &bytes);
        feed(&mut e, &bytes);
    }

    #[test]
    fn mutated_datagrams_never_panic(
        which in 0usize..4,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut e = Exporter::default();
        let seeds = seeds();
        // Learn the templates from a clean copy first, so mutations reach data decoding.
        feed(&mut e, &seeds[which]);
        let mut bytes = seeds[which].clone();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        feed(&mut e, &bytes);
        let n = cut.index(bytes.len());
        feed(&mut e, &bytes[..n]);
    }
}

#[test]
fn every_truncation_is_counted_not_fatal() {
    for (which, seed) in seeds().into_iter().enumerate() {
        // NetFlow v9 has no message length: a cut exactly between flowsets
        // looks like a shorter, valid packet (its count field is not reliable).
        let v9_boundaries = if which == 1 {
            vec![
                20,
                20 + usize::from(u16::from_be_bytes([seed[22], seed[23]])),
            ]
        } else {
            vec![]
        };
        for n in 0..seed.len() {
            // … and zero bytes after it look like the zero fill exporters add.
            if v9_boundaries
                .iter()
                .any(|&b| b <= n && seed[b..n].iter().all(|&x| x == 0))
            {
                continue;
            }
            let mut e = Exporter::default();
            feed(&mut e, &seed[..n]);
            let errors: u64 = e.counters().errors.iter().flatten().sum();
            let records: u64 = e.counters().records.iter().sum();
            // Either something decoded cleanly up to the cut, or an error was counted.
            assert!(
                errors > 0 || records > 0 || n < 4,
                "cut at {n} of {} left no trace",
                seed.len()
            );
        }
    }
}

#[test]
fn a_template_flood_is_capped() {
    let mut e = Exporter::default();
    let mut id = 256u16;
    for _ in 0..(MAX_TEMPLATES / 100 + 10) {
        let ts: Vec<Template> = (0..100)
            .map(|_| {
                id = id.wrapping_add(1).max(256);
                ipv4_template(id)
            })
            .collect();
        let mut bytes = Vec::new();
        nf::ipfix(0, 0, 1, &[Set::Templates(ts)], &mut bytes);
        feed(&mut e, &bytes);
    }
    assert_eq!(e.templates.template_count(), MAX_TEMPLATES);
    assert!(errors(&e, Protocol::Ipfix, ErrorKind::TemplateLimit) > 0);
}

#[test]
fn a_template_with_thousands_of_fields_is_refused() {
    let mut e = Exporter::default();
    let t = Template {
        id: 400,
        scope_fields: 0,
        fields: vec![Field::new(1, 4); 3000],
    };
    let mut bytes = Vec::new();
    nf::ipfix(0, 0, 1, &[Set::Templates(vec![t])], &mut bytes);
    feed(&mut e, &bytes);
    assert_eq!(e.templates.template_count(), 0);
    assert_eq!(errors(&e, Protocol::Ipfix, ErrorKind::BadTemplate), 1);
}

#[test]
fn zero_length_fields_and_templates() {
    let mut e = Exporter::default();
    // A template of only empty fields would make records of no length.
    let t = Template {
        id: 401,
        scope_fields: 0,
        fields: vec![Field::new(8, 0), Field::new(12, 0)],
    };
    let mut bytes = Vec::new();
    nf::v9(0, 0, 0, 1, &[Set::Templates(vec![t])], &mut bytes);
    feed(&mut e, &bytes);
    assert_eq!(errors(&e, Protocol::Netflow9, ErrorKind::BadTemplate), 1);
    // Empty fields beside real ones are just skipped.
    let mut t = ipv4_template(402);
    t.fields.insert(2, Field::new(99, 0));
    let mut recs = vec![ipv4_record(3)];
    recs[0].insert(2, Value::Bytes(vec![]));
    let mut bytes = Vec::new();
    nf::v9(
        0,
        0,
        0,
        1,
        &[
            Set::Templates(vec![t.clone()]),
            Set::Data {
                template: t,
                records: recs,
            },
        ],
        &mut bytes,
    );
    let out = feed(&mut e, &bytes);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].packets, 3);
}

#[test]
fn an_overlong_variable_field_is_an_error_not_a_read_past_the_end() {
    let mut e = Exporter::default();
    let t = Template {
        id: 403,
        scope_fields: 0,
        fields: vec![Field::new(8, 4), Field::new(82, 65535), Field::new(12, 4)],
    };
    let mut bytes = Vec::new();
    nf::ipfix(0, 0, 1, &[Set::Templates(vec![t.clone()])], &mut bytes);
    feed(&mut e, &bytes);
    // Hand-made data set: the varlen field claims 200 bytes, 6 follow.
    let mut msg = vec![0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
    msg.extend_from_slice(&403u16.to_be_bytes());
    msg.extend_from_slice(&16u16.to_be_bytes());
    msg.extend_from_slice(&[10, 0, 0, 1, 200, 1, 2, 3, 4, 5, 6, 7]);
    let len = msg.len() as u16;
    msg[2..4].copy_from_slice(&len.to_be_bytes());
    let out = feed(&mut e, &msg);
    assert!(out.is_empty());
    assert_eq!(errors(&e, Protocol::Ipfix, ErrorKind::BadLength), 1);
}

#[test]
fn sampling_rate_zero_is_counted() {
    // sFlow: a sample declaring rate 0 is skipped and counted.
    let mut header = Vec::new();
    pkt::ethernet(
        &pkt::PacketSpec::tcp(
            "10.0.0.1".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            1,
            2,
        ),
        128,
        &mut header,
    );
    let sample = sf::Sample::Flow {
        expanded: false,
        seq: 1,
        source_index: 1,
        rate: 0,
        pool: 0,
        drops: 0,
        input: 1,
        output: 2,
        frame_len: 64,
        header,
    };
    let mut bytes = Vec::new();
    sf::encode(
        &sf::Datagram {
            agent: SRC,
            sub_agent: 0,
            seq: 1,
            uptime_ms: 0,
            samples: vec![sample],
        },
        &mut bytes,
    );
    let mut e = Exporter::default();
    assert!(feed(&mut e, &bytes).is_empty());
    assert_eq!(errors(&e, Protocol::Sflow, ErrorKind::ZeroSampling), 1);

    // IPFIX: an options record stating interval 0 is counted; data stays unscaled.
    let opt = Template {
        id: 500,
        scope_fields: 1,
        fields: vec![Field::new(302, 4), Field::new(305, 4), Field::new(306, 4)],
    };
    let mut bytes = Vec::new();
    nf::ipfix(
        0,
        0,
        1,
        &[
            Set::OptionsTemplates(vec![opt.clone()]),
            Set::Data {
                template: opt,
                records: vec![vec![Value::Uint(1), Value::Uint(0), Value::Uint(99)]],
            },
        ],
        &mut bytes,
    );
    let mut e = Exporter::default();
    feed(&mut e, &bytes);
    assert_eq!(errors(&e, Protocol::Ipfix, ErrorKind::ZeroSampling), 1);
    assert_eq!(e.templates.sampler_rate(Version::Ipfix, 1, 1), None);
}

#[test]
fn sflow_sample_counts_that_lie_end_cleanly() {
    let seeds = seeds();
    let mut bytes = seeds[2].clone();
    // The sample count sits after version, address type, address, sub-agent, seq, uptime.
    bytes[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut e = Exporter::default();
    let out = feed(&mut e, &bytes);
    assert_eq!(out.len(), 2, "the two real samples still decode");
    assert_eq!(errors(&e, Protocol::Sflow, ErrorKind::BadCount), 1);
}

#[test]
fn a_wrong_set_length_is_counted() {
    let mut bytes = seeds()[0].clone();
    // First set's length (bytes 18..20) made larger than the message.
    bytes[18..20].copy_from_slice(&60_000u16.to_be_bytes());
    let mut e = Exporter::default();
    feed(&mut e, &bytes);
    assert_eq!(errors(&e, Protocol::Ipfix, ErrorKind::BadLength), 1);
}
