//! The escalation engine and the rule builder, on made-up incidents.

use std::sync::Arc;
use std::time::Duration;

use levee_bgp::{FlowAction, FlowSpecRule, Range, Route, TcpFlags};
use levee_collectors::Addr;

use super::engine::{Action, Engine};
use super::rules;
use crate::accounting::Details;
use crate::config::{Config, Hostgroup, HostgroupMitigation, Level, Thresholds};
use crate::detect::classify::{Component, Family, Verdict};
use crate::detect::{Current, Features, Incident, Point, Reason};

const S: u64 = 1000;

fn config() -> Config {
    let mut c = Config {
        hostgroups: vec![Hostgroup {
            name: "customers".into(),
            prefixes: vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::/48".parse().unwrap(),
            ],
            within: None,
            thresholds: Thresholds::default(),
            prefix_thresholds: None,
            mitigation: HostgroupMitigation {
                ladder: vec![Level::Flowspec, Level::Rtbh],
                flowspec_max_bps: Some(5_000_000_000),
                rtbh_min_bps: 1_000_000_000,
                ..HostgroupMitigation::default()
            },
        }],
        ..Config::default()
    };
    c.bgp.next_hop = Some("192.0.2.254".parse().unwrap());
    c.bgp.next_hop6 = Some("100::1".parse().unwrap());
    c.mitigation.dwell = Duration::from_secs(10);
    c.mitigation.hold_down = Duration::from_secs(30);
    c.mitigation.ttl = Duration::from_secs(600);
    c
}

fn incident(host: &str, family: Family, vector: Option<&str>, bps: u64, at: u64) -> Incident {
    let addr: std::net::IpAddr = host.parse().unwrap();
    let host = match addr {
        std::net::IpAddr::V4(a) => Addr::v4(a.octets()),
        std::net::IpAddr::V6(a) => Addr::v6(a.octets()),
    };
    let verdict = Verdict {
        family: family.as_str().into(),
        vector: vector.map(Into::into),
        confidence: 0.95,
        components: vec![component(family, vector, 1.0)],
        parts: vec![component(family, vector, 1.0)],
        samples: 1000,
        why: None,
        sources_estimate: 5000,
        spoofed: true,
        botnet: false,
        ttl_entropy: None,
        flags_why: String::new(),
    };
    let features = Features {
        protocols: vec![6],
        src_ports: vec![],
        dst_ports: vec![443],
        packet_length: [40, 60],
        tcp_flags: vec!["syn"],
        fragments: false,
        icmp_types: vec![],
    };
    Incident {
        id: format!("inc-{host}"),
        host,
        hostgroup: "customers".into(),
        group: 0,
        started_ms: 0,
        detected_ms: 0,
        last_over_ms: at,
        ended: false,
        peak_pps: bps / 8000,
        peak_bps: bps,
        reason: Reason {
            metric: "pps".into(),
            value: 1,
            limit: 1,
            kind: "static",
            window_s: 1,
            samples: 0,
        },
        verdict: verdict.clone(),
        severity: "high",
        features: features.clone(),
        top_src_ports: vec![],
        top_dst_ports: vec![],
        protocol: "tcp".into(),
        timeline: vec![Point {
            second: at / 1000,
            pps: bps / 8000,
            bps,
            est_tcp: 0,
            samples: 0,
        }]
        .into(),
        details: Details::default(),
        current: Current {
            verdict,
            features,
            // SYNs to 443 of 40 to 60 bytes, as sampled.
            details: Arc::new(sampled(100, |i| crate::accounting::sketch::Seen {
                length: 40 + (i % 21) as u16,
                ..seen(6, 40_000, 0x02)
            })),
        },
        legit: crate::detect::Legit::default(),
        prefix: None,
        hosts_affected: 0,
        top_hosts: vec![],
        linked: vec![],
    }
}

/// A component of a verdict, its share known from many samples.
fn component(family: Family, vector: Option<&str>, share: f64) -> Component {
    Component {
        family,
        vector: vector.map(Into::into),
        share,
        low: share - 0.01,
        high: share + 0.01,
        services: Vec::new(),
    }
}

fn announced(actions: &[Action]) -> Vec<(Level, Route)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Announce(m) => Some((m.level, m.route.clone())),
            _ => None,
        })
        .collect()
}

fn withdrawn(actions: &[Action]) -> Vec<Level> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Withdraw { m, .. } => Some(m.level),
            _ => None,
        })
        .collect()
}

#[test]
fn a_syn_flood_gets_a_narrow_flowspec_rule() {
    let inc = incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0);
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].dst, "192.0.2.10/32".parse().unwrap());
    assert_eq!(r[0].protocols, vec![6]);
    assert_eq!(r[0].dst_ports, vec![Range::one(443)]);
    // The sampled 40–60 bytes, with a margin for lengths not sampled.
    assert_eq!(r[0].packet_lengths, vec![Range { lo: 24, hi: 76 }]);
    assert_eq!(
        r[0].tcp_flags,
        Some(TcpFlags {
            set: 0x02,
            unset: 0x10
        })
    );
    assert_eq!(r[0].src, None, "spoofed: no source to match");
    assert_eq!(r[0].action, FlowAction::Discard);
}

#[test]
fn an_amplification_rule_matches_the_reflected_service() {
    let mut inc = incident("2001:db8::10", Family::Amplification, Some("ntp"), 1, 0);
    inc.current.features.protocols = vec![17];
    inc.current.features.packet_length = [90, 468];
    let policy = HostgroupMitigation {
        flowspec_action: FlowAction::rate_limit(1_000_000),
        ..HostgroupMitigation::default()
    };
    let r = rules::flowspec(&inc, &policy);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].protocols, vec![17]);
    assert_eq!(r[0].src_ports, vec![Range::one(123)]);
    assert_eq!(r[0].packet_lengths, vec![], "a wide spread is not matched");
    assert_eq!(
        r[0].action,
        FlowAction::RateLimit {
            bytes_per_second: 1_000_000
        }
    );
}

#[test]
fn a_multi_vector_attack_gets_a_rule_per_component() {
    let mut inc = incident("192.0.2.10", Family::SynFlood, None, 1, 0);
    inc.current.verdict.family = "multi_vector".into();
    inc.current
        .verdict
        .components
        .push(component(Family::Amplification, Some("dns"), 0.4));
    inc.current
        .verdict
        .components
        .push(component(Family::IcmpFlood, None, 0.3));
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    let protocols: Vec<Vec<u8>> = r.iter().map(|r| r.protocols.clone()).collect();
    assert_eq!(protocols, vec![vec![6], vec![17], vec![1]]);
    assert_eq!(r[1].src_ports, vec![Range::one(53)]);
}

#[test]
fn the_ladder_starts_low_escalates_and_steps_down() {
    let mut e = Engine::new(Arc::new(config()));
    // 2 Gbit/s: FlowSpec first.
    let a = e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 2_000_000_000, 0),
        0,
    );
    let got = announced(&a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, Level::Flowspec);
    // Persisting, but not yet a dwell: nothing new.
    let a = e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 2_000_000_000, 5 * S),
        5 * S,
    );
    assert!(announced(&a).is_empty());
    // Past the dwell: RTBH (2 Gbit/s ≥ rtbh_min_bps).
    let a = e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 2_000_000_000, 10 * S),
        10 * S,
    );
    let got = announced(&a);
    assert_eq!(got.len(), 1, "{a:?}");
    assert!(matches!(&got[0], (Level::Rtbh, Route::Blackhole(b))
        if b.prefix == "192.0.2.10/32".parse().unwrap()
        && b.next_hop == "192.0.2.254".parse::<std::net::IpAddr>().unwrap()));
    assert_eq!(e.active().len(), 2);
    // The attack was last over its threshold at 10 s. Nothing before the
    // hold-down (30 s) has passed.
    assert!(e.tick(39 * S).is_empty());
    // Then RTBH goes first, FlowSpec a dwell later.
    assert_eq!(withdrawn(&e.tick(40 * S)), vec![Level::Rtbh]);
    assert!(e.tick(45 * S).is_empty());
    assert_eq!(withdrawn(&e.tick(50 * S)), vec![Level::Flowspec]);
    assert!(e.active().is_empty());
    assert!(e.tick(100 * S).is_empty());
}

#[test]
fn an_attack_too_big_for_flowspec_moves_up_at_once() {
    let mut e = Engine::new(Arc::new(config()));
    let a = e.incident(
        &incident("192.0.2.10", Family::UdpFlood, None, 2_000_000_000, 0),
        0,
    );
    assert_eq!(announced(&a)[0].0, Level::Flowspec);
    let a = e.incident(
        &incident("192.0.2.10", Family::UdpFlood, None, 8_000_000_000, S),
        S,
    );
    assert_eq!(announced(&a)[0].0, Level::Rtbh);
}

#[test]
fn a_small_persistent_attack_is_never_blackholed() {
    let mut e = Engine::new(Arc::new(config()));
    for t in 0..100 {
        let a = e.incident(
            &incident("192.0.2.10", Family::SynFlood, None, 50_000_000, t * S),
            t * S,
        );
        for (level, _) in announced(&a) {
            assert_eq!(level, Level::Flowspec);
        }
        let refusals = a
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Refuse {
                        level: Level::Rtbh,
                        ..
                    }
                )
            })
            .count();
        assert!(refusals <= 1, "a refusal is logged once, not every second");
    }
    assert_eq!(e.active().len(), 1);
}

#[test]
fn guards_refuse_and_say_why() {
    let mut c = config();
    c.mitigation.never = vec!["192.0.2.53/32".parse().unwrap()];
    c.mitigation.max_flowspec = 1;
    c.mitigation.aggregate_flowspec = false;
    let mut e = Engine::new(Arc::new(c));
    let a = e.incident(
        &incident("192.0.2.53", Family::SynFlood, None, 2_000_000_000, 0),
        0,
    );
    assert!(announced(&a).is_empty());
    let why: Vec<String> = a
        .iter()
        .filter_map(|a| match a {
            Action::Refuse { why, .. } => Some(why.clone()),
            _ => None,
        })
        .collect();
    assert!(why.iter().any(|w| w.contains("never-mitigate")), "{why:?}");
    // Budget: one FlowSpec rule at most.
    assert_eq!(
        announced(&e.incident(
            &incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0),
            0
        ))
        .len(),
        1
    );
    let a = e.incident(
        &incident("192.0.2.11", Family::SynFlood, None, 100_000_000, 0),
        0,
    );
    assert!(announced(&a).is_empty());
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Refuse { why, .. } if why.contains("budget full"))));
    // Outside every hostgroup, or too short: refused by the guard itself.
    let cfg = config();
    let outside = Route::Blackhole(levee_bgp::BlackholeRoute::rfc7999(
        "198.51.100.1/32".parse().unwrap(),
        "192.0.2.254".parse().unwrap(),
    ));
    assert_eq!(
        super::engine::guard(&cfg, &outside).unwrap_err(),
        super::engine::Refusal::NotProtected("198.51.100.1/32".parse().unwrap())
    );
    let short = Route::Blackhole(levee_bgp::BlackholeRoute::rfc7999(
        "192.0.0.0/16".parse().unwrap(),
        "192.0.2.254".parse().unwrap(),
    ));
    let refused = super::engine::guard(&cfg, &short).unwrap_err();
    assert!(
        refused.to_string().contains("shorter than /24"),
        "{refused}"
    );
}

#[test]
fn shadow_and_dry_run_mark_everything_unsent() {
    let mut c = config();
    c.hostgroups[0].mitigation.shadow = true;
    let mut e = Engine::new(Arc::new(c));
    let a = e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0),
        0,
    );
    assert!(a
        .iter()
        .all(|a| matches!(a, Action::Announce(m) if m.shadow)));
    let mut c = config();
    c.mitigation.dry_run = true;
    let mut e = Engine::new(Arc::new(c));
    let a = e
        .manual(
            "192.0.2.10".parse().unwrap(),
            Level::Rtbh,
            None,
            60 * S,
            "system:cli",
            0,
        )
        .unwrap();
    assert!(a
        .iter()
        .all(|a| matches!(a, Action::Announce(m) if m.shadow)));
}

#[test]
fn mitigations_expire_unless_the_attack_renews_them() {
    let mut c = config();
    c.mitigation.ttl = Duration::from_secs(20);
    c.mitigation.hold_down = Duration::from_secs(3600);
    let mut e = Engine::new(Arc::new(c));
    e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0),
        0,
    );
    // Renewed at 15 s: still there at 30 s.
    e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 15 * S),
        15 * S,
    );
    assert!(withdrawn(&e.tick(30 * S)).is_empty());
    assert_eq!(withdrawn(&e.tick(35 * S)), vec![Level::Flowspec]);
    // A manual one is not renewed by attacks.
    let host = "192.0.2.20".parse().unwrap();
    e.manual(host, Level::Rtbh, None, 10 * S, "system:cli", 40 * S)
        .unwrap();
    assert!(e.tick(49 * S).is_empty());
    assert_eq!(withdrawn(&e.tick(50 * S)), vec![Level::Rtbh]);
}

#[test]
fn restored_intents_step_down_after_a_quiet_hold_down() {
    let mut e = Engine::new(Arc::new(config()));
    e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 2_000_000_000, 0),
        0,
    );
    let saved = e.active().to_vec();
    let mut e = Engine::new(Arc::new(config()));
    e.restore(saved, 100 * S);
    assert_eq!(e.active().len(), 1);
    assert!(e.tick(120 * S).is_empty());
    assert_eq!(withdrawn(&e.tick(130 * S)), vec![Level::Flowspec]);
}

#[test]
fn an_ipv6_host_gets_a_128_blackhole() {
    let c = config();
    let b = rules::blackhole("2001:db8::12".parse().unwrap(), &c).unwrap();
    assert_eq!(b.prefix, "2001:db8::12/128".parse().unwrap());
    assert_eq!(b.next_hop, "100::1".parse::<std::net::IpAddr>().unwrap());
    let mut c = config();
    c.bgp.next_hop6 = None;
    assert_eq!(
        rules::blackhole("2001:db8::12".parse().unwrap(), &c).unwrap_err(),
        rules::RouteError::NoBlackholeNextHop { key: "next_hop6" }
    );
}

#[test]
fn firewall_rules_say_in_nft_what_the_flowspec_rule_says() {
    use super::firewall::rule;
    let inc = incident("192.0.2.10", Family::SynFlood, None, 1, 0);
    let r = &rules::flowspec(&inc, &HostgroupMitigation::default())[0];
    assert_eq!(
        rule(r, "m1").unwrap(),
        "ip daddr 192.0.2.10/32 meta l4proto 6 th dport 443 ip length 24-76 \
         tcp flags & 0x12 == 0x2 counter drop comment \"levee:m1\""
    );
    let v6 = levee_bgp::FlowSpecRule {
        protocols: vec![17, 6],
        src_ports: vec![Range::one(53), Range { lo: 1024, hi: 2048 }],
        packet_lengths: vec![Range { lo: 100, hi: 200 }],
        fragment: Some(levee_bgp::Fragment::IsFragment),
        ..levee_bgp::FlowSpecRule::to(
            "2001:db8::10/128".parse().unwrap(),
            FlowAction::rate_limit(1000),
        )
    };
    assert_eq!(
        rule(&v6, "m2").unwrap(),
        "ip6 daddr 2001:db8::10/128 meta l4proto { 17, 6 } th sport { 53, 1024-2048 } \
         ip6 length 60-160 exthdr frag exists limit rate over 1000 bytes/second counter drop \
         comment \"levee:m2\"",
        "IPv6 lengths are payload lengths"
    );
    let redirect = levee_bgp::FlowSpecRule::to(
        "192.0.2.10/32".parse().unwrap(),
        FlowAction::Redirect { asn: 1, value: 2 },
    );
    assert!(rule(&redirect, "m3").is_err());
    // No mitigations: the table is removed, atomically.
    assert_eq!(
        super::firewall::script(&[]).unwrap(),
        "table inet levee\ndelete table inet levee\n"
    );
}

#[test]
fn the_firewall_level_is_skipped_when_off() {
    let mut c = config();
    c.hostgroups[0].mitigation.ladder = vec![Level::Firewall, Level::Flowspec];
    let mut e = Engine::new(Arc::new(c.clone()));
    let a = e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0),
        0,
    );
    assert!(a.iter().any(|a| matches!(a, Action::Refuse { level: Level::Firewall, why, .. } if why.contains("enabled = false"))));
    assert_eq!(announced(&a)[0].0, Level::Flowspec);
    c.firewall.enabled = true;
    let mut e = Engine::new(Arc::new(c));
    let a = e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0),
        0,
    );
    let got = announced(&a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, Level::Firewall);
    // The same rule may be on both levels: they are different mitigations.
    let a = e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 10 * S),
        10 * S,
    );
    assert_eq!(announced(&a)[0].0, Level::Flowspec);
    assert_eq!(e.active().len(), 2);
}

#[test]
fn a_rule_that_would_drop_legitimate_traffic_is_not_used() {
    use crate::accounting::class;
    let mut c = config();
    c.hostgroups[0].mitigation.max_collateral = 0.3;
    let mut e = Engine::new(Arc::new(c));
    // A game server: most of its legitimate packets are UDP.
    let mut inc = incident("192.0.2.10", Family::UdpFlood, None, 2_000_000_000, 0);
    inc.current.features.protocols = vec![17];
    inc.legit.learnt = true;
    inc.legit.pps[class::ALL] = 1000.0;
    inc.legit.pps[class::UDP] = 900.0;
    inc.legit.pps[class::TCP] = 100.0;
    let a = e.incident(&inc, 0);
    assert!(announced(&a).iter().all(|(l, _)| *l != Level::Flowspec));
    assert!(
        a.iter().any(
            |a| matches!(a, Action::Refuse { level: Level::Flowspec, why, .. }
        if why.contains("up to 90% of the host's legitimate packets"))
        ),
        "{a:?}"
    );
    // The same flood on a web server: FlowSpec, and the estimate is logged.
    let mut inc = incident("192.0.2.11", Family::UdpFlood, None, 2_000_000_000, 0);
    inc.current.features.protocols = vec![17];
    inc.legit.learnt = true;
    inc.legit.pps[class::ALL] = 1000.0;
    inc.legit.pps[class::UDP] = 20.0;
    inc.legit.pps[class::TCP] = 980.0;
    let a = e.incident(&inc, 0);
    let m = a
        .iter()
        .find_map(|a| match a {
            Action::Announce(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(m.level, Level::Flowspec);
    assert!(m.reason.contains("collateral at most 2%"), "{}", m.reason);
}

#[test]
fn a_full_flowspec_budget_aggregates_rules_of_the_same_shape() {
    let mut c = config();
    c.mitigation.max_flowspec = 1;
    let mut e = Engine::new(Arc::new(c));
    let syn = |host: &str, at: u64| incident(host, Family::SynFlood, None, 100_000_000, at);
    assert_eq!(announced(&e.incident(&syn("192.0.2.10", 0), 0)).len(), 1);
    // A second host under the same attack: one rule for both.
    let a = e.incident(&syn("192.0.2.11", 0), 0);
    let got = announced(&a);
    assert_eq!(got.len(), 1, "{a:?}");
    let Route::FlowSpec(r) = &got[0].1 else {
        panic!("{got:?}")
    };
    assert_eq!(r.dst, "192.0.2.10/31".parse().unwrap());
    assert_eq!(
        withdrawn(&a),
        vec![Level::Flowspec],
        "the single rule made way"
    );
    assert_eq!(e.active().len(), 1);
    // A third, further away: the /24 still fits the guards (shortest /24).
    let a = e.incident(&syn("192.0.2.200", 0), 0);
    let Route::FlowSpec(r) = &announced(&a)[0].1 else {
        panic!()
    };
    assert_eq!(r.dst, "192.0.2.0/24".parse().unwrap());
    assert_eq!(e.active().len(), 1);
    assert_eq!(e.active()[0].covers.len(), 2);
    // .200 keeps being attacked; the other two calm down. The aggregate
    // stays for .200 ...
    for t in 1..=40 {
        e.incident(&syn("192.0.2.200", t * S), t * S);
        assert!(withdrawn(&e.tick(t * S)).is_empty(), "at {t} s");
    }
    assert!(e.active()[0].protects("192.0.2.200".parse().unwrap()));
    // ... and goes when .200 is quiet too.
    assert_eq!(withdrawn(&e.tick(70 * S)), vec![Level::Flowspec]);
    assert!(e.active().is_empty());
}

#[test]
fn rules_of_different_shapes_or_too_wide_a_prefix_are_not_aggregated() {
    let mut c = config();
    c.mitigation.max_flowspec = 1;
    let mut e = Engine::new(Arc::new(c.clone()));
    e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0),
        0,
    );
    let a = e.incident(
        &incident("192.0.2.11", Family::IcmpFlood, None, 100_000_000, 0),
        0,
    );
    assert!(announced(&a).is_empty());
    assert!(a.iter().any(
        |a| matches!(a, Action::Refuse { why, .. } if why.contains("no rule of the same shape"))
    ));
    // Across /24s the covering prefix would be shorter than allowed.
    c.hostgroups[0].prefixes = vec!["192.0.0.0/16".parse().unwrap()];
    let mut e = Engine::new(Arc::new(c));
    e.incident(
        &incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0),
        0,
    );
    let a = e.incident(
        &incident("192.0.3.10", Family::SynFlood, None, 100_000_000, 0),
        0,
    );
    assert!(announced(&a).is_empty(), "{a:?}");
}

/// Twenty seconds of `inc` on a host whose established TCP was 190 pps
/// before it (learnt) and is `after_rule` from 2 s on, the rule going out
/// at once: every action the engine took.
fn rolled_out(e: &mut Engine, mut inc: Incident, after_rule: u64) -> Vec<Action> {
    use crate::accounting::class;
    inc.legit.learnt = true;
    inc.legit.pps[class::ALL] = 300.0;
    inc.legit.pps[class::TCP] = 200.0;
    inc.legit.pps[class::TCP_SYN] = 10.0;
    inc.timeline.clear();
    let mut all = Vec::new();
    for t in 0..=20u64 {
        inc.last_over_ms = t * S;
        inc.timeline.push(Point {
            second: t,
            pps: 12_500,
            bps: 100_000_000,
            est_tcp: if t >= 2 { after_rule } else { 190 },
            samples: 0,
        });
        all.extend(e.incident(&inc, t * S));
    }
    all
}

#[test]
fn a_rule_that_starves_established_sessions_is_rolled_back() {
    let run = |after_rule: u64| -> (Vec<Action>, Engine) {
        let mut e = Engine::new(Arc::new(config()));
        let inc = incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0);
        let all = rolled_out(&mut e, inc, after_rule);
        (all, e)
    };
    // The rule goes out at 0 s; established TCP collapses from 190 to 20.
    let (actions, e) = run(20);
    let rolled: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::Withdraw { rollback: true, .. }))
        .collect();
    assert_eq!(rolled.len(), 1, "{actions:?}");
    let Action::Withdraw { m, why, .. } = rolled[0] else {
        unreachable!()
    };
    assert_eq!(m.level, Level::Flowspec);
    assert!(
        why.contains("fell to 20 pps") && why.contains("from 190"),
        "{why}"
    );
    assert!(
        e.active().iter().all(|m| m.level != Level::Flowspec),
        "not announced again"
    );
    // Sessions unharmed: the rule stays.
    let (actions, e) = run(180);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::Withdraw { rollback: true, .. })));
    assert!(e.active().iter().any(|m| m.level == Level::Flowspec));
}

#[test]
fn a_rule_that_matches_no_tcp_is_watched_as_the_policy_says() {
    // A DNS reflection: the rule matches UDP from port 53 only. Established
    // TCP collapses from 190 to 20 pps after it (the host cannot resolve,
    // say), but nothing ties the fall to that rule.
    let run = |withdraw: bool| -> (Vec<Action>, Engine) {
        let mut c = config();
        c.hostgroups[0].mitigation.rollback_unknown_withdraw = withdraw;
        let mut e = Engine::new(Arc::new(c));
        let mut inc = incident(
            "192.0.2.10",
            Family::Amplification,
            Some("dns"),
            100_000_000,
            0,
        );
        inc.current.features.protocols = vec![17];
        inc.current.details = Arc::new(sampled(100, |_| crate::accounting::sketch::Seen {
            length: 1400,
            ..seen(17, 53, 0)
        }));
        let all = rolled_out(&mut e, inc, 20);
        (all, e)
    };
    let rolled = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::Withdraw { rollback: true, .. }))
            .count()
    };
    // "keep" (the default): the rule stays, and says it is not watched.
    let (actions, e) = run(false);
    assert_eq!(rolled(&actions), 0, "{actions:?}");
    let m = e
        .active()
        .iter()
        .find(|m| m.level == Level::Flowspec)
        .expect("the rule stays")
        .clone();
    let Route::FlowSpec(r) = &m.route else {
        unreachable!()
    };
    assert_eq!(r.protocols, vec![17]);
    let watch = m.rollback.as_deref().unwrap_or_default();
    assert!(
        watch.starts_with("unknown: the rule matches no TCP") && watch.contains("\"keep\""),
        "{watch}"
    );
    // "withdraw": the same fall withdraws it, and says on what grounds.
    let (actions, e) = run(true);
    let Some(Action::Withdraw { why, m, .. }) = actions
        .iter()
        .find(|a| matches!(a, Action::Withdraw { rollback: true, .. }))
    else {
        panic!("rolled back: {actions:?}")
    };
    assert!(why.contains("matches no TCP"), "{why}");
    assert!(
        m.rollback
            .as_deref()
            .unwrap_or_default()
            .starts_with("watched indirectly"),
        "{:?}",
        m.rollback
    );
    assert!(e.active().iter().all(|m| m.level != Level::Flowspec));
}

#[test]
fn every_rule_says_how_it_is_watched() {
    use crate::accounting::class;
    let mut e = Engine::new(Arc::new(config()));
    let mut inc = incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0);
    let first = |e: &mut Engine, inc: &Incident| -> String {
        e.incident(inc, 0);
        let m = e
            .active()
            .iter()
            .find(|m| m.level == Level::Flowspec)
            .cloned();
        m.and_then(|m| m.rollback).expect("a FlowSpec rule says")
    };
    // Nothing learnt: unknown, and why.
    assert!(first(&mut e, &inc).starts_with("unknown: the host's normal traffic is not learnt"));
    // Learnt, with established TCP: watched.
    let mut e = Engine::new(Arc::new(config()));
    inc.legit.learnt = true;
    inc.legit.pps[class::ALL] = 300.0;
    inc.legit.pps[class::TCP] = 200.0;
    inc.legit.pps[class::TCP_SYN] = 10.0;
    let w = first(&mut e, &inc);
    assert!(w.starts_with("watched:") && w.contains("190 pps"), "{w}");
    // A host with next to no established TCP: unknown, said.
    let mut e = Engine::new(Arc::new(config()));
    inc.legit.pps[class::TCP] = 14.0;
    let w = first(&mut e, &inc);
    assert!(w.starts_with("unknown: the host had 4 pps"), "{w}");
    // Rollback off: said.
    let mut c = config();
    c.hostgroups[0].mitigation.rollback_drop = None;
    let mut e = Engine::new(Arc::new(c));
    assert!(first(&mut e, &inc).starts_with("none: rollback is off"));
}

#[test]
fn an_attack_from_a_few_sources_gets_a_rule_per_source() {
    let mut inc = incident("192.0.2.10", Family::UdpFlood, None, 1, 0);
    inc.current.features.protocols = vec![17];
    inc.current.verdict.spoofed = false;
    inc.current.verdict.sources_estimate = 2;
    let (a, b) = (Addr::v4([198, 51, 100, 1]), Addr::v4([198, 51, 100, 2]));
    let mut d = Details::default();
    d.top_sources.add(a, 600);
    d.top_sources.add(b, 390);
    d.packets = 1000;
    inc.current.details = Arc::new(d.clone());
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    let src: Vec<_> = r.iter().map(|r| r.src).collect();
    assert_eq!(
        src,
        vec![
            Some("198.51.100.1/32".parse().unwrap()),
            Some("198.51.100.2/32".parse().unwrap())
        ]
    );
    // Many sources, or sources that do not carry the attack: no source.
    inc.current.verdict.sources_estimate = 500;
    assert!(rules::flowspec(&inc, &HostgroupMitigation::default())
        .iter()
        .all(|r| r.src.is_none()));
    inc.current.verdict.sources_estimate = 2;
    d.packets = 5000;
    inc.current.details = Arc::new(d);
    assert!(rules::flowspec(&inc, &HostgroupMitigation::default())
        .iter()
        .all(|r| r.src.is_none()));
}

/// Details whose sample holds `n` records made by `seen`.
fn sampled(n: usize, seen: impl Fn(usize) -> crate::accounting::sketch::Seen) -> Details {
    let mut d = Details::default();
    for i in 0..n {
        d.seen
            .offer(seen(i), (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        d.sampled += 1;
        d.records += 1;
    }
    d
}

fn seen(protocol: u8, src_port: u16, flags: u8) -> crate::accounting::sketch::Seen {
    crate::accounting::sketch::Seen {
        src: Addr::v4([203, 0, 113, 7]),
        dst_low: 0,
        weight: 100,
        src_port,
        dst_port: 443,
        length: 60,
        protocol,
        tcp_flags: flags,
        flags: 0,
        icmp_type: 0,
    }
}

#[test]
fn a_rule_waits_for_evidence_and_never_comes_from_none() {
    let mut e = Engine::new(Arc::new(config()));
    // The incident's first moments: a crossing, nothing sampled yet.
    let mut inc = incident("192.0.2.10", Family::SynFlood, None, 2_000_000_000, 0);
    inc.current.verdict = Verdict::none();
    let a = e.incident(&inc, 0);
    assert!(announced(&a).is_empty(), "no rule from no evidence: {a:?}");
    let waits: Vec<&str> = a
        .iter()
        .filter_map(|x| match x {
            Action::Wait { level, why, .. } if *level == Level::Flowspec => Some(why.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 1, "{a:?}");
    assert!(waits[0].contains("unclassified"), "{}", waits[0]);
    // Said once, not every second.
    let a = e.incident(&inc, S);
    assert!(a.is_empty(), "{a:?}");
    // A classification from too few samples, or not sure enough: still no.
    inc.current.verdict = Verdict {
        samples: 12,
        ..incident("192.0.2.10", Family::SynFlood, None, 1, 0)
            .current
            .verdict
    };
    assert!(announced(&e.incident(&inc, 2 * S)).is_empty());
    inc.current.verdict.samples = 500;
    inc.current.verdict.confidence = 0.5;
    assert!(announced(&e.incident(&inc, 3 * S)).is_empty());
    // The evidence is there: the rule goes at once.
    inc.current.verdict.confidence = 0.93;
    let got = announced(&e.incident(&inc, 4 * S));
    assert_eq!(got.len(), 1);
    let Route::FlowSpec(r) = &got[0].1 else {
        panic!("{got:?}")
    };
    assert_eq!(r.protocols, vec![6]);
}

#[test]
fn without_evidence_in_time_the_policy_decides() {
    // "next_level": FlowSpec refused, RTBH (the attack is big enough).
    let mut c = config();
    c.mitigation.without_evidence = crate::config::WithoutEvidence::NextLevel;
    c.mitigation.evidence_wait = Duration::from_secs(5);
    let mut e = Engine::new(Arc::new(c.clone()));
    let mut inc = incident("192.0.2.10", Family::SynFlood, None, 2_000_000_000, 0);
    inc.current.verdict = Verdict::none();
    assert!(announced(&e.incident(&inc, 0)).is_empty());
    assert!(announced(&e.incident(&inc, 4 * S)).is_empty());
    let a = e.incident(&inc, 5 * S);
    let got = announced(&a);
    assert_eq!(got.len(), 1, "{a:?}");
    assert_eq!(got[0].0, Level::Rtbh);
    assert!(a.iter().any(
        |x| matches!(x, Action::Refuse { level: Level::Flowspec, why, .. }
        if why.contains("evidence_wait") && why.contains("next_level"))
    ));
    // "wait": nothing, however long.
    c.mitigation.without_evidence = crate::config::WithoutEvidence::Wait;
    let mut e = Engine::new(Arc::new(c));
    for t in [0, 5, 60, 600] {
        assert!(announced(&e.incident(&inc, t * S)).is_empty());
    }
}

#[test]
fn a_changed_attack_gets_its_new_rule_before_the_old_one_goes() {
    let mut e = Engine::new(Arc::new(config()));
    let mut inc = incident(
        "192.0.2.10",
        Family::Amplification,
        Some("ntp"),
        100_000_000,
        0,
    );
    inc.current.features.protocols = vec![17];
    inc.current.details = Arc::new(sampled(100, |_| seen(17, 123, 0)));
    let got = announced(&e.incident(&inc, 0));
    assert_eq!(got.len(), 1);
    let Route::FlowSpec(amp) = &got[0].1 else {
        panic!()
    };
    assert_eq!(amp.src_ports, vec![Range::one(123)]);
    // The same attack, renewed: nothing changes.
    assert!(e.incident(&inc, S).is_empty());
    // It turns into a SYN flood: its recent samples are all SYNs now.
    let mut syn = incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 2 * S);
    syn.id = inc.id.clone();
    // To random ports.
    syn.current.details = Arc::new(sampled(100, |i| crate::accounting::sketch::Seen {
        dst_port: 1000 + i as u16,
        ..seen(6, 40_000, 0x02)
    }));
    let a = e.incident(&syn, 2 * S);
    let order: Vec<&str> = a
        .iter()
        .map(|x| match x {
            Action::Announce(_) => "announce",
            Action::Withdraw { .. } => "withdraw",
            _ => "other",
        })
        .collect();
    assert_eq!(order, ["announce", "withdraw"], "make-before-break: {a:?}");
    let Action::Announce(new) = &a[0] else {
        panic!()
    };
    assert!(new.reason.contains("replaces"), "{}", new.reason);
    let Action::Withdraw { m: old, why, .. } = &a[1] else {
        panic!()
    };
    assert_eq!(&old.route, &got[0].1);
    assert!(why.contains("the attack changed"), "{why}");
    assert_eq!(e.active().len(), 1);
    // A narrower set that matches the attack as well (it now goes to one
    // port) replaces the rule once it has stood, not at once.
    let mut narrower = syn.clone();
    narrower.current.details = Arc::new(sampled(100, |_| seen(6, 40_000, 0x02)));
    assert!(e.incident(&narrower, 3 * S).is_empty());
    let later = e.incident(&narrower, 3 * S + super::engine::REFIT_HOLD_MS);
    let new: Vec<&FlowSpecRule> = later
        .iter()
        .filter_map(|x| match x {
            Action::Announce(m) => match &m.route {
                Route::FlowSpec(r) => Some(r),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(new.len(), 1, "{later:?}");
    assert_eq!(new[0].dst_ports, vec![Range::one(443)]);
    // The other way — fewer samples, so no port range — is no reason to
    // widen a rule that matches the attack as well.
    let mut thin = syn.clone();
    thin.current.details = Arc::new(sampled(10, |_| seen(6, 40_000, 0x02)));
    for t in 10..20 {
        let a = e.incident(&thin, t * S);
        assert!(!a.iter().any(|x| matches!(x, Action::Announce(_))), "{a:?}");
    }
}

#[test]
fn a_manual_mitigation_says_what_kind_of_refusal_stops_it() {
    use super::Error;
    let mut c = config();
    c.mitigation.never = vec!["192.0.2.53/32".parse().unwrap()];
    c.mitigation.max_rtbh = 1;
    c.bgp.next_hop6 = None;
    let mut e = Engine::new(Arc::new(c));
    let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    let manual = |e: &mut Engine, host: &str, level, rule| {
        e.manual(ip(host), level, rule, 60 * S, "system:cli", 0)
    };
    assert_eq!(
        manual(&mut e, "198.51.100.1", Level::Rtbh, None),
        Err(Error::NotProtected(ip("198.51.100.1")))
    );
    assert!(matches!(
        manual(&mut e, "192.0.2.10", Level::Firewall, None),
        Err(Error::NotConfigured(w)) if w.contains("firewall level is off")
    ));
    assert!(matches!(
        manual(&mut e, "2001:db8::1", Level::Rtbh, None),
        Err(Error::NotConfigured(w)) if w.contains("next_hop6")
    ));
    let elsewhere =
        levee_bgp::FlowSpecRule::to("192.0.2.99/32".parse().unwrap(), FlowAction::Discard);
    assert!(matches!(
        manual(&mut e, "192.0.2.10", Level::Flowspec, Some(elsewhere)),
        Err(Error::Invalid(w)) if w.contains("does not cover")
    ));
    assert!(matches!(
        manual(&mut e, "192.0.2.53", Level::Rtbh, None),
        Err(Error::Guard(w)) if w.contains("never-mitigate")
    ));
    let made = manual(&mut e, "192.0.2.10", Level::Rtbh, None).unwrap();
    assert!(matches!(
        manual(&mut e, "192.0.2.10", Level::Rtbh, None),
        Err(Error::AlreadyInForce(_))
    ));
    assert!(matches!(
        manual(&mut e, "192.0.2.11", Level::Rtbh, None),
        Err(Error::Guard(w)) if w.contains("budget full")
    ));
    assert_eq!(
        e.withdraw("mit-0-99", "system:cli"),
        Err(Error::NotFound("mit-0-99".into()))
    );
    let [Action::Announce(m)] = &made[..] else {
        panic!("{made:?}")
    };
    assert_eq!(
        withdrawn(&e.withdraw(&m.id, "system:cli").unwrap()),
        vec![Level::Rtbh]
    );
}

#[test]
fn a_rule_is_not_churned_for_a_length_range_the_samples_draw_differently() {
    let mut e = Engine::new(Arc::new(config()));
    let mut inc = incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0);
    assert_eq!(announced(&e.incident(&inc, 0)).len(), 1);
    // The next seconds hold too few one-packet samples for a range: the
    // rule the evidence calls for has no lengths, and matches the attack
    // no better than the one in force.
    inc.current.details = Arc::new(sampled(10, |i| crate::accounting::sketch::Seen {
        length: 40 + (i % 21) as u16,
        ..seen(6, 40_000, 0x02)
    }));
    for t in 1..20 {
        let a = e.incident(&inc, t * S);
        assert!(
            a.iter()
                .all(|x| !matches!(x, Action::Announce(_) | Action::Withdraw { .. })),
            "at {t} s: {a:?}"
        );
    }
}

#[test]
fn no_rule_lists_more_values_than_any_rule_may() {
    use crate::detect::classify::{Service, REFLECTORS};
    // Ten reflected services: the heaviest eight make the rule; the rest
    // are left to the coverage loop.
    let mut inc = incident("192.0.2.10", Family::Amplification, Some("dns"), 1, 0);
    inc.current.features.protocols = vec![17];
    inc.current.verdict.components[0].services = REFLECTORS
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, (port, name))| Service {
            name,
            port: *port,
            share: 0.1 - i as f64 * 0.005,
        })
        .collect();
    inc.current.verdict.parts = inc.current.verdict.components.clone();
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    assert_eq!(r[0].src_ports.len(), rules::MAX_VALUES, "{:?}", r[0]);
    let heaviest: Vec<Range> = {
        let mut v: Vec<Range> = REFLECTORS[..8]
            .iter()
            .map(|(p, _)| Range::one(*p))
            .collect();
        v.sort();
        v
    };
    assert_eq!(r[0].src_ports, heaviest);
}

#[test]
fn amplification_rules_let_the_hosts_own_small_replies_through() {
    // NTP monlist answers of 468 bytes, and the host's own NTP replies of
    // 76 bytes now and then.
    let mut inc = incident("192.0.2.10", Family::Amplification, Some("ntp"), 1, 0);
    inc.current.details = Arc::new(sampled(100, |i| crate::accounting::sketch::Seen {
        length: if i % 25 == 0 { 76 } else { 468 },
        ..seen(17, 123, 0)
    }));
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    // The small replies are a few of the samples: the floor is drawn under
    // the reflected answers, above them.
    assert_eq!(r[0].packet_lengths, vec![Range { lo: 445, hi: 65535 }]);
    // When they are a fifth, no floor is safe.
    inc.current.details = Arc::new(sampled(100, |i| crate::accounting::sketch::Seen {
        length: if i % 5 == 0 { 76 } else { 468 },
        ..seen(17, 123, 0)
    }));
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    assert_eq!(r[0].packet_lengths, vec![]);
    inc.current.details = Arc::new(sampled(100, |_| crate::accounting::sketch::Seen {
        length: 468,
        ..seen(17, 123, 0)
    }));
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    assert_eq!(r[0].packet_lengths, vec![Range { lo: 445, hi: 65535 }]);
    assert_eq!(r[0].src_ports, vec![Range::one(123)]);
}

#[test]
fn an_icmp_rule_never_drops_what_path_mtu_discovery_needs() {
    let mut inc = incident("192.0.2.10", Family::IcmpFlood, None, 1, 0);
    inc.current.features.icmp_types = vec![8, 3];
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    assert_eq!(r[0].protocols, vec![1]);
    assert_eq!(r[0].icmp_types, vec![Range::one(8)]);
    // Only unreachables: no rule at all.
    inc.current.features.icmp_types = vec![3];
    assert!(rules::flowspec(&inc, &HostgroupMitigation::default()).is_empty());
    // IPv6: packet too big (2) is left alone.
    let mut v6 = incident("2001:db8::10", Family::IcmpFlood, None, 1, 0);
    v6.current.features.icmp_types = vec![128, 2];
    let r = rules::flowspec(&v6, &HostgroupMitigation::default());
    assert_eq!(
        (r[0].protocols.clone(), r[0].icmp_types.clone()),
        (vec![58], vec![Range::one(128)])
    );
}

#[test]
fn rules_cover_the_attack_not_only_its_largest_part() {
    // 75 % NTP reflection, 15 % ICMP echo, 10 % SYN: one family is
    // significant, but a rule for it alone lets a quarter through.
    let mut inc = incident("192.0.2.10", Family::Amplification, Some("ntp"), 1, 0);
    inc.current.verdict.components = vec![component(Family::Amplification, Some("ntp"), 0.75)];
    inc.current.verdict.parts = vec![
        component(Family::Amplification, Some("ntp"), 0.75),
        component(Family::IcmpFlood, None, 0.15),
        component(Family::SynFlood, None, 0.10),
    ];
    inc.current.features.icmp_types = vec![8];
    inc.current.details = Arc::new(sampled(200, |i| match i % 20 {
        0..=14 => seen(17, 123, 0),
        15..=17 => crate::accounting::sketch::Seen {
            icmp_type: 8,
            ..seen(1, 0, 0)
        },
        _ => seen(6, 40_000, 0x02),
    }));
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    let protocols: Vec<Vec<u8>> = r.iter().map(|r| r.protocols.clone()).collect();
    assert_eq!(protocols, vec![vec![17], vec![1]], "ntp, then icmp: 90 %");
    let covered = rules::coverage(&r, &inc.current.details).unwrap();
    assert!((covered - 0.9).abs() < 0.01, "{covered}");
}

#[test]
fn what_the_rules_let_through_moves_the_attack_up_at_once() {
    let mut c = config();
    c.hostgroups[0].thresholds.pps = Some(10_000);
    let mut e = Engine::new(Arc::new(c));
    // 2 Gbit/s, 250 kpps; the SYN rule matches half of the samples: what
    // it lets through (125 kpps) is an attack by itself.
    let mut inc = incident("192.0.2.10", Family::SynFlood, None, 2_000_000_000, 0);
    inc.current.details = Arc::new(sampled(100, |i| {
        if i % 2 == 0 {
            seen(6, 40_000, 0x02)
        } else {
            seen(6, 40_000, 0x10)
        }
    }));
    let got = announced(&e.incident(&inc, 0));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, Level::Flowspec);
    let m = &e.active()[0];
    assert_eq!(m.coverage, Some(0.5));
    // Long before a dwell: RTBH now.
    let got = announced(&e.incident(&inc, S));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, Level::Rtbh);
}

/// An incident of the whole 192.0.2.0/24, shaped as `incident` makes it.
fn prefix_incident(family: Family, at: u64) -> Incident {
    let mut inc = incident("192.0.2.0", family, None, 100_000_000, at);
    inc.id = "inc-prefix".into();
    inc.prefix = Some("192.0.2.0/24".parse().unwrap());
    inc.hosts_affected = 200;
    inc
}

fn flowspec_dsts(actions: &[Action]) -> Vec<String> {
    announced(actions)
        .into_iter()
        .filter_map(|(_, r)| match r {
            Route::FlowSpec(f) => Some(f.dst.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_host_whose_prefix_rule_ends_gets_its_own_rule_at_once() {
    let mut e = Engine::new(Arc::new(config()));
    let host = |at| incident("192.0.2.10", Family::SynFlood, None, 100_000_000, at);
    assert_eq!(flowspec_dsts(&e.incident(&host(0), 0)), ["192.0.2.10/32"]);
    // The prefix's rule takes the host's in.
    let out = e.incident(&prefix_incident(Family::SynFlood, 1_000), 1_000);
    assert_eq!(flowspec_dsts(&out), ["192.0.2.0/24"]);
    assert_eq!(withdrawn(&out), [Level::Flowspec]);
    assert_eq!(e.active().len(), 1);
    // The spread ends; the host is still attacked. When the prefix's rule
    // steps down, the host's own comes back in the same step.
    for t in (2_000..=35_000).step_by(1_000) {
        assert!(announced(&e.incident(&host(t), t)).is_empty());
    }
    let out = e.tick(35_000);
    assert_eq!(withdrawn(&out), [Level::Flowspec]);
    assert_eq!(flowspec_dsts(&out), ["192.0.2.10/32"]);
    assert_eq!(e.active().len(), 1);
    assert!(e.active()[0].prefix.is_none());
}

#[test]
fn a_prefix_rule_an_operator_withdraws_is_not_put_back_host_by_host() {
    let mut e = Engine::new(Arc::new(config()));
    let host = |at| incident("192.0.2.10", Family::SynFlood, None, 100_000_000, at);
    e.incident(&host(0), 0);
    e.incident(&prefix_incident(Family::SynFlood, 1_000), 1_000);
    let id = e.active()[0].id.clone();
    e.withdraw(&id, "operator").unwrap();
    assert!(e.active().is_empty());
    for t in (2_000..=5_000).step_by(1_000) {
        assert!(announced(&e.incident(&host(t), t)).is_empty());
        assert!(announced(&e.tick(t)).is_empty());
    }
}

#[test]
fn a_host_rule_inside_its_prefix_rule_joins_it_and_another_groups_does_not() {
    let mut c = config();
    // 192.0.2.128/25 belongs to another customer, carved out.
    let mut other = c.hostgroups[0].clone();
    other.name = "other".into();
    other.within = Some("customers".into());
    other.prefixes = vec!["192.0.2.128/25".parse().unwrap()];
    c.hostgroups.push(other);
    let mut e = Engine::new(Arc::new(c));
    // The prefix's rules for UDP from 53 and from 123; a host's for 53 is
    // inside the first.
    let mut p = prefix_incident(Family::Amplification, 0);
    p.current.details = Arc::new(sampled(200, |i| {
        seen(17, if i % 2 == 0 { 53 } else { 123 }, 0)
    }));
    p.current.features.protocols = vec![17];
    p.current.verdict.vector = Some("dns".into());
    p.current.verdict.components = vec![
        component(Family::Amplification, Some("dns"), 0.5),
        component(Family::Amplification, Some("ntp"), 0.5),
    ];
    p.current.verdict.parts = p.current.verdict.components.clone();
    p.peak_bps = 10_000_000_000;
    let out = e.incident(&p, 0);
    assert_eq!(flowspec_dsts(&out), ["192.0.2.0/24", "192.0.2.0/24"]);
    let mut h = incident(
        "192.0.2.10",
        Family::Amplification,
        Some("dns"),
        1_000_000,
        1_000,
    );
    h.current.details = Arc::new(sampled(200, |_| seen(17, 53, 0)));
    h.current.features.protocols = vec![17];
    let out = e.incident(&h, 1_000);
    assert!(announced(&out).is_empty(), "joined, not a /32: {out:?}");
    // A host of the other hostgroup does not rely on the customer's rule.
    let mut o = incident(
        "192.0.2.200",
        Family::Amplification,
        Some("dns"),
        1_000_000,
        1_000,
    );
    o.hostgroup = "other".into();
    o.group = 1;
    o.current.details = Arc::new(sampled(200, |_| seen(17, 53, 0)));
    o.current.features.protocols = vec![17];
    let out = e.incident(&o, 1_000);
    assert_eq!(flowspec_dsts(&out), ["192.0.2.200/32"]);
}

#[test]
fn a_rule_includes_another_when_it_matches_every_packet_the_other_does() {
    use super::engine::includes;
    let rule = |dst: &str, protocols: Vec<u8>, src: &[u16], lengths: &[(u16, u16)]| FlowSpecRule {
        protocols,
        src_ports: src.iter().map(|&p| Range::one(p)).collect(),
        packet_lengths: lengths.iter().map(|&(lo, hi)| Range { lo, hi }).collect(),
        ..FlowSpecRule::to(dst.parse().unwrap(), FlowAction::Discard)
    };
    let prefix = rule("192.0.2.0/24", vec![17], &[53, 123], &[]);
    // A host's DNS rule, of any lengths: inside.
    assert!(includes(
        &prefix,
        &rule("192.0.2.10/32", vec![17], &[53], &[(90, 1500)])
    ));
    // A port the prefix's rule does not match, another protocol, a host
    // outside, any source port: not inside.
    assert!(!includes(
        &prefix,
        &rule("192.0.2.10/32", vec![17], &[53, 19], &[])
    ));
    assert!(!includes(
        &prefix,
        &rule("192.0.2.10/32", vec![6], &[53], &[])
    ));
    assert!(!includes(
        &prefix,
        &rule("192.0.3.10/32", vec![17], &[53], &[])
    ));
    assert!(!includes(
        &prefix,
        &rule("192.0.2.10/32", vec![17], &[], &[])
    ));
    // Flags: a rule for SYN without ACK takes in SYN without ACK or RST.
    let flags = |set, unset| FlowSpecRule {
        tcp_flags: Some(TcpFlags { set, unset }),
        ..rule("192.0.2.0/24", vec![6], &[], &[])
    };
    assert!(includes(&flags(0x02, 0x10), &flags(0x02, 0x14)));
    assert!(!includes(&flags(0x02, 0x14), &flags(0x02, 0x10)));
}

#[test]
fn an_upstream_without_ipv6_flowspec_sends_ipv6_attacks_to_the_next_level() {
    let mut c = config();
    c.bgp.upstreams.push(crate::config::Upstream {
        name: "transit-a".into(),
        neighbor: "198.51.100.1".parse().unwrap(),
        blackhole_community: None,
        max_flowspec: None,
        flowspec_ipv6: false,
    });
    let mut e = Engine::new(Arc::new(c));
    // IPv6: no FlowSpec rule, refused and said why; RTBH instead.
    let inc = incident("2001:db8::10", Family::SynFlood, None, 2_000_000_000, 0);
    let out = e.incident(&inc, 0);
    let refusal = out
        .iter()
        .find_map(|a| match a {
            Action::Refuse { level, why, .. } if *level == Level::Flowspec => Some(why.clone()),
            _ => None,
        })
        .expect("FlowSpec refused");
    assert!(
        refusal.contains("transit-a takes no IPv6 FlowSpec"),
        "{refusal}"
    );
    assert_eq!(
        announced(&out).iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [Level::Rtbh]
    );
    // IPv4 still gets its rule.
    let inc = incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0);
    let out = e.incident(&inc, 0);
    assert_eq!(
        announced(&out).iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [Level::Flowspec]
    );
}

#[test]
fn a_full_budget_merges_the_port_lists_of_one_attack_on_two_hosts() {
    let mut c = config();
    c.mitigation.max_flowspec = 1;
    let mut e = Engine::new(Arc::new(c));
    let amp = |host: &str, vector: &str, port: u16| {
        let mut i = incident(host, Family::Amplification, Some(vector), 100_000_000, 0);
        i.current.features.protocols = vec![17];
        i.current.details = Arc::new(sampled(200, |_| seen(17, port, 0)));
        i
    };
    assert_eq!(
        announced(&e.incident(&amp("192.0.2.10", "dns", 53), 0)).len(),
        1
    );
    // NTP on the next host: the same signature but for the source port.
    let a = e.incident(&amp("192.0.2.11", "ntp", 123), 0);
    let got = announced(&a);
    assert_eq!(got.len(), 1, "{a:?}");
    let Route::FlowSpec(r) = &got[0].1 else {
        panic!("{got:?}")
    };
    assert_eq!(r.dst, "192.0.2.10/31".parse().unwrap());
    assert_eq!(r.protocols, vec![17]);
    assert_eq!(r.src_ports, vec![Range::one(53), Range::one(123)]);
    assert_eq!(e.active().len(), 1, "within the budget");
    assert!(e.active()[0].protects("192.0.2.10".parse().unwrap()));
    // Another attack's rule (TCP SYN) is not merged into it.
    let a = e.incident(
        &incident("192.0.2.12", Family::SynFlood, None, 100_000_000, 0),
        0,
    );
    assert!(announced(&a).is_empty(), "{a:?}");
    assert_eq!(e.active().len(), 1);
}

#[test]
fn a_list_is_joined_only_with_a_list() {
    use super::engine::merge_rules;
    let rule = |src: &[u16], lengths: &[(u16, u16)]| FlowSpecRule {
        protocols: vec![17],
        src_ports: src.iter().map(|&p| Range::one(p)).collect(),
        packet_lengths: lengths.iter().map(|&(lo, hi)| Range { lo, hi }).collect(),
        ..FlowSpecRule::to("192.0.2.10/32".parse().unwrap(), FlowAction::Discard)
    };
    let m = merge_rules(&rule(&[53], &[(90, 468)]), &rule(&[123, 53], &[(400, 500)])).unwrap();
    assert_eq!(m.src_ports, vec![Range::one(53), Range::one(123)]);
    assert_eq!(m.packet_lengths, vec![Range { lo: 90, hi: 500 }]);
    // Any source port beside one: joining would drop the constraint.
    assert!(merge_rules(&rule(&[53], &[]), &rule(&[], &[])).is_none());
    // Too long a list.
    let many: Vec<u16> = (1..=9).map(|i| i * 100).collect();
    assert!(merge_rules(&rule(&many[..5], &[]), &rule(&many[5..], &[])).is_none());
}

#[test]
fn a_reload_withdraws_what_the_new_configuration_no_longer_allows() {
    let c = config();
    let mut e = Engine::new(Arc::new(c.clone()));
    // An IPv6 and an IPv4 attack, each with its FlowSpec rule in force
    // (under RTBH's minimum rate: FlowSpec is their level).
    let v6 = incident("2001:db8::10", Family::SynFlood, None, 100_000_000, 0);
    let v4 = incident("192.0.2.10", Family::SynFlood, None, 100_000_000, 0);
    e.incident(&v6, 0);
    e.incident(&v4, 0);
    assert_eq!(e.active().len(), 2);
    // Nothing changed that matters: nothing goes.
    assert!(e.reconfigure(Arc::new(c.clone())).is_empty());
    // An upstream that takes no IPv6 FlowSpec, and 192.0.2.10 on the never
    // list: both rules go, saying why.
    let mut next = c.clone();
    next.bgp.upstreams.push(crate::config::Upstream {
        name: "transit-a".into(),
        neighbor: "198.51.100.1".parse().unwrap(),
        blackhole_community: None,
        max_flowspec: None,
        flowspec_ipv6: false,
    });
    next.mitigation.never = vec!["192.0.2.10/32".parse().unwrap()];
    let out = e.reconfigure(Arc::new(next));
    let whys: Vec<String> = out
        .iter()
        .filter_map(|a| match a {
            Action::Withdraw { why, .. } => Some(why.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(whys.len(), 2, "{out:?}");
    assert!(
        whys.iter().any(|w| w.contains("takes no IPv6 FlowSpec")),
        "{whys:?}"
    );
    assert!(
        whys.iter().any(|w| w.contains("never-mitigate")),
        "{whys:?}"
    );
    assert!(e.active().is_empty());
    // The IPv6 attack goes on: FlowSpec is not used again for it.
    let out = e.incident(&v6, 20 * S);
    assert!(
        announced(&out).iter().all(|(l, _)| *l != Level::Flowspec),
        "{out:?}"
    );
}

#[test]
fn an_attack_on_part_of_a_prefix_gets_rules_on_that_part() {
    use crate::accounting::sketch::Seen;
    // DNS answers sampled to the hosts `hosts(i)` of 192.0.2.0/24.
    let spread = |hosts: &dyn Fn(usize) -> u8| {
        let mut inc = prefix_incident(Family::Amplification, 0);
        inc.current.verdict.components[0].vector = Some("dns".into());
        inc.current.features.protocols = vec![17];
        inc.current.details = Arc::new(sampled(200, |i| Seen {
            dst_low: u64::from(u32::from(std::net::Ipv4Addr::new(192, 0, 2, hosts(i))))
                | 0xffff_0000_0000,
            length: 1400,
            ..seen(17, 53, 0)
        }));
        inc.current.verdict.parts = inc.current.verdict.components.clone();
        inc
    };
    let dsts = |inc: &Incident| -> Vec<String> {
        rules::flowspec(inc, &HostgroupMitigation::default())
            .iter()
            .map(|r| r.dst.to_string())
            .collect()
    };
    // All in 192.0.2.64/26: one rule there, not on the /24.
    let part = spread(&|i| 64 + (i % 64) as u8);
    assert_eq!(dsts(&part), ["192.0.2.64/26"]);
    // Two small clusters in two quarters: a rule on each.
    let two = spread(&|i| {
        if i % 2 == 0 {
            8 + (i % 8) as u8
        } else {
            200 + (i % 4) as u8
        }
    });
    assert_eq!(dsts(&two), ["192.0.2.8/29", "192.0.2.200/30"]);
    // Over the whole prefix: the prefix.
    let all = spread(&|i| (i * 7 % 256) as u8);
    assert_eq!(dsts(&all), ["192.0.2.0/24"]);
    // The rules cover what they were drawn from.
    let r = rules::flowspec(&two, &HostgroupMitigation::default());
    assert_eq!(rules::coverage(r.iter(), &two.current.details), Some(1.0));
    // The attack moves to another quarter: the engine's rules follow it,
    // the new one announced before the old one goes.
    let mut e = Engine::new(Arc::new(config()));
    assert_eq!(flowspec_dsts(&e.incident(&part, 0)), ["192.0.2.64/26"]);
    let mut moved = spread(&|i| 128 + (i % 64) as u8);
    moved.last_over_ms = 20 * S;
    let out = e.incident(&moved, 20 * S);
    assert_eq!(flowspec_dsts(&out), ["192.0.2.128/26"], "{out:?}");
    let first_withdrawal = out
        .iter()
        .position(|a| matches!(a, Action::Withdraw { .. }))
        .expect("the old part's rule goes");
    let announcement = out
        .iter()
        .position(|a| matches!(a, Action::Announce(_)))
        .unwrap();
    assert!(
        announcement < first_withdrawal,
        "make before break: {out:?}"
    );
}

#[test]
fn an_attack_on_part_of_an_ipv6_slash_64_gets_rules_on_that_part() {
    use crate::accounting::sketch::Seen;
    let mut inc = incident(
        "2001:db8:0:7::",
        Family::Amplification,
        Some("ntp"),
        100_000_000,
        0,
    );
    inc.id = "inc-prefix6".into();
    inc.prefix = Some("2001:db8:0:7::/64".parse().unwrap());
    inc.current.features.protocols = vec![17];
    // Interface ids 0x1000..0x10ff only.
    inc.current.details = Arc::new(sampled(256, |i| Seen {
        dst_low: 0x1000 + (i % 256) as u64,
        length: 468,
        ..seen(17, 123, 0)
    }));
    inc.current.verdict.parts = inc.current.verdict.components.clone();
    let r = rules::flowspec(&inc, &HostgroupMitigation::default());
    assert_eq!(r[0].dst.to_string(), "2001:db8:0:7::1000/120");
    assert_eq!(rules::coverage(r.iter(), &inc.current.details), Some(1.0));
}

#[test]
fn the_smallest_upstream_budget_is_the_routers_and_merging_says_so() {
    // levee's own budget is roomy; an upstream takes one rule at most.
    let mut c = config();
    c.mitigation.max_flowspec = 100;
    c.bgp.upstreams.push(crate::config::Upstream {
        name: "transit-a".into(),
        neighbor: "198.51.100.1".parse().unwrap(),
        blackhole_community: None,
        max_flowspec: Some(1),
        flowspec_ipv6: true,
    });
    let mut e = Engine::new(Arc::new(c));
    let syn = |host: &str| incident(host, Family::SynFlood, None, 100_000_000, 0);
    e.incident(&syn("192.0.2.10"), 0);
    let out = e.incident(&syn("192.0.2.11"), 0);
    assert_eq!(flowspec_dsts(&out), ["192.0.2.10/31"], "{out:?}");
    assert_eq!(e.active().len(), 1, "never more than the upstream takes");
    let Some(Action::Announce(m)) = out.iter().find(|a| matches!(a, Action::Announce(_))) else {
        unreachable!()
    };
    assert!(
        m.reason.contains("aggregated with")
            && m.reason.contains("to fit the FlowSpec budget of 1 "),
        "{}",
        m.reason
    );
}

#[test]
fn a_prefixs_ladder_keeps_the_guards_and_its_own_policy() {
    use crate::accounting::class;
    let refused = |out: &[Action], level: Level, text: &str| {
        out.iter().any(|a| {
            matches!(a, Action::Refuse { level: l, why, .. } if *l == level && why.contains(text))
        })
    };
    // Its own normal traffic is mostly UDP: a UDP rule on the prefix
    // would drop it, and is refused by the collateral guard.
    let mut c = config();
    c.hostgroups[0].mitigation.max_collateral = 0.3;
    c.hostgroups[0].mitigation.ladder = vec![Level::Flowspec];
    let mut e = Engine::new(Arc::new(c));
    let mut inc = prefix_incident(Family::UdpFlood, 0);
    inc.current.features.protocols = vec![17];
    inc.legit.learnt = true;
    inc.legit.pps[class::ALL] = 1000.0;
    inc.legit.pps[class::UDP] = 900.0;
    let out = e.incident(&inc, 0);
    assert!(announced(&out).is_empty(), "{out:?}");
    assert!(
        refused(&out, Level::Flowspec, "legitimate packets"),
        "{out:?}"
    );
    // A host of the prefix on the never list: nothing on the prefix.
    let mut c = config();
    c.mitigation.never = vec!["192.0.2.5/32".parse().unwrap()];
    let mut e = Engine::new(Arc::new(c));
    let out = e.incident(&prefix_incident(Family::SynFlood, 0), 0);
    assert!(announced(&out).is_empty(), "{out:?}");
    assert!(refused(&out, Level::Flowspec, "never-mitigate"), "{out:?}");
    // RTBH of the whole prefix only when the hostgroup says so.
    let rtbh_only = |prefix_rtbh: bool| {
        let mut c = config();
        c.hostgroups[0].mitigation.ladder = vec![Level::Rtbh];
        c.hostgroups[0].mitigation.rtbh_min_bps = 1;
        c.hostgroups[0].mitigation.prefix_rtbh = prefix_rtbh;
        let mut e = Engine::new(Arc::new(c));
        e.incident(&prefix_incident(Family::SynFlood, 0), 0)
    };
    let out = rtbh_only(false);
    assert!(announced(&out).is_empty(), "{out:?}");
    assert!(refused(&out, Level::Rtbh, "prefix_rtbh"), "{out:?}");
    let out = rtbh_only(true);
    assert_eq!(
        announced(&out),
        [(
            Level::Rtbh,
            Route::Blackhole(levee_bgp::BlackholeRoute {
                prefix: "192.0.2.0/24".parse().unwrap(),
                next_hop: "192.0.2.254".parse().unwrap(),
                communities: vec![
                    levee_bgp::Community::BLACKHOLE,
                    levee_bgp::Community::NO_EXPORT
                ],
            })
        )],
        "{out:?}"
    );
    // Scrubbing diverts the prefix.
    let mut c = config();
    c.hostgroups[0].mitigation.ladder = vec![Level::Scrubbing];
    c.scrubbing.communities = vec![levee_bgp::Community::new(65000, 666)];
    let mut e = Engine::new(Arc::new(c));
    let out = e.incident(&prefix_incident(Family::SynFlood, 0), 0);
    let got = announced(&out);
    assert_eq!(got.len(), 1, "{out:?}");
    let (Level::Scrubbing, Route::Divert(d)) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(d.prefix.to_string(), "192.0.2.0/24");
}
