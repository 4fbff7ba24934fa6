//! The local firewall level for real: levee runs inside a network namespace
//! the test makes, installs its nftables table there, and packets to the
//! protected host are dropped — only those the rule matches — until the
//! mitigation is withdrawn. A table removed by hand while levee was killed
//! is written again when levee comes back.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The namespace levee protects here: the protected addresses on its
/// loopback.
fn namespace() -> Netns {
    let ns = Netns::new("levee-fw");
    ns.ip(&["addr", "add", "192.0.2.10/32", "dev", "lo"]);
    ns.ip(&["addr", "add", "2001:db8::10/128", "dev", "lo", "nodad"]);
    ns
}

trait FirewallNetns {
    fn nft(&self, args: &[&str]) -> (bool, String);
    fn delivers(&self, to: SocketAddr) -> bool;
}

impl FirewallNetns for Netns {
    fn nft(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Whether a UDP datagram to `to` arrives, sent and received inside the
    /// namespace (a thread that joins it).
    fn delivers(&self, to: SocketAddr) -> bool {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) moves only this thread into the namespace the
            // open file names; the thread ends with this closure.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let rx = UdpSocket::bind(to).unwrap();
            rx.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let any: SocketAddr = if to.is_ipv6() {
                "[::]:0".parse().unwrap()
            } else {
                "0.0.0.0:0".parse().unwrap()
            };
            let tx = UdpSocket::bind(any).unwrap();
            tx.send_to(b"probe", to).unwrap();
            let mut buf = [0u8; 16];
            rx.recv_from(&mut buf).is_ok()
        })
        .join()
        .unwrap()
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn firewall_rules_drop_exactly_the_attack_inside_a_namespace() {
    let ns = namespace();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    let extra =
        "[[hostgroup]]\nname = \"self\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n\
                 [hostgroup.mitigation]\nladder = [\"firewall\"]\n\
                 [firewall]\nenabled = true\n[mitigation]\nreconcile_every = \"1s\"\n";
    std::fs::write(&config, test_config(&dir.path().join("data"), extra)).unwrap();
    let mut levee = Levee::start_in_netns(&ns.0, &config);
    let c = config.to_str().unwrap();

    let v4: SocketAddr = "192.0.2.10:9999".parse().unwrap();
    let v4_other: SocketAddr = "192.0.2.10:9998".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::10]:9999".parse().unwrap();
    assert!(ns.delivers(v4) && ns.delivers(v6), "traffic flows before");

    let mut ids = Vec::new();
    for host in ["192.0.2.10", "2001:db8::10"] {
        let out = cli(&[
            "mitigation",
            "announce",
            "--config",
            c,
            host,
            "--level",
            "firewall",
            "--protocol",
            "17",
            "--dst-port",
            "9999",
        ]);
        assert!(out.status.success(), "{out:?}");
        ids.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    }
    let (ok, table) = ns.nft(&["list", "table", "inet", "levee"]);
    assert!(ok, "{table}");
    eprintln!("{table}");
    // (nft shows `meta l4proto 17 th dport` as what it means.)
    assert!(
        table.contains("ip daddr 192.0.2.10 udp dport 9999 counter packets 0 bytes 0 drop"),
        "{table}"
    );
    assert!(
        table.contains("ip6 daddr 2001:db8::10 udp dport 9999 counter packets 0 bytes 0 drop"),
        "{table}"
    );
    assert!(
        table.contains(&format!("comment \"levee:{}\"", ids[0])),
        "{table}"
    );
    assert!(!ns.delivers(v4), "the attack's packets are dropped (IPv4)");
    assert!(!ns.delivers(v6), "the attack's packets are dropped (IPv6)");
    assert!(
        ns.delivers(v4_other),
        "other traffic to the host still flows"
    );

    // kill -9, the table removed by hand: levee writes it again.
    levee.signal(libc::SIGKILL);
    levee.wait();
    let (ok, out) = ns.nft(&["delete", "table", "inet", "levee"]);
    assert!(ok, "{out}");
    assert!(ns.delivers(v4));
    let _levee = Levee::start_in_netns(&ns.0, &config);
    wait_until("the table to be restored", || !ns.delivers(v4));
    assert!(!ns.delivers(v6));

    // Withdrawn: traffic flows again, and the table is gone.
    for id in &ids {
        let out = cli(&["mitigation", "withdraw", "--config", c, id]);
        assert!(out.status.success(), "{out:?}");
    }
    assert!(ns.delivers(v4) && ns.delivers(v6));
    let (ok, _) = ns.nft(&["list", "table", "inet", "levee"]);
    assert!(!ok, "no table left behind");
    let out = cli(&["mitigation", "list", "--config", c, "--log", "50"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("reconcile_firewall"), "{log}");
}
