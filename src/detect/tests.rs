//! The incident lifecycle and the baseline verdicts, on hand-made seconds.

use super::*;
use crate::accounting::{Counters, Outbound};

const HOST: Addr = Addr::v4([192, 0, 2, 10]);

/// Baselines of a minute's window, learnt in two, with a day's ceiling.
const MINUTE: Params = Params {
    alpha: 1.0 / 60.0,
    long_alpha: 1.0 / 86_400.0,
    learning_s: 120,
    sigma: 4.0,
    floor_pps: 1000.0,
    floor_bps: 1.0,
};

fn settings(pps: u64, trigger_seconds: u32, baseline: Option<Params>) -> Settings {
    Settings {
        thresholds: vec![Thresholds {
            pps: Some(pps),
            bps: None,
            ..Thresholds::default()
        }],
        groups: vec!["customers".into()],
        trigger_seconds,
        hold_down_s: 10,
        botnet_sources: 300,
        baseline,
        max_hosts: 1000,
        idle_s: 300,
        legit_learning_s: 30,
        prefixes: vec![None],
    }
}

fn second(addr: Addr, pps: u32) -> HostSecond {
    let mut inbound = Counters::default();
    inbound.packets[class::ALL] = pps;
    inbound.packets[class::UDP] = pps;
    inbound.bytes = u64::from(pps) * 500;
    inbound.flows = pps;
    HostSecond {
        addr,
        group: 0,
        inbound,
        outbound: Outbound::default(),
        details: None,
    }
}

/// A second of `pps` TCP packets to [`HOST`] (a web server's own traffic).
fn web(pps: u32) -> HostSecond {
    let mut h = second(HOST, pps);
    h.inbound.packets[class::UDP] = 0;
    h.inbound.packets[class::TCP] = pps;
    h
}

fn started(events: &[Event]) -> Vec<&Incident> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::Started(i) = e {
                Some(&**i)
            } else {
                None
            }
        })
        .collect()
}

fn ended(events: &[Event]) -> Vec<&Incident> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::Ended(i) = e {
                Some(&**i)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn a_trigger_starts_an_incident_at_once_and_hold_down_ends_it() {
    let mut d = Detector::new(settings(1000, 1, None));
    d.on_trigger(&Trigger {
        addr: HOST,
        group: 0,
        at_ms: 100_250,
        pps: 1200,
        bps: 0,
        samples: 0,
    });
    let ev = d.take_events();
    let s = started(&ev);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].started_ms, s[0].detected_ms), (100_250, 100_250));
    assert_eq!(s[0].reason.metric, "pps");
    for sec in 100..105 {
        d.on_second(sec, vec![second(HOST, 5000)]);
    }
    // Quiet from 105; ends once 10 quiet seconds (105..=114) have passed.
    for sec in 105..114 {
        d.on_second(sec, vec![]);
        assert!(
            ended(&d.take_events()).is_empty(),
            "ended too early at {sec}"
        );
    }
    d.on_second(114, vec![]);
    let ev = d.take_events();
    let e = ended(&ev);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].last_over_ms, 105_000);
    assert_eq!(e[0].peak_pps, 5000);
    assert_eq!(e[0].timeline.len(), 5);
    assert_eq!(e[0].severity, "high");
}

#[test]
fn a_crossing_within_the_hold_down_continues_the_incident() {
    let mut d = Detector::new(settings(1000, 1, None));
    d.on_second(10, vec![second(HOST, 2000)]);
    d.on_second(15, vec![second(HOST, 2000)]);
    d.on_second(30, vec![]);
    let ev = d.take_events();
    assert_eq!(started(&ev).len(), 1);
    assert_eq!(ended(&ev).len(), 1);
    assert_eq!(ended(&ev)[0].timeline.len(), 2);
}

#[test]
fn sustained_triggers_need_their_seconds() {
    let mut d = Detector::new(settings(1000, 3, None));
    d.on_trigger(&Trigger {
        addr: HOST,
        group: 0,
        at_ms: 1,
        pps: 2000,
        bps: 0,
        samples: 0,
    });
    d.on_second(1, vec![second(HOST, 2000)]);
    d.on_second(2, vec![second(HOST, 2000)]);
    assert!(started(&d.take_events()).is_empty());
    d.on_second(3, vec![second(HOST, 2000)]);
    let ev = d.take_events();
    assert_eq!(started(&ev)[0].started_ms, 1000);
    assert_eq!(started(&ev)[0].detected_ms, 4000);
}

#[test]
fn baselines_judge_each_host_by_its_own_normal() {
    let p = MINUTE;
    // Static limits far away: only baselines can speak.
    let mut d = Detector::new(settings(10_000_000, 1, Some(p)));
    let (busy, quiet) = (Addr::v4([192, 0, 2, 1]), Addr::v4([192, 0, 2, 2]));
    for s in 0..300u64 {
        let noise = ((s * 7919) % 13) as u32 * 300;
        d.on_second(
            s,
            vec![
                second(busy, 40_000 + noise),
                second(quiet, 100 + noise / 100),
            ],
        );
    }
    assert!(
        started(&d.take_events()).is_empty(),
        "normal traffic is not an attack"
    );
    // The busy host's normal is far above what alarms the quiet one.
    for s in 300..310u64 {
        d.on_second(s, vec![second(busy, 42_000), second(quiet, 5_000)]);
    }
    let ev = d.take_events();
    let s = started(&ev);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].host, quiet);
    assert_eq!(s[0].reason.kind, "baseline");
}

#[test]
fn an_incident_carries_the_hosts_legitimate_traffic_from_before() {
    let mut d = Detector::new(settings(10_000, 1, None));
    // Ten minutes of 1000 pps, a tenth of it TCP, with a quiet gap.
    for s in 1..=600u64 {
        if (300..360).contains(&s) {
            continue;
        }
        let mut h = second(HOST, 1000);
        h.inbound.packets[class::UDP] = 900;
        h.inbound.packets[class::TCP] = 100;
        d.on_second(s, vec![h]);
    }
    d.take_events();
    // Then the flood: its seconds do not enter the profile.
    for s in 601..=610u64 {
        d.on_second(s, vec![second(HOST, 50_000)]);
    }
    let events = d.take_events();
    let inc = started(&events)[0];
    assert!(inc.legit.learnt);
    let l = inc.legit.pps;
    assert!((850.0..=1000.0).contains(&l[class::ALL]), "{l:?}");
    assert!((l[class::UDP] / l[class::ALL] - 0.9).abs() < 0.01, "{l:?}");
    // After it ends, a second flood finds the profile untouched by the
    // first (only decayed by the quiet seconds).
    for s in 611..=640u64 {
        d.on_second(s, vec![]);
    }
    d.take_events();
    d.on_second(641, vec![second(HOST, 50_000)]);
    let events = d.take_events();
    let again = started(&events)[0].legit.pps;
    assert!(again[class::ALL] < l[class::ALL], "{again:?}");
    assert!(again[class::ALL] > 0.5 * l[class::ALL], "{again:?}");
    assert!((again[class::UDP] / again[class::ALL] - 0.9).abs() < 0.01);
}

#[test]
fn an_attacks_ramp_and_a_short_history_are_not_taken_for_normal() {
    let mut d = Detector::new(settings(10_000, 1, None));
    // Five quiet seconds, then the ramp (6,000 pps: over half the 10,000
    // threshold), then the flood.
    for s in 1..=5u64 {
        d.on_second(s, vec![second(HOST, 100)]);
    }
    d.on_second(6, vec![second(HOST, 6_000)]);
    d.on_second(7, vec![second(HOST, 50_000)]);
    let events = d.take_events();
    let legit = started(&events)[0].legit;
    assert!(!legit.learnt, "5 s is not a history");
    assert!(
        (legit.pps[class::ALL] - 100.0).abs() < 1.0,
        "the ramp second is not in it: {legit:?}"
    );
}

#[test]
fn a_hosts_profile_can_be_read_while_it_is_learnt() {
    let mut d = Detector::new(settings(10_000, 1, None));
    assert_eq!(d.legit(&HOST), None, "an unknown host has none");
    for s in 1..=29u64 {
        d.on_second(s, vec![second(HOST, 100)]);
    }
    let l = d.legit(&HOST).unwrap();
    assert!(!l.learnt);
    assert_eq!(l.seconds, 29);
    assert!((l.pps[class::UDP] - 100.0).abs() < 1.0, "{l:?}");
    d.on_second(30, vec![second(HOST, 100)]);
    assert!(d.legit(&HOST).unwrap().learnt, "30 s is legit_learning");
    // Under attack, it is the profile the incident carries.
    d.on_second(31, vec![second(HOST, 50_000)]);
    let carried = started(&d.take_events())[0].legit;
    assert_eq!(d.legit(&HOST), Some(carried));
}

/// Details of `n` sampled NTP reflections (weight 100 each).
fn ntp(n: u64) -> Box<Details> {
    let mut d = Details {
        records: n,
        sampled: n,
        packets: n * 100,
        ..Details::default()
    };
    d.classes[class::ALL] = n * 100;
    d.classes[class::UDP] = n * 100;
    d.udp_src_ports.add(123, n * 100);
    d.src_ports.add(123, n * 100);
    Box::new(d)
}

#[test]
fn an_incident_is_unclassified_until_its_evidence_names_it_and_peeks_say_so_early() {
    let mut d = Detector::new(settings(1000, 1, None));
    d.on_trigger(&Trigger {
        addr: HOST,
        group: 0,
        at_ms: 100_250,
        pps: 1200,
        bps: 0,
        samples: 0,
    });
    let ev = d.take_events();
    let s = started(&ev);
    assert_eq!(s[0].verdict.family, "unclassified", "{:?}", s[0].verdict);
    assert!(s[0].verdict.why.is_some());
    assert!(!s[0].current.verdict.classified());
    // A peek at the second so far: classified before the second ends.
    d.on_peek(Peek {
        addr: HOST,
        group: 0,
        second: 100,
        details: ntp(40),
    });
    let ev = d.take_events();
    let [Event::Updated(i)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(i.current.verdict.family, "amplification");
    assert_eq!(i.current.verdict.vector.as_deref(), Some("ntp"));
    assert!(i.current.verdict.confidence > 0.9);
    assert_eq!(i.verdict.family, "amplification", "the report says so too");
    // A peek that changes nothing a rule is built from is not reported.
    d.on_peek(Peek {
        addr: HOST,
        group: 0,
        second: 100,
        details: ntp(45),
    });
    assert!(d.take_events().is_empty());
    // The second's snapshot replaces the peek (not added to it).
    let mut h = second(HOST, 4000);
    h.details = Some(ntp(60));
    d.on_second(100, vec![h]);
    let ev = d.take_events();
    let [Event::Updated(i)] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(
        i.details.records, 60,
        "whole-incident details: the second once"
    );
    assert_eq!(i.current.details.records, 60);
    // A peek at a second already in is ignored.
    d.on_peek(Peek {
        addr: HOST,
        group: 0,
        second: 100,
        details: ntp(1),
    });
    assert!(d.take_events().is_empty());
}

#[test]
fn the_second_before_the_trigger_is_the_attacks_ramp() {
    let mut d = Detector::new(settings(1000, 1, None));
    // A second under the limit, with details (the ramp)…
    let mut h = second(HOST, 800);
    h.details = Some(ntp(30));
    d.on_second(99, vec![h]);
    assert!(d.take_events().is_empty());
    // …then the crossing: the incident starts with that evidence.
    d.on_trigger(&Trigger {
        addr: HOST,
        group: 0,
        at_ms: 100_100,
        pps: 1200,
        bps: 0,
        samples: 0,
    });
    let ev = d.take_events();
    let s = started(&ev);
    assert_eq!(
        s[0].current.verdict.family, "amplification",
        "{:?}",
        s[0].current.verdict
    );
    assert_eq!(s[0].current.verdict.samples, 30);
}

#[test]
fn a_spray_of_addresses_cannot_fill_the_detector_for_good() {
    let mut s = settings(1000, 1, None);
    s.max_hosts = 10;
    s.idle_s = 30;
    let mut d = Detector::new(s);
    // One packet each to 10 addresses: the state table is full.
    let spray: Vec<HostSecond> = (0..10u8)
        .map(|i| second(Addr::v4([198, 51, 100, i]), 1))
        .collect();
    d.on_second(100, spray);
    assert_eq!(d.hosts(), 10);
    // A new host over the static limit still gets its incident (per
    // second, without state of its own).
    d.on_second(101, vec![second(HOST, 5000)]);
    let ev = d.take_events();
    assert_eq!(started(&ev).len(), 1, "{ev:?}");
    // The sprayed addresses, idle past idle_s, are forgotten.
    d.on_second(200, Vec::new());
    assert!(d.hosts() <= 1, "{}", d.hosts());
    // Saved state comes back, the most recent first, never filling more
    // than three quarters of the table.
    let saved: Vec<(Addr, Saved)> = (0..20u8)
        .map(|i| {
            let b = Baseline {
                seconds: 100,
                last: u64::from(i),
                ..Baseline::default()
            };
            (
                Addr::v4([203, 0, 113, i]),
                Saved {
                    baseline: b,
                    legit: None,
                },
            )
        })
        .collect();
    let mut fresh = Detector::new(settings(1000, 1, None));
    fresh.s.max_hosts = 8;
    assert_eq!(fresh.restore(saved.clone()), 6);
    assert!(
        fresh.saved().all(|(a, _)| a.0[15] >= 14),
        "the most recent kept"
    );
}

#[test]
fn an_attack_does_not_decay_the_hosts_normal_traffic_to_nothing() {
    let mut d = Detector::new(settings(10_000, 1, None));
    for t in 0..60 {
        d.on_second(1_000 + t, vec![web(200)]);
    }
    // Ten minutes of attack, then the host is quiet again.
    for t in 60..660 {
        d.on_second(1_000 + t, vec![second(HOST, 50_000)]);
    }
    d.take_events();
    let state = &d.hosts[&HOST];
    let tcp = state.legit.at(1_660, 30).pps[class::TCP];
    assert!(tcp > 150.0, "the profile before the attack is kept: {tcp}");
}

#[test]
fn a_prefix_state_costs_what_the_docs_say() {
    // docs/detection.md states the cost per prefix; hold it to the struct.
    let state = std::mem::size_of::<prefix::State>() + std::mem::size_of::<prefix::Key>();
    eprintln!("prefix state in the detector: {state} bytes");
    assert!(state <= 200, "{state}");
}

#[test]
fn prefix_baselines_come_back_after_a_restart_where_they_still_fit() {
    let p = MINUTE;
    let with_len = |len_v4: u8| {
        let mut s = settings(10_000_000, 1, Some(p));
        s.prefixes = vec![Some(prefix::PrefixSettings {
            len_v4,
            len_v6: 64,
            limits: Thresholds::default(),
            networks: vec!["192.0.2.0/24".parse().unwrap()],
        })];
        s
    };
    let mut d = Detector::new(with_len(24));
    let net = Addr::v4([192, 0, 2, 0]);
    for s in 0..200u64 {
        let mut inbound = Counters::default();
        inbound.packets[class::ALL] = 5_000;
        inbound.packets[class::UDP] = 5_000;
        inbound.bytes = 2_500_000;
        d.on_prefixes(
            s,
            vec![crate::accounting::PrefixSecond {
                prefix: net,
                len: 24,
                group: 0,
                inbound,
                hosts: 100,
                top_hosts: Vec::new(),
                details: None,
            }],
        );
    }
    let saved: Vec<_> = d.saved_prefixes().collect();
    assert_eq!(saved.len(), 1);
    assert_eq!((saved[0].0, saved[0].1.len), (net, 24));
    assert_eq!(saved[0].1.group, "customers");
    assert!(saved[0].1.baseline.seconds >= 199);
    // Through the store's JSON, into a detector with the same config.
    let bytes = serde_json::to_vec(&saved[0].1).unwrap();
    let back: prefix::SavedPrefix = serde_json::from_slice(&bytes).unwrap();
    let mut fresh = Detector::new(with_len(24));
    assert_eq!(fresh.restore_prefixes(vec![(net, back.clone())]), 1);
    assert_eq!(fresh.saved_prefixes().next().unwrap().1, back);
    // A config that now sums per /26, or a hostgroup renamed: relearnt.
    assert_eq!(
        Detector::new(with_len(26)).restore_prefixes(vec![(net, back.clone())]),
        0
    );
    let mut renamed = back.clone();
    renamed.group = "others".into();
    assert_eq!(
        Detector::new(with_len(24)).restore_prefixes(vec![(net, renamed)]),
        0
    );
    // The hostgroup narrowed to another network: that prefix is no longer
    // its own.
    let mut narrowed = with_len(24);
    if let Some(p) = narrowed.prefixes[0].as_mut() {
        p.networks = vec!["198.51.100.0/24".parse().unwrap()];
    }
    assert_eq!(
        Detector::new(narrowed).restore_prefixes(vec![(net, back)]),
        0
    );
}

#[test]
fn many_host_incidents_inside_a_prefix_are_not_its_incident_in_looks_or_seconds() {
    let mut s = settings(1_000, 1, None);
    s.prefixes = vec![Some(prefix::PrefixSettings {
        len_v4: 24,
        len_v6: 64,
        limits: Thresholds {
            pps: Some(10_000),
            bps: None,
            ..Thresholds::default()
        },
        networks: vec!["192.0.2.0/24".parse().unwrap()],
    })];
    let mut d = Detector::new(s);
    let hosts: Vec<Addr> = (1..=20u8).map(|i| Addr::v4([192, 0, 2, i])).collect();
    // Twenty hosts flooded at twice their limit: twenty host incidents.
    d.on_second(100, hosts.iter().map(|h| second(*h, 2_000)).collect());
    assert_eq!(started(&d.take_events()).len(), 20);
    let net = Addr::v4([192, 0, 2, 0]);
    let mut window = Counters::default();
    window.packets[class::ALL] = 45_000;
    window.packets[class::UDP] = 45_000;
    window.bytes = 22_500_000;
    window.samples = 45_000;
    // A look that names only eight of them (a shard's busiest): the rest
    // of their traffic must not start the prefix's incident.
    d.on_prefix_peeks(
        0,
        vec![crate::accounting::PrefixPeek {
            prefix: net,
            len: 24,
            group: 0,
            at_ms: 101_300,
            second: 101,
            window,
            hosts: 60,
            top_hosts: hosts[..8].iter().map(|h| (*h, 2_000)).collect(),
            details: None,
        }],
    );
    assert!(started(&d.take_events()).is_empty());
    // Nor the second's sum, which takes every one of them out whole.
    d.on_second(101, hosts.iter().map(|h| second(*h, 2_000)).collect());
    d.on_prefixes(
        101,
        vec![crate::accounting::PrefixSecond {
            prefix: net,
            len: 24,
            group: 0,
            inbound: window,
            hosts: 60,
            top_hosts: hosts[..8].iter().map(|h| (*h, 2_000)).collect(),
            details: None,
        }],
    );
    let ev = d.take_events();
    assert!(
        started(&ev).iter().all(|i| i.prefix.is_none()),
        "{:?}",
        started(&ev)
    );
}

#[test]
fn the_hosts_normal_traffic_comes_back_after_a_restart() {
    let mut d = Detector::new(settings(10_000, 1, None));
    for t in 0..60 {
        d.on_second(1_000 + t, vec![web(200)]);
    }
    // Saved as the store saves it (JSON), taken back by a new detector.
    let saved: Vec<(Addr, Saved)> = d
        .saved()
        .map(|(a, s)| {
            let bytes = serde_json::to_vec(&s).unwrap();
            (*a, serde_json::from_slice(&bytes).unwrap())
        })
        .collect();
    assert!(saved.iter().all(|(_, s)| s.legit.is_some()));
    let mut fresh = Detector::new(settings(10_000, 1, None));
    assert_eq!(fresh.restore(saved), 1);
    // An attack right after the restart carries the profile from before
    // it, learnt: rules are judged against it at once.
    fresh.on_second(1_061, vec![second(HOST, 50_000)]);
    let ev = fresh.take_events();
    let inc = started(&ev)[0];
    assert!(inc.legit.learnt, "{:?}", inc.legit);
    let tcp = inc.legit.pps[class::TCP];
    assert!((150.0..=210.0).contains(&tcp), "{tcp}");
}
