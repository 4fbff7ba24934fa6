//! The client against real gobgpd: levee's speaker and a second gobgpd
//! playing the border router, peered over BGP on loopback. What counts is
//! what the *router* received.

use std::time::{Duration, Instant};

use levee_bgp::{
    BlackholeRoute, FlowAction, FlowSpecRule, Fragment, Range, Route, Speaker, TcpFlags,
};
use levee_tools::gobgpd::{loopback_pair, Gobgpd};

struct Peers {
    _dir: tempfile::TempDir,
    speaker: Gobgpd,
    router: Gobgpd,
}

fn peers() -> Peers {
    let dir = tempfile::tempdir().unwrap();
    let (s, r) = loopback_pair();
    let router = Gobgpd::router(dir.path(), r, s).unwrap();
    let speaker = Gobgpd::speaker(dir.path(), s, r).unwrap();
    let took = router.wait_established(Duration::from_secs(30)).unwrap();
    eprintln!("BGP session established in {took:?}");
    Peers {
        _dir: dir,
        speaker,
        router,
    }
}

fn syn_flood_rule() -> Route {
    Route::FlowSpec(FlowSpecRule {
        protocols: vec![6],
        dst_ports: vec![Range::one(443), Range { lo: 8000, hi: 8080 }],
        tcp_flags: Some(TcpFlags {
            set: levee_bgp::model::tcp::SYN,
            unset: levee_bgp::model::tcp::ACK,
        }),
        packet_lengths: vec![Range { lo: 40, hi: 60 }],
        ..FlowSpecRule::to("192.0.2.10/32".parse().unwrap(), FlowAction::Discard)
    })
}

fn ntp_rule_v6() -> Route {
    Route::FlowSpec(FlowSpecRule {
        protocols: vec![17],
        src_ports: vec![Range::one(123)],
        ..FlowSpecRule::to(
            "2001:db8::10/128".parse().unwrap(),
            FlowAction::RateLimit {
                bytes_per_second: 1_250_000,
            },
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reach_the_router_and_leave_it() {
    let p = peers();
    let mut s = Speaker::connect(p.speaker.grpc()).await.unwrap();
    let peers = s.peers().await.unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert!(peers[0].established(), "{peers:?}");

    let fragments = Route::FlowSpec(FlowSpecRule {
        fragment: Some(Fragment::IsFragment),
        ..FlowSpecRule::to(
            "192.0.2.11/32".parse().unwrap(),
            FlowAction::Redirect {
                asn: 65001,
                value: 666,
            },
        )
    });
    let routes = vec![
        syn_flood_rule(),
        fragments,
        ntp_rule_v6(),
        Route::Blackhole(BlackholeRoute::rfc7999(
            "192.0.2.12/32".parse().unwrap(),
            "192.0.2.254".parse().unwrap(),
        )),
        Route::Blackhole(BlackholeRoute::rfc7999(
            "2001:db8::12/128".parse().unwrap(),
            "100::1".parse().unwrap(),
        )),
    ];
    for r in &routes {
        let t = Instant::now();
        let sent = s.announce(r).await.unwrap();
        assert_eq!(sent.response.len(), 32, "a uuid: {sent:?}");
        let (family, needle) = router_view(r);
        let took = p
            .router
            .wait_rib(family, Duration::from_secs(10), |rib| {
                squash(rib).contains(needle)
            })
            .unwrap();
        eprintln!(
            "{r}: at the router {:?} after the call",
            t.elapsed().max(took)
        );
    }
    let actions = p.router.rib("ipv4-flowspec").unwrap();
    assert!(
        actions.contains("{Extcomms: [redirect: 65001:666]}"),
        "{actions}"
    );
    let rate = p.router.rib("ipv6-flowspec").unwrap();
    assert!(
        rate.contains("{Extcomms: [rate: 1250000.000000]}"),
        "{rate}"
    );
    for family in ["ipv4", "ipv6"] {
        let rib = p.router.rib(family).unwrap();
        assert!(rib.contains("{Communities: blackhole, no-export}"), "{rib}");
    }

    // What the speaker holds reads back as exactly what was announced.
    let (mut held, foreign) = s.local_routes().await.unwrap();
    assert_eq!(foreign, 0);
    held.sort_by_key(Route::key);
    let mut want = routes.clone();
    want.sort_by_key(Route::key);
    assert_eq!(held, want);

    for r in &routes {
        s.withdraw(r).await.unwrap();
        let (family, needle) = router_view(r);
        p.router
            .wait_rib(family, Duration::from_secs(10), |rib| {
                !squash(rib).contains(needle)
            })
            .unwrap();
    }
    assert_eq!(s.local_routes().await.unwrap().0, vec![]);
}

/// The text with every run of spaces made one.
fn squash(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The family and the text of the router's `gobgp global rib` that shows
/// the route arrived as meant: written out by hand from GoBGP's rendering,
/// so it checks levee's encoding, not levee's idea of it.
fn router_view(r: &Route) -> (&'static str, &'static str) {
    match r.prefix().to_string().as_str() {
        "192.0.2.10/32" => (
            "ipv4-flowspec",
            "[destination: 192.0.2.10/32][protocol: ==tcp][destination-port: ==443 >=8000&<=8080]\
             [tcp-flags: =S&!A][packet-length: >=40&<=60] fictitious 65001 00:00:00 \
             [{Origin: i} {Extcomms: [discard]}]",
        ),
        "192.0.2.11/32" => (
            "ipv4-flowspec",
            "[destination: 192.0.2.11/32][fragment: is-fragment]",
        ),
        "2001:db8::10/128" => (
            "ipv6-flowspec",
            "[destination: 2001:db8::10/128/0][protocol: ==udp][source-port: ==123] fictitious",
        ),
        "192.0.2.12/32" => ("ipv4", "192.0.2.12/32 192.0.2.254 65001"),
        "2001:db8::12/128" => ("ipv6", "2001:db8::12/128 100::1 65001"),
        other => panic!("no expectation for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_speaker_is_a_clear_error() {
    let (addr, _) = loopback_pair();
    let e = Speaker::connect((addr, 50051).into()).await.unwrap_err();
    assert!(e.to_string().contains("unreachable"), "{e}");
}

/// gobgpd forgets routes added over its API when it restarts: levee must
/// notice and announce again. The same client handle works once the daemon
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_speaker_forgets_its_routes_and_the_client_reconnects() {
    let mut p = peers();
    let mut s = Speaker::connect(p.speaker.grpc()).await.unwrap();
    let rtbh = Route::Blackhole(BlackholeRoute::rfc7999(
        "192.0.2.12/32".parse().unwrap(),
        "192.0.2.254".parse().unwrap(),
    ));
    let (family, needle) = router_view(&rtbh);
    s.announce(&rtbh).await.unwrap();
    p.router
        .wait_rib(family, Duration::from_secs(10), |rib| {
            squash(rib).contains(needle)
        })
        .unwrap();

    p.speaker.kill();
    let e = s.local_routes().await.unwrap_err();
    assert!(matches!(e, levee_bgp::Error::Unavailable { .. }), "{e}");
    p.speaker.restart().unwrap();
    assert_eq!(
        s.local_routes().await.unwrap().0,
        vec![],
        "gobgpd forgot it"
    );
    p.router
        .wait_rib(family, Duration::from_secs(20), |rib| {
            !squash(rib).contains(needle)
        })
        .unwrap();

    s.announce(&rtbh).await.unwrap();
    p.router.wait_established(Duration::from_secs(30)).unwrap();
    p.router
        .wait_rib(family, Duration::from_secs(10), |rib| {
            squash(rib).contains(needle)
        })
        .unwrap();
}

/// MIT-12: the blackhole community is rewritten on the way to a given
/// upstream, and only there; applying the policy again is harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blackhole_community_is_translated_for_an_upstream() {
    let p = peers();
    let mut s = Speaker::connect(p.speaker.grpc()).await.unwrap();
    let t = levee_bgp::Translation {
        neighbor: std::net::IpAddr::V4(p.router.addr),
        from: levee_bgp::Community::BLACKHOLE,
        to: vec![
            "65000:666".parse().unwrap(),
            levee_bgp::Community::NO_EXPORT,
        ],
    };
    s.set_translations(std::slice::from_ref(&t)).await.unwrap();
    s.set_translations(std::slice::from_ref(&t)).await.unwrap();
    let rtbh = Route::Blackhole(BlackholeRoute::rfc7999(
        "192.0.2.12/32".parse().unwrap(),
        "192.0.2.254".parse().unwrap(),
    ));
    s.announce(&rtbh).await.unwrap();
    p.router
        .wait_rib("ipv4", Duration::from_secs(10), |rib| {
            squash(rib).contains("192.0.2.12/32 192.0.2.254 65001")
                && rib.contains("{Communities: 65000:666, no-export}")
        })
        .unwrap();
    // The speaker's own RIB still holds what levee announced.
    assert_eq!(s.local_routes().await.unwrap().0, vec![rtbh.clone()]);
    // Removing the translation: the router gets the RFC 7999 community.
    s.set_translations(&[]).await.unwrap();
    s.withdraw(&rtbh).await.unwrap();
    s.announce(&rtbh).await.unwrap();
    p.router
        .wait_rib("ipv4", Duration::from_secs(10), |rib| {
            rib.contains("{Communities: blackhole, no-export}")
        })
        .unwrap();
}
