//! Per-host and per-hostgroup accounting inside `levee run` (ACC-1):
//! unsampled NetFlow v5 with known counts, sent to the collector, comes back
//! exactly from the per-second series of `/api/v1/hosts/{addr}` and
//! `/api/v1/hostgroups/{name}`, and the hostgroup gauges appear on /metrics.

mod common;

use std::net::{Ipv4Addr, UdpSocket};

use common::*;
use levee_collectors::encode::netflow::{self as nf, V5Header, V5Record};
use serde_json::Value;

fn record(src: [u8; 4], dst: [u8; 4], protocol: u8, packets: u32) -> V5Record {
    V5Record {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        next_hop: Ipv4Addr::UNSPECIFIED,
        input: 1,
        output: 2,
        packets,
        octets: packets * 100,
        first: 5_000,
        last: 5_000,
        src_port: 40_000,
        dst_port: 443,
        tcp_flags: 0x18,
        protocol,
        tos: 0,
    }
}

/// Sums a field over a history's seconds.
fn sum(history: &Value, field: &str) -> u64 {
    history["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn hosts_and_hostgroups_are_counted_exactly_each_second() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    let extra = "[[hostgroup]]\nname = \"web\"\nprefixes = [\"192.0.2.0/24\"]\n\
                 [[hostgroup]]\nname = \"mail\"\nprefixes = [\"198.51.100.0/24\"]\n";
    std::fs::write(&config, test_config(&dir.path().join("data"), extra)).unwrap();
    let levee = Levee::start(&config);
    let token = api_key(&config, "test", "read");

    // 20 datagrams of 30 records: web hosts .1–.5 get TCP and UDP, mail
    // host .7 gets TCP and sends some back out; one record is for nobody.
    let mut records = Vec::new();
    for i in 0..600u32 {
        let r = match i % 6 {
            0..=2 => record([203, 0, 113, 9], [192, 0, 2, 1 + (i % 5) as u8], 6, 3),
            3 => record([203, 0, 113, 9], [192, 0, 2, 1], 17, 5),
            4 => record([203, 0, 113, 9], [198, 51, 100, 7], 6, 2),
            _ if i == 5 => record([203, 0, 113, 9], [10, 0, 0, 1], 6, 1000),
            _ => record([198, 51, 100, 7], [203, 0, 113, 9], 6, 4),
        };
        records.push(r);
    }
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (seq, chunk) in records.chunks(30).enumerate() {
        let mut d = Vec::new();
        let h = V5Header {
            uptime_ms: 5_000,
            unix_secs: 1_700_000_000,
            seq: seq as u32 * 30,
            ..V5Header::default()
        };
        nf::v5(&h, chunk, &mut d);
        tx.send_to(&d, levee.collector("netflow")).unwrap();
    }
    let web_pps: u64 = records
        .iter()
        .filter(|r| r.dst.octets()[..3] == [192, 0, 2])
        .map(|r| u64::from(r.packets))
        .sum();
    let host1_pps: u64 = records
        .iter()
        .filter(|r| r.dst == Ipv4Addr::new(192, 0, 2, 1))
        .map(|r| u64::from(r.packets))
        .sum();
    let mail_in: u64 = 100 * 2;
    let mail_out: u64 = 99 * 4;

    let get = |path: &str| -> Value {
        let r = http(levee.web, "GET", path, Some(&token), None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    levee.wait_for("the web hostgroup's seconds", |_| {
        sum(&get("/api/v1/hostgroups/web"), "pps") == web_pps
    });
    levee.wait_for("the mail hostgroup's seconds", |_| {
        let h = get("/api/v1/hostgroups/mail");
        sum(&h, "pps") == mail_in && sum(&h, "out_pps") == mail_out
    });
    let web = get("/api/v1/hostgroups/web");
    assert_eq!(sum(&web, "bps"), web_pps * 100 * 8);
    let udp: u64 = web["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["by_class"]["udp"].as_u64().unwrap())
        .sum();
    assert_eq!(udp, 100 * 5);
    let max_hosts = web["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hosts"].as_u64().unwrap())
        .max();
    assert!(max_hosts.is_some_and(|n| (1..=5).contains(&n)), "{web}");

    let host = get("/api/v1/hosts/192.0.2.1");
    assert_eq!(host["hostgroup"], "web");
    assert_eq!(sum(&host, "pps"), host1_pps);
    let outside = get("/api/v1/hosts/10.0.0.1");
    assert_eq!(outside["hostgroup"], Value::Null);
    assert!(outside["seconds"].as_array().unwrap().is_empty());

    // The live view of the last second, and its gauges.
    let groups = get("/api/v1/hostgroups");
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "mail"]);
    assert!(levee
        .metric("levee_hostgroup_bits_per_second{hostgroup=\"web\",direction=\"in\"}")
        .is_some());
    assert!(levee
        .metric("levee_hostgroup_hosts_active{hostgroup=\"mail\"}")
        .is_some());

    for (path, status) in [
        ("/api/v1/hosts/not-an-address", 400),
        ("/api/v1/hostgroups/nobody", 404),
    ] {
        assert_eq!(
            http(levee.web, "GET", path, Some(&token), None).status,
            status,
            "{path}"
        );
    }
}
