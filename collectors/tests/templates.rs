//! Template lifecycle of NetFlow v9 / IPFIX: data before its template is
//! held and decoded when the template comes; refresh replaces; IPFIX
//! withdrawal removes; sequence numbers tell loss; limits per exporter.

use std::net::IpAddr;

use levee_collectors::encode::netflow::{self as nf, Field, Set, Template, Value};
use levee_collectors::exporter::Exporter;
use levee_collectors::ipfix::HOLD_MS;
use levee_collectors::{Datagram, FlowRecord};

const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9));

fn template(id: u16) -> Template {
    Template {
        id,
        scope_fields: 0,
        fields: vec![
            Field::new(8, 4),
            Field::new(12, 4),
            Field::new(2, 4),
            Field::new(1, 4),
        ],
    }
}

fn record(dst: u8, packets: u64) -> Vec<Value> {
    vec![
        Value::Bytes(vec![10, 0, 0, 1]),
        Value::Bytes(vec![192, 0, 2, dst]),
        Value::Uint(packets),
        Value::Uint(packets * 100),
    ]
}

fn ipfix(seq: u32, sets: &[Set]) -> Vec<u8> {
    let mut b = Vec::new();
    nf::ipfix(1_700_000_000, seq, 7, sets, &mut b);
    b
}

fn feed(e: &mut Exporter, bytes: &[u8], at_ms: u64) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    e.decode(
        &Datagram {
            data: bytes,
            source: SRC,
            received_ms: at_ms,
        },
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn data_before_its_template_is_held_and_decoded_when_it_comes() {
    let t = template(300);
    let mut e = Exporter::default();
    let early = ipfix(
        0,
        &[Set::Data {
            template: t.clone(),
            records: vec![record(1, 5), record(2, 6)],
        }],
    );
    assert!(feed(&mut e, &early, 1_000).is_empty());
    assert_eq!(e.counters().template_misses, 1);
    // The template arrives in the next message, with more data.
    let out = feed(
        &mut e,
        &ipfix(
            0,
            &[
                Set::Templates(vec![t.clone()]),
                Set::Data {
                    template: t,
                    records: vec![record(3, 7)],
                },
            ],
        ),
        2_000,
    );
    let mut dsts: Vec<String> = out.iter().map(|r| r.dst.to_string()).collect();
    dsts.sort();
    assert_eq!(dsts, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
}

#[test]
fn held_data_expires() {
    let t = template(301);
    let mut e = Exporter::default();
    feed(
        &mut e,
        &ipfix(
            0,
            &[Set::Data {
                template: t.clone(),
                records: vec![record(1, 5)],
            }],
        ),
        1_000,
    );
    // Something else, much later, lets the held set expire.
    feed(&mut e, &ipfix(1, &[]), 1_000 + HOLD_MS + 1);
    let out = feed(
        &mut e,
        &ipfix(1, &[Set::Templates(vec![t])]),
        1_000 + HOLD_MS + 2,
    );
    assert!(out.is_empty(), "expired data must not come back");
}

#[test]
fn a_refreshed_template_replaces_the_old_one() {
    let mut e = Exporter::default();
    let t1 = template(302);
    feed(&mut e, &ipfix(0, &[Set::Templates(vec![t1])]), 0);
    // Same id, other layout: packets before addresses.
    let t2 = Template {
        id: 302,
        scope_fields: 0,
        fields: vec![Field::new(2, 4), Field::new(8, 4), Field::new(12, 4)],
    };
    let rec = vec![
        Value::Uint(9),
        Value::Bytes(vec![10, 0, 0, 1]),
        Value::Bytes(vec![192, 0, 2, 44]),
    ];
    let out = feed(
        &mut e,
        &ipfix(
            0,
            &[
                Set::Templates(vec![t2.clone()]),
                Set::Data {
                    template: t2,
                    records: vec![rec],
                },
            ],
        ),
        0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].dst.to_string().as_str(), out[0].packets),
        ("192.0.2.44", 9)
    );
    assert_eq!(e.templates.template_count(), 1);
}

#[test]
fn ipfix_withdrawal_removes_templates() {
    let mut e = Exporter::default();
    let (a, b) = (template(303), template(304));
    feed(
        &mut e,
        &ipfix(0, &[Set::Templates(vec![a.clone(), b.clone()])]),
        0,
    );
    assert_eq!(e.templates.template_count(), 2);
    // Withdraw one by id …
    feed(&mut e, &ipfix(0, &[Set::Withdraw(vec![303])]), 0);
    assert_eq!(e.templates.template_count(), 1);
    let out = feed(
        &mut e,
        &ipfix(
            0,
            &[Set::Data {
                template: a,
                records: vec![record(1, 1)],
            }],
        ),
        0,
    );
    assert!(out.is_empty());
    assert_eq!(e.counters().template_misses, 1);
    // … then all data templates (id 2, RFC 7011 §8.1).
    feed(&mut e, &ipfix(0, &[Set::Withdraw(vec![2])]), 0);
    assert_eq!(e.templates.template_count(), 0);
    let out = feed(
        &mut e,
        &ipfix(
            0,
            &[Set::Data {
                template: b,
                records: vec![record(1, 1)],
            }],
        ),
        0,
    );
    assert!(out.is_empty());
}

#[test]
fn sequence_gaps_count_lost_records_and_packets() {
    // IPFIX counts data records: 3 sent at seq 0, next expected 3; seq 10 means 7 lost.
    let t = template(305);
    let mut e = Exporter::default();
    let three = vec![record(1, 1), record(2, 1), record(3, 1)];
    feed(
        &mut e,
        &ipfix(
            0,
            &[
                Set::Templates(vec![t.clone()]),
                Set::Data {
                    template: t.clone(),
                    records: three.clone(),
                },
            ],
        ),
        0,
    );
    feed(
        &mut e,
        &ipfix(
            3,
            &[Set::Data {
                template: t.clone(),
                records: three.clone(),
            }],
        ),
        0,
    );
    assert_eq!(e.counters().lost, 0);
    feed(
        &mut e,
        &ipfix(
            13,
            &[Set::Data {
                template: t.clone(),
                records: three,
            }],
        ),
        0,
    );
    assert_eq!(e.counters().lost, 7);

    // NetFlow v9 counts export packets: 1, 2, then 5 means 2 lost.
    let mut e = Exporter::default();
    for seq in [1u32, 2, 5] {
        let mut b = Vec::new();
        nf::v9(
            1000,
            1_700_000_000,
            seq,
            1,
            &[Set::Templates(vec![t.clone()])],
            &mut b,
        );
        feed(&mut e, &b, 0);
    }
    assert_eq!(e.counters().lost, 2);
}

#[test]
fn observation_domains_keep_their_own_templates() {
    let mut e = Exporter::default();
    let t = template(306);
    feed(&mut e, &ipfix(0, &[Set::Templates(vec![t.clone()])]), 0);
    // Domain 8 has not sent template 306.
    let mut b = Vec::new();
    nf::ipfix(
        1_700_000_000,
        0,
        8,
        &[Set::Data {
            template: t,
            records: vec![record(1, 1)],
        }],
        &mut b,
    );
    assert!(feed(&mut e, &b, 0).is_empty());
    assert_eq!(e.counters().template_misses, 1);
}

#[test]
fn running_totals_become_deltas_per_flow() {
    // An exporter that reports octetTotalCount/packetTotalCount (85/86): a
    // long flow reported three times must add up to its last total.
    let t = Template {
        id: 310,
        scope_fields: 0,
        fields: vec![
            Field::new(8, 4),
            Field::new(12, 4),
            Field::new(86, 8),
            Field::new(85, 8),
        ],
    };
    let rec = |dst: u8, p: u64| {
        vec![
            Value::Bytes(vec![10, 0, 0, 1]),
            Value::Bytes(vec![192, 0, 2, dst]),
            Value::Uint(p),
            Value::Uint(p * 100),
        ]
    };
    let mut e = Exporter::default();
    let mut total = 0u64;
    for (seq, (a, b)) in [(10u64, 1u64), (25, 2), (40, 3)].into_iter().enumerate() {
        let out = feed(
            &mut e,
            &ipfix(
                seq as u32 * 2,
                &[
                    Set::Templates(vec![t.clone()]),
                    Set::Data {
                        template: t.clone(),
                        records: vec![rec(1, a), rec(2, b)],
                    },
                ],
            ),
            0,
        );
        total += out
            .iter()
            .filter(|r| r.dst.to_string() == "192.0.2.1")
            .map(|r| r.packets)
            .sum::<u64>();
    }
    assert_eq!(total, 40, "10, then +15, then +15");
    // A total that goes down is a new flow on the same key: counted whole.
    let out = feed(
        &mut e,
        &ipfix(
            6,
            &[Set::Data {
                template: t,
                records: vec![rec(1, 5)],
            }],
        ),
        0,
    );
    assert_eq!(out[0].packets, 5);
}
