//! Traffic an attacker shapes, end to end through `levee run` with a
//! gobgpd router peer: whatever the shape, the routes the router receives
//! must still fit the attack — or there must be none.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::bgp::*;
use common::*;
use levee_tools::attacks::{self, Attack, Family, Sources};
use levee_tools::export;

/// levee with a 5,000 pps limit and FlowSpec then RTBH (from 1 Mbit/s:
/// a blackhole would show at once), its collector sockets and `extra`
/// config.
fn start_levee(bed: &Bed, extra: &str) -> Levee {
    let config = bed.dir.path().join("levee.toml");
    let text = format!(
        "{extra}\n[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n\
         [hostgroup.thresholds]\npps = 5000\n\
         [hostgroup.mitigation]\nladder = [\"flowspec\", \"rtbh\"]\nrtbh_min_bps = 1000000\n\
         [detection]\nhold_down = \"2s\"\n\
         [bgp]\ngobgp_grpc = \"{}\"\nnext_hop = \"192.0.2.254\"\nnext_hop6 = \"100::1\"\n",
        bed.speaker.grpc()
    );
    std::fs::write(&config, test_config(&bed.dir.path().join("data"), &text)).unwrap();
    let levee = Levee::start(&config);
    levee.wait_for("levee to reach gobgpd", |l| {
        l.metric("levee_bgp_up").as_deref() == Some("1")
    });
    levee
}

fn send_from(from: &str, to: SocketAddr, datagrams: &[Vec<u8>], gap: Duration) {
    let tx = UdpSocket::bind(from).unwrap();
    for d in datagrams {
        tx.send_to(d, to).unwrap();
        std::thread::sleep(gap);
    }
}

/// Forged sFlow — from an address nobody listed, or claiming a sampling
/// rate no router uses — moves no route; the same attack from the trusted
/// exporter does.
#[test]
fn a_forged_exporter_moves_no_route() {
    let bed = bed();
    let watch = bed
        .router
        .watch(&["ipv4-flowspec", "ipv4", "ipv6-flowspec", "ipv6"])
        .unwrap();
    let victim: IpAddr = "192.0.2.66".parse().unwrap();

    // No allow-list: everyone's export is detected and alerted on, none of
    // it moves routes.
    let levee = start_levee(&bed, "");
    let (_, health) = levee.get("/healthz");
    assert!(health.contains("not trusted to move routes"), "{health}");
    let sflow = levee.collector("sflow");
    // 20 datagrams of one sample each at 1:100000: dropped, counted.
    let forged = export::forged_sflow(victim, "198.51.100.9".parse().unwrap(), 20, 100_000);
    send_from("127.0.0.9:0", sflow, &forged, Duration::from_millis(50));
    levee.wait_for("the implausible samples to be counted", |l| {
        l.metric("levee_records_refused_total{reason=\"sampling\"}")
            .as_deref()
            == Some("20")
    });
    // A plausible rate (1:4096): 20 samples a second are 80 kpps: an
    // incident, alerted — and no route.
    let forged = export::forged_sflow(victim, "198.51.100.9".parse().unwrap(), 60, 4096);
    send_from("127.0.0.9:0", sflow, &forged, Duration::from_millis(50));
    levee.wait_for("the forged flood to be detected", |l| {
        l.metric("levee_incidents_total").as_deref() == Some("1")
    });
    std::thread::sleep(Duration::from_secs(2));
    let token = api_key(&levee.config, "ops", "read");
    let body = http(
        levee.web,
        "GET",
        "/api/v1/mitigations?log=100",
        Some(&token),
        None,
    )
    .body;
    assert!(
        body.contains("not trusted to move routes"),
        "the refusal says why: {body}"
    );
    drop(levee);
    assert!(
        watch.changes().is_empty(),
        "a route reached the router: {:?}",
        watch.changes()
    );

    // An allow-list: datagrams from elsewhere are refused; the listed
    // exporter's attack is mitigated.
    let levee = start_levee(
        &bed,
        "[collector]\nallowed_exporters = [\"127.0.0.7/32\"]\n",
    );
    let sflow = levee.collector("sflow");
    let forged = export::forged_sflow(victim, "198.51.100.9".parse().unwrap(), 40, 4096);
    send_from("127.0.0.9:0", sflow, &forged, Duration::from_millis(25));
    levee.wait_for("the unlisted source to be refused", |l| {
        l.metric("levee_exporter_refused_total{reason=\"not_allowed\"}")
            .as_deref()
            == Some("40")
    });
    let attack = attacks::attack(
        &Attack {
            family: Family::Amplification(123),
            target: victim,
            pps: 20_000,
            start_us: 0,
            duration_s: 4,
            sources: Sources::Hosts(100),
        },
        5,
    );
    let exports = export::sflow(&attack, IpAddr::V4(Ipv4Addr::LOCALHOST), 100, 3, 1_000_000);
    let t = Instant::now();
    let payloads: Vec<Vec<u8>> = exports.into_iter().map(|e| e.payload).collect();
    send_from("127.0.0.7:0", sflow, &payloads, Duration::from_millis(4));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !watch
        .changes()
        .iter()
        .any(|c| c.is_flowspec() && !c.withdrawal)
    {
        assert!(
            Instant::now() < deadline,
            "the trusted exporter's attack was not mitigated"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "trusted exporter: a rule at the router {:?} after the attack began",
        t.elapsed()
    );
    let rules: Vec<_> = watch
        .changes()
        .into_iter()
        .filter(|c| !c.withdrawal)
        .collect();
    assert!(
        rules.iter().all(|c| c.is_flowspec()),
        "no blackhole: {rules:?}"
    );
    drop(levee);
}
