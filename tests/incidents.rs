//! Detection inside `levee run`: sampled sFlow of a SYN flood sent to the
//! collector becomes an incident — served on /api/v1/incidents with its
//! timeline, counted on /metrics, audited when it starts and ends.

mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

use common::*;
use levee_tools::attacks::{self, Attack, Family, Sources};
use levee_tools::export;
use serde_json::Value;

#[test]
fn an_attack_becomes_an_incident_that_is_served_counted_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    let extra = "[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\"]\n\
                 [hostgroup.thresholds]\npps = 2000\n[detection]\nhold_down = \"2s\"\n";
    std::fs::write(&config, test_config(&dir.path().join("data"), extra)).unwrap();
    let levee = Levee::start(&config);
    let token = api_key(&config, "test", "read");

    // One second of a 10 kpps SYN flood, sampled 1 in 10, sent at once.
    let target: IpAddr = "192.0.2.10".parse().unwrap();
    let s = attacks::attack(
        &Attack {
            family: Family::SynFlood,
            target,
            pps: 10_000,
            start_us: 0,
            duration_s: 1,
            sources: Sources::Spoofed,
        },
        1,
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for e in export::sflow(&s, IpAddr::V4(Ipv4Addr::LOCALHOST), 10, 1, 100_000) {
        tx.send_to(&e.payload, levee.collector("sflow")).unwrap();
    }

    let get = |path: &str| -> Value {
        let r = http(levee.web, "GET", path, Some(&token), None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    // It starts at once and ends after the 2 s hold-down.
    levee.wait_for("the incident to end", |_| {
        get("/api/v1/incidents")
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["ongoing"] == false)
    });
    let list = get("/api/v1/incidents");
    let i = &list[0];
    assert_eq!(i["host"], "192.0.2.10");
    assert_eq!(i["family"], "syn_flood");
    assert_eq!(i["spoofed"], true);
    assert!(i["confidence"].as_f64().unwrap() >= 0.8, "{i}");
    assert!(i.get("timeline").is_none(), "lists leave timelines out");
    let one = get(&format!("/api/v1/incidents/{}", i["id"].as_str().unwrap()));
    assert!(!one["timeline"].as_array().unwrap().is_empty());
    assert_eq!(
        http(
            levee.web,
            "GET",
            "/api/v1/incidents/0000000000000000",
            Some(&token),
            None
        )
        .status,
        404
    );

    assert_eq!(levee.metric("levee_incidents_total").as_deref(), Some("1"));
    assert_eq!(levee.metric("levee_incidents_active").as_deref(), Some("0"));
    assert_eq!(
        levee
            .metric("levee_detection_delay_seconds_count")
            .as_deref(),
        Some("1")
    );
    assert_eq!(levee.metric("levee_ring_drops_total").as_deref(), Some("0"));

    let (jsonl, _) = export(&config, "jsonl");
    let actions: Vec<String> = jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["actor"] == "system:detector")
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["details"]["family"].as_str().unwrap_or("")
            )
        })
        .collect();
    // Started at the crossing (named only if the evidence was already
    // there), classified once the samples name the family — audited —,
    // ended as what it was.
    assert!(actions.len() <= 3, "{actions:?}");
    assert!(actions[0].starts_with("incident.start"));
    if actions.len() == 3 {
        assert_eq!(actions[0], "incident.start unclassified", "{actions:?}");
        assert_eq!(actions[1], "incident.classify syn_flood", "{actions:?}");
    } else {
        assert_eq!(actions[0], "incident.start syn_flood", "{actions:?}");
    }
    assert_eq!(actions.last().unwrap(), "incident.end syn_flood");
}
