//! Flow export into a running `levee run`: datagrams sent to its collector
//! sockets are decoded and counted per exporter on /metrics; garbage is a
//! counted error; sources outside the allow-list are refused and counted.

mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

use common::*;
use levee_collectors::encode::{netflow as nf, packet as pkt, sflow as sf};

fn sflow_datagram(seq: u32, samples: usize) -> Vec<u8> {
    let samples = (0..samples)
        .map(|i| {
            let p = pkt::PacketSpec::udp(
                "198.51.100.1".parse().unwrap(),
                "192.0.2.10".parse().unwrap(),
                123,
                40_000 + i as u16,
                468,
            );
            let mut header = Vec::new();
            pkt::ethernet(&p, 128, &mut header);
            sf::Sample::Flow {
                expanded: false,
                seq: i as u32,
                source_index: 1,
                rate: 1000,
                pool: 1000,
                drops: 0,
                input: 1,
                output: 2,
                frame_len: 486,
                header,
            }
        })
        .collect();
    let mut out = Vec::new();
    sf::encode(
        &sf::Datagram {
            agent: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sub_agent: 0,
            seq,
            uptime_ms: 1000,
            samples,
        },
        &mut out,
    );
    out
}

fn netflow5_datagram(seq: u32) -> Vec<u8> {
    let rec = nf::V5Record {
        src: Ipv4Addr::new(198, 51, 100, 1),
        dst: Ipv4Addr::new(192, 0, 2, 10),
        next_hop: Ipv4Addr::UNSPECIFIED,
        input: 1,
        output: 2,
        packets: 10,
        octets: 4000,
        first: 0,
        last: 10,
        src_port: 53,
        dst_port: 33000,
        tcp_flags: 0,
        protocol: 17,
        tos: 0,
    };
    let mut out = Vec::new();
    nf::v5(
        &nf::V5Header {
            seq,
            ..Default::default()
        },
        &[rec; 30],
        &mut out,
    );
    out
}

#[test]
fn datagrams_are_decoded_and_counted_per_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    std::fs::write(&config, test_config(&dir.path().join("data"), "")).unwrap();
    let levee = Levee::start(&config);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 1..=5 {
        tx.send_to(&sflow_datagram(seq, 8), levee.collector("sflow"))
            .unwrap();
        tx.send_to(&netflow5_datagram(seq * 30), levee.collector("netflow"))
            .unwrap();
    }
    // Not flow export, and a truncated sFlow datagram.
    tx.send_to(b"hello", levee.collector("netflow")).unwrap();
    tx.send_to(&sflow_datagram(6, 2)[..60], levee.collector("sflow"))
        .unwrap();

    levee.wait_for("the counters", |l| {
        l.metric("levee_records_total{protocol=\"netflow5\",exporter=\"127.0.0.1\"}")
            .as_deref()
            == Some("150")
            && l.metric("levee_datagrams_total{protocol=\"sflow\",exporter=\"127.0.0.1\"}")
                .as_deref()
                == Some("6")
    });
    assert_eq!(
        levee
            .metric("levee_records_total{protocol=\"sflow\",exporter=\"127.0.0.1\"}")
            .as_deref(),
        Some("40")
    );
    assert_eq!(
        levee
            .metric("levee_decode_errors_total{protocol=\"netflow5\",kind=\"bad_version\"}")
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        levee
            .metric("levee_decode_errors_total{protocol=\"sflow\",kind=\"bad_length\"}")
            .as_deref(),
        Some("1")
    );
    let sflow = levee.collector("sflow").to_string();
    assert_eq!(
        levee
            .metric(&format!(
                "levee_socket_drops_total{{listener=\"sflow/{sflow}\"}}"
            ))
            .as_deref(),
        Some("0")
    );
}

#[test]
fn sources_outside_the_allow_list_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    let text = test_config(&dir.path().join("data"), "").replace(
        "[collector.sflow]",
        "[collector]\nallowed_exporters = [\"127.0.0.2/32\"]\n[collector.sflow]",
    );
    std::fs::write(&config, text).unwrap();
    let levee = Levee::start(&config);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(&sflow_datagram(1, 1), levee.collector("sflow"))
        .unwrap();
    let allowed = UdpSocket::bind("127.0.0.2:0").unwrap();
    allowed
        .send_to(&sflow_datagram(1, 1), levee.collector("sflow"))
        .unwrap();
    levee.wait_for("the refusal", |l| {
        l.metric("levee_exporter_refused_total{reason=\"not_allowed\"}")
            .as_deref()
            == Some("1")
            && l.metric("levee_datagrams_total{protocol=\"sflow\",exporter=\"127.0.0.2\"}")
                .as_deref()
                == Some("1")
    });
    assert!(!levee.get("/metrics").1.contains("exporter=\"127.0.0.1\""));
}

#[test]
fn packets_captured_on_an_interface_are_counted() {
    // A live capture on loopback, filtered to one address nothing else uses.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    let text = test_config(&dir.path().join("data"), "").replace(
        "[collector.sflow]",
        "[collector.pcap]\ninterfaces = [\"lo\"]\nfilter = \"udp and dst host 127.0.0.77 and dst port 9\"\n[collector.sflow]",
    );
    std::fs::write(&config, text).unwrap();
    let levee = Levee::start(&config);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..50 {
        tx.send_to(&[0u8; 100], "127.0.0.77:9").unwrap();
    }
    levee.wait_for("the captured packets", |l| {
        l.metric("levee_records_total{protocol=\"pcap\",exporter=\"lo\"}")
            .as_deref()
            == Some("50")
    });
    assert_eq!(
        levee
            .metric("levee_socket_drops_total{listener=\"pcap/lo\"}")
            .as_deref(),
        Some("0")
    );
}
