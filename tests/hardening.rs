//! The box under attack: its own control plane holds (issue 21).
//!
//! - Slow clients: with levee's open-files limit lowered, twice as many
//!   idle, half-sent connections as file handles cannot keep `/healthz`,
//!   the API or the admin socket from answering; heads, bodies and idle
//!   connections time out; the dead-man withdraws nothing while levee is
//!   busy (its socket silent, its heartbeat fresh) and withdraws once it
//!   is killed.
//! - Secrets: a reload that changes a token and a URL's credentials
//!   leaves neither in the audit chain, the logs, the API, the config
//!   view, the CLI or the store.
//! - Scopes: a write key cannot manage keys; refusals are counted and
//!   audited, one entry per source per window.
//! - Files: everything levee creates is its user's alone, whatever the
//!   umask; hostile key names are refused; a state change and its audit
//!   entry are written together or not at all.
//! - `[web]`: loopback unless opted out, `/metrics` on its own address,
//!   Host names checked; manual announcements bounded; the audit chain's
//!   unanchored tail said out loud.
//!
//! All traffic stays on 127.0.0.0/8; every loop is bounded in count and
//! time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use levee_tools::gobgpd::{loopback_pair, Gobgpd};
use serde_json::Value;

/// A config like `test_config`'s, with `extra` before the listeners and
/// `web` inside `[web]`.
fn config_text(data_dir: &Path, extra: &str, web: &str) -> String {
    format!(
        "data_dir = \"{}\"\n{extra}\n\
         [collector.sflow]\nlisten = [\"127.0.0.1:0\"]\n\
         [collector.netflow]\nlisten = [\"127.0.0.1:0\"]\n\
         [web]\nlisten = \"127.0.0.1:0\"\n{web}\n",
        data_dir.display()
    )
}

fn setup(extra: &str, web: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    std::fs::write(&config, config_text(&dir.path().join("data"), extra, web)).unwrap();
    (dir, config)
}

/// The levee binary with its open-files limit (soft and hard) set to
/// `nofile` when given, and its umask set to `umask`.
fn levee_with(nofile: Option<u64>, umask: libc::mode_t) -> Command {
    let mut c = Command::new(levee_bin());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if let Some(n) = nofile {
                let r = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::umask(umask);
            Ok(())
        });
    }
    c
}

/// `levee ARGS…` with umask `umask` (the CLI sets its own).
fn cli_umask(args: &[&str], umask: libc::mode_t) -> std::process::Output {
    let mut c = levee_with(None, umask);
    c.args(args)
        .env_remove("LEVEE_CONFIG")
        .env_remove("LEVEE_LOG")
        .output()
        .unwrap()
}

/// A key of `scope` made with the CLI: (id, token).
fn key(config: &Path, name: &str, scope: &str) -> (String, String) {
    let token = api_key(config, name, scope);
    let id = token.split('_').nth(1).unwrap().to_owned();
    (id, token)
}

/// One sample of `/metrics` read with `token`.
fn metric(levee: &Levee, token: Option<&str>, series: &str) -> Option<String> {
    let r = http(levee.web, "GET", "/metrics", token, None);
    r.body
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l[series.len() + 1..].to_owned())
}

fn counter(levee: &Levee, token: Option<&str>, series: &str) -> u64 {
    metric(levee, token, series)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether levee has closed `s` (EOF or reset), without waiting.
fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let mut reader = s;
    let r = match reader.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    s.set_nonblocking(false).unwrap();
    r
}

/// Half a request head: what a slow client sends, and then nothing.
const HALF: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// A process's output lines, gathered by a thread.
fn gather(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("[deadman] {line}");
            l.lock().unwrap().push(line);
        }
    });
    lines
}

fn said(lines: &Arc<Mutex<Vec<String>>>, what: &str) -> bool {
    lines.lock().unwrap().iter().any(|l| l.contains(what))
}

fn open_files(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn slow_clients_cannot_hold_the_control_plane_and_busy_is_not_dead() {
    const NOFILE: u64 = 256;
    let dir = tempfile::tempdir().unwrap();
    let (me, peer) = loopback_pair();
    let speaker = Gobgpd::speaker(dir.path(), me, peer).unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("levee.toml");
    std::fs::write(
        &config,
        config_text(
            &data,
            &format!(
                "[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\"]\n\
                 [mitigation]\ndead_man = \"2s\"\nreconcile_every = \"1s\"\n\
                 [bgp]\ngobgp_grpc = \"{}\"\nnext_hop = \"192.0.2.254\"\n",
                speaker.grpc()
            ),
            // max_connections stays at its default (256): the open-files
            // limit leaves room for fewer, and levee serves fewer.
            "header_read_timeout = \"3s\"\nrequest_timeout = \"3s\"\nmax_connections_per_client = 8\n",
        ),
    )
    .unwrap();
    let mut levee = Levee::start_command(levee_with(Some(NOFILE), 0o022), &config);
    let pid = levee.pid();
    assert!(
        levee
            .log()
            .iter()
            .any(|l| l.contains("leaves room for fewer HTTP connections")),
        "{:?}",
        levee.log()
    );
    let cap: usize = levee
        .log()
        .iter()
        .find(|l| l.contains("Web server listening"))
        .and_then(|l| l.split("max_connections=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!((8..=64).contains(&cap), "served connections: {cap}");
    let (_, write) = key(&config, "ops", "write");
    let (_, read) = key(&config, "grafana", "read");
    levee.wait_for("gobgpd", |l| {
        l.metric("levee_bgp_up").as_deref() == Some("1")
    });
    let r = http(
        levee.web,
        "POST",
        "/api/v1/mitigations",
        Some(&write),
        Some(r#"{"host": "192.0.2.10", "level": "rtbh", "ttl": "10m"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let held = || speaker.rib("ipv4").unwrap().contains("192.0.2.10/32");
    let t = Instant::now();
    while !held() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the route never reached gobgpd"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut deadman = Command::new(levee_bin())
        .args(["deadman", "--config"])
        .arg(&config)
        .env_remove("LEVEE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watch = gather(deadman.stdout.take().unwrap());

    // One client over its cap: the connections past it are closed at once.
    let greedy = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 200));
    let mine: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = connect_from(greedy, levee.web).unwrap();
            let _ = s.write_all(HALF);
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let shut = mine.iter().filter(|s| closed(s)).count();
    assert_eq!(shut, 8, "max_connections_per_client = 8 of 16");

    // The flood: twice as many half-sent connections as levee has file
    // handles, from 64 addresses (each at its cap).
    let flood_started = Instant::now();
    let mut flood: Vec<TcpStream> = Vec::new();
    for i in 0..(2 * NOFILE as usize) {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / 8) as u8));
        if let Ok(mut s) = connect_from(from, levee.web) {
            let _ = s.write_all(HALF);
            flood.push(s);
        }
    }
    assert!(
        flood.len() >= 2 * NOFILE as usize - 8,
        "{} connected",
        flood.len()
    );
    eprintln!(
        "{} idle connections opened in {:?}",
        flood.len(),
        flood_started.elapsed()
    );

    // /healthz, an API call and the admin socket still answer, at once.
    let t = Instant::now();
    let (status, body) = levee.get("/healthz");
    assert_eq!((status, &body[..3]), (200, "ok\n"));
    let r = http(levee.web, "GET", "/api/v1/mitigations", Some(&read), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let m: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(m["active"].as_array().unwrap().len(), 1);
    let a = admin_get(&data, "/healthz");
    assert_eq!(a.status, 200);
    let out = cli(&["status", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "answers took {:?}",
        t.elapsed()
    );
    assert!(
        open_files(pid) < NOFILE as usize,
        "levee holds {} files",
        open_files(pid)
    );
    assert!(
        counter(
            &levee,
            None,
            "levee_http_connections_total{listener=\"web\",outcome=\"evicted\"}"
        ) >= (2 * NOFILE as usize - cap) as u64 - 16,
        "idle connections made room"
    );
    assert!(
        counter(
            &levee,
            None,
            "levee_http_connections_total{listener=\"web\",outcome=\"refused_per_client\"}"
        ) >= 8
    );

    // A body trickled in is answered 408 within request_timeout.
    let mut slow = TcpStream::connect(levee.web).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        slow,
        "POST /api/v1/mitigations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {write}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"host\""
    )
    .unwrap();
    let t = Instant::now();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());

    // Half-sent heads are cut after header_read_timeout (3 s): every
    // connection of the flood and of the greedy client is closed by now.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(flood_started.elapsed()));
    let open = flood
        .iter()
        .chain(mine.iter())
        .filter(|s| !closed(s))
        .count();
    assert_eq!(open, 0, "connections levee still holds");
    drop(flood);
    drop(mine);
    // A kept-alive connection idles no longer than that either.
    let mut idle = TcpStream::connect(levee.web).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let mut all = Vec::new();
    let _ = idle.read_to_end(&mut all);
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    let idled = t.elapsed();
    assert!(
        idled >= Duration::from_secs(2) && idled < Duration::from_secs(6),
        "{idled:?}"
    );

    // All along the dead-man saw levee answer.
    assert!(!said(&watch, "heartbeat has stopped"), "{:?}", watch);

    // Busy, not dead: the admin socket does not answer (moved away), the
    // heartbeat goes on; for twice dead_man the route stays.
    let sock = data.join("levee.sock");
    let away = data.join("levee.sock.away");
    std::fs::rename(&sock, &away).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(said(&watch, "busy, not dead"), "{:?}", watch);
    assert!(!said(&watch, "heartbeat has stopped"), "{:?}", watch);
    assert!(held(), "the dead-man withdrew a busy levee's route");
    std::fs::rename(&away, &sock).unwrap();

    // Dead: killed, it stops beating; the dead-man withdraws.
    levee.signal(libc::SIGKILL);
    levee.wait();
    let killed = Instant::now();
    while held() {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the dead-man did not withdraw: {:?}",
            watch
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "not before dead_man"
    );
    assert!(said(&watch, "heartbeat has stopped"), "{:?}", watch);
    let _ = deadman.kill();
    let _ = deadman.wait();
}

/// A scrubbing provider on loopback: records each request's head, answers
/// the first with 503 and a body meant to forge log lines, then 200.
fn provider() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().take(64) {
            let Ok(mut c) = conn else { continue };
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf).into_owned();
            let first = s.lock().unwrap().is_empty();
            // The refusal echoes the request line, credentials and all, as
            // providers' error pages do.
            let line = text.lines().next().unwrap_or("").to_owned();
            s.lock().unwrap().push(text);
            let (status, body) = if first {
                (
                    "503 Unavailable",
                    format!(
                        "busy: {line}\n2026-01-01T00:00:00Z  INFO levee: FORGED all routes withdrawn \x1b[31m"
                    ),
                )
            } else {
                ("200 OK", "{}".to_owned())
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

#[test]
fn a_reload_of_secrets_leaves_them_nowhere_to_be_read() {
    let (provider_addr, requests) = provider();
    let closed_grpc = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("levee.toml");
    let write_config = |pass: &str, qkey: &str, token: &str, metrics: &str| {
        std::fs::write(
            &config,
            config_text(
                &data,
                &format!(
                    "[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\"]\n\
                     [hostgroup.mitigation]\nladder = [\"scrubbing\"]\n\
                     [mitigation]\nreconcile_every = \"1s\"\n\
                     [bgp]\ngobgp_grpc = \"{closed_grpc}\"\n\
                     [scrubbing]\nhttp_url = \"http://scrubuser:{pass}@{provider_addr}/divert?api_key={qkey}\"\n\
                     http_token = \"{token}\"\nhttp_timeout = \"2s\"\n"
                ),
                &format!("metrics_token = \"{metrics}\"\n"),
            ),
        )
        .unwrap();
    };
    let secrets = [
        "scrubpass-A1",
        "qkey-A1",
        "tok-AAAA-1111",
        "metrics-token-AAAA-1111",
        "scrubpass-B2",
        "qkey-B2",
        "tok-BBBB-2222",
        "metrics-token-BBBB-2222",
    ];
    write_config(
        "scrubpass-A1",
        "qkey-A1",
        "tok-AAAA-1111",
        "metrics-token-AAAA-1111",
    );
    use sha2::Digest;
    let first_plain = hex::encode(sha2::Sha256::digest(std::fs::read(&config).unwrap()));
    let mut levee = Levee::start(&config);
    let (_, admin) = key(&config, "owner", "admin");
    let (_, write) = key(&config, "ops", "write");
    let (_, read) = key(&config, "grafana", "read");

    // /metrics: its token or a key; nothing else.
    let mtok = "metrics-token-AAAA-1111";
    assert_eq!(http(levee.web, "GET", "/metrics", None, None).status, 401);
    assert_eq!(
        http(
            levee.web,
            "GET",
            "/metrics",
            Some("metrics-token-wrong!"),
            None
        )
        .status,
        401
    );
    assert_eq!(
        http(levee.web, "GET", "/metrics", Some(mtok), None).status,
        200
    );
    assert_eq!(
        http(levee.web, "GET", "/metrics", Some(&read), None).status,
        200
    );
    assert_eq!(
        admin_get(&data, "/metrics").status,
        200,
        "the admin socket needs none"
    );
    assert!(
        counter(
            &levee,
            Some(mtok),
            "levee_auth_failures_total{reason=\"metrics_token\"}"
        ) >= 2
    );

    // A diversion requested from the provider: refused once (with a body
    // meant to forge log lines), retried, made.
    let r = http(
        levee.web,
        "POST",
        "/api/v1/mitigations",
        Some(&write),
        Some(r#"{"host": "192.0.2.10", "level": "scrubbing"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let made: Value = serde_json::from_str(&r.body).unwrap();
    let id = made[0]["id"].as_str().unwrap().to_owned();
    let announced = r.body.clone();
    levee.wait_for("the retried provider call", |_| {
        requests.lock().unwrap().len() >= 2
    });
    {
        let seen = requests.lock().unwrap();
        for head in seen.iter() {
            // The credentials reach the provider (from the config: the
            // intent keeps the URL without them).
            assert!(head.starts_with("POST /divert?api_key=qkey-A1 "), "{head}");
            assert!(head.contains("Bearer tok-AAAA-1111"), "{head}");
        }
    }

    // The reload changes the token, the URL's password and query key, and
    // /metrics' token.
    write_config(
        "scrubpass-B2",
        "qkey-B2",
        "tok-BBBB-2222",
        "metrics-token-BBBB-2222",
    );
    levee.signal(libc::SIGHUP);
    levee.wait_for("the reload", |l| {
        metric(l, Some(mtok), "levee_config_reloads_total{result=\"ok\"}").as_deref() == Some("1")
    });
    // The withdrawal calls the provider with the new credentials (once
    // the mitigation task has taken the new config: its next tick).
    std::thread::sleep(Duration::from_millis(600));
    let r = http(
        levee.web,
        "DELETE",
        &format!("/api/v1/mitigations/{id}"),
        Some(&write),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    levee.wait_for("the undivert call", |_| requests.lock().unwrap().len() >= 3);
    let last = requests.lock().unwrap()[2].clone();
    assert!(last.starts_with("POST /divert?api_key=qkey-B2 "), "{last}");
    assert!(last.contains("Bearer tok-BBBB-2222"), "{last}");

    // What an operator (or an intruder with a key) can read.
    let mut texts: Vec<(String, String)> = Vec::new();
    texts.push(("POST /api/v1/mitigations' answer".into(), announced));
    let api = http(
        levee.web,
        "GET",
        "/api/v1/mitigations?log=100",
        Some(&write),
        None,
    );
    assert_eq!(api.status, 200);
    assert!(
        api.body.contains("REDACTED"),
        "the endpoint is shown without credentials: {}",
        api.body
    );
    texts.push(("GET /api/v1/mitigations".into(), api.body));
    let view = http(levee.web, "GET", "/api/v1/config", Some(&admin), None);
    assert_eq!(view.status, 200, "{}", view.body);
    let v: Value = serde_json::from_str(&view.body).unwrap();
    assert_eq!(v["settings"]["scrubbing.http_token"], "<secret>");
    // A file holding secrets is named by a keyed hash only: a plain one
    // would let a reader test guesses of the token offline.
    assert_eq!(v["sha256"], Value::Null, "{v}");
    assert_eq!(v["hmac_sha256"].as_str().map(str::len), Some(32), "{v}");
    assert_eq!(v["settings"]["web.metrics_token"], "<secret>");
    assert!(v["settings"]["scrubbing.http_url"]
        .as_str()
        .unwrap()
        .contains("<credentials redacted>"));
    texts.push(("GET /api/v1/config".into(), view.body));
    let out = cli(&[
        "mitigation",
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    texts.push((
        "levee mitigation list".into(),
        String::from_utf8_lossy(&out.stdout).into(),
    ));

    levee.signal(libc::SIGTERM);
    assert_eq!(levee.wait().code(), Some(0));
    let log = levee.log();
    texts.push(("levee's log".into(), log.join("\n")));
    let (audit, _) = export(&config, "jsonl");
    texts.push(("the audit export".into(), audit.clone()));
    let out = cli(&[
        "mitigation",
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    texts.push((
        "levee mitigation list (offline)".into(),
        String::from_utf8_lossy(&out.stdout).into(),
    ));
    // And the store's own files: the intent, the mitigation log, the chain.
    for e in walk(&data) {
        if e.is_file() {
            let bytes = std::fs::read(&e).unwrap();
            texts.push((
                e.display().to_string(),
                String::from_utf8_lossy(&bytes).into(),
            ));
        }
    }
    let plain = hex::encode(sha2::Sha256::digest(std::fs::read(&config).unwrap()));
    for (what, text) in &texts {
        for s in secrets
            .iter()
            .copied()
            .chain([plain.as_str(), first_plain.as_str()])
        {
            assert!(!text.contains(s), "{what} holds the secret {s}");
        }
    }

    // The reload is audited: which secrets changed, and a keyed hash.
    let reload: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["action"] == "config.reload")
        .unwrap();
    let changed = &reload["details"]["diff"]["changed"];
    let [old, new] = [0, 1].map(|i| {
        changed["scrubbing.http_token"][i]
            .as_str()
            .unwrap()
            .to_owned()
    });
    assert!(
        old.starts_with("<secret, hmac-sha256 ") && new.starts_with("<secret, hmac-sha256 "),
        "{old} {new}"
    );
    assert_ne!(old, new, "a changed secret shows as changed");
    assert!(changed["scrubbing.http_url"][1]
        .as_str()
        .unwrap()
        .contains("<credentials redacted, hmac-sha256 "));
    let listed = reload["details"]["secrets_changed"].to_string();
    for k in [
        "scrubbing.http_token",
        "scrubbing.http_url",
        "web.metrics_token",
    ] {
        assert!(listed.contains(k), "{listed}");
    }

    // What the provider said is logged escaped: no forged line, no
    // terminal escape.
    assert!(log
        .iter()
        .any(|l| l.contains("Scrubbing provider call failed")));
    assert!(
        !log.iter()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z") || l.contains('\x1b')),
        "{log:?}"
    );
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn a_write_key_is_not_an_owner_and_refusals_are_audited() {
    let (_dir, config) = setup("", "");
    let mut levee = Levee::start(&config);
    let (_, admin) = key(&config, "owner", "admin");
    let (write_id, write) = key(&config, "ops", "write");
    let (read_id, read) = key(&config, "grafana", "read");
    let call = |token: &str, method: &str, path: &str, body: Option<&str>| {
        http(levee.web, method, path, Some(token), body).status
    };
    let new = Some(r#"{"name": "minted", "scope": "admin"}"#);
    for token in [&write, &read] {
        assert_eq!(call(token, "GET", "/api/v1/apikeys", None), 403);
        assert_eq!(call(token, "POST", "/api/v1/apikeys", new), 403);
        assert_eq!(
            call(token, "DELETE", &format!("/api/v1/apikeys/{read_id}"), None),
            403
        );
        assert_eq!(call(token, "GET", "/api/v1/config", None), 403);
    }
    // A write key still does what it is for.
    assert_eq!(call(&write, "GET", "/api/v1/mitigations", None), 200);
    // An admin key manages keys (admin ones too) and reads the config.
    assert_eq!(call(&admin, "GET", "/api/v1/apikeys", None), 200);
    assert_eq!(call(&admin, "POST", "/api/v1/apikeys", new), 201);
    assert_eq!(call(&admin, "GET", "/api/v1/config", None), 200);
    assert_eq!(
        call(
            &admin,
            "DELETE",
            &format!("/api/v1/apikeys/{write_id}"),
            None
        ),
        200
    );

    // Failed authentications, each kind; and a guesser on another address.
    let bad_secret = format!("{}0", &admin[..admin.len() - 1]);
    let bad_secret = if bad_secret == admin {
        format!("{}1", &admin[..admin.len() - 1])
    } else {
        bad_secret
    };
    for (token, reason) in [
        (None, "missing"),
        (Some("nonsense"), "malformed"),
        (Some("lvk_000000000000_00"), "unknown_key"),
        (Some(bad_secret.as_str()), "bad_secret"),
        (Some(write.as_str()), "revoked"),
    ] {
        let r = http(levee.web, "GET", "/api/v1/exporters", token, None);
        assert_eq!(r.status, 401, "{reason}");
        assert!(
            counter(
                &levee,
                None,
                &format!("levee_auth_failures_total{{reason=\"{reason}\"}}")
            ) >= 1,
            "{reason}"
        );
    }
    assert!(
        counter(
            &levee,
            None,
            "levee_auth_failures_total{reason=\"forbidden\"}"
        ) >= 8
    );
    let guesser = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
    for i in 0..200u32 {
        let s = connect_from(guesser, levee.web).unwrap();
        let r = exchange(
            s,
            &format!(
                "GET /api/v1/exporters HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
                 Authorization: Bearer lvk_{:012x}_{i}\r\n\r\n",
                i % 3
            ),
        );
        assert_eq!(r.status, 401);
    }

    // Audited when the window closes (every minute; here at the stop):
    // one entry per source, however many attempts.
    levee.signal(libc::SIGTERM);
    assert_eq!(levee.wait().code(), Some(0));
    let (audit, _) = export(&config, "jsonl");
    let failures: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "auth.failure")
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    let from = |ip: &str| failures.iter().find(|e| e["target"] == ip).unwrap().clone();
    let g = from("127.0.0.9");
    assert_eq!(g["actor"], "system:web");
    assert_eq!(g["details"]["failures"], 200);
    assert_eq!(g["details"]["reasons"]["unknown_key"], 200);
    assert_eq!(
        g["details"]["key_ids"],
        serde_json::json!(["000000000000", "000000000001", "000000000002"])
    );
    let local = from("127.0.0.1");
    for reason in [
        "missing",
        "malformed",
        "unknown_key",
        "bad_secret",
        "revoked",
        "forbidden",
    ] {
        assert!(
            local["details"]["reasons"][reason].as_u64() >= Some(1),
            "{reason}: {local}"
        );
    }
    // The secrets tried are nowhere.
    assert!(!audit.contains(&bad_secret[17..]));
}

#[test]
fn hostile_key_names_are_refused() {
    let (_dir, config) = setup("", "");
    let levee = Levee::start(&config);
    let (_, admin) = key(&config, "owner", "admin");
    for name in [
        "a\u{202e}gpj.exe",
        "zero\u{200b}width",
        "new\nline",
        "tab\tname",
        "esc\u{1b}[31m",
        "café",
        "",
        " leading",
        "trailing ",
        &"x".repeat(65),
    ] {
        let body = serde_json::json!({ "name": name, "scope": "read" }).to_string();
        let r = http(
            levee.web,
            "POST",
            "/api/v1/apikeys",
            Some(&admin),
            Some(&body),
        );
        assert_eq!(r.status, 422, "{name:?}: {}", r.body);
        assert!(r.body.contains("printable ASCII"), "{}", r.body);
    }
    let out = cli(&[
        "apikey",
        "add",
        "--config",
        config.to_str().unwrap(),
        "a\u{202e}b",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("printable ASCII"));
    let body = serde_json::json!({ "name": "CI deploy-bot_2 (read)", "scope": "read" }).to_string();
    assert_eq!(
        http(
            levee.web,
            "POST",
            "/api/v1/apikeys",
            Some(&admin),
            Some(&body)
        )
        .status,
        201
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `data` is 0600 (sockets too), every directory 0700.
fn assert_private(data: &Path) {
    assert_eq!(mode(data), 0o700, "{}", data.display());
    for p in walk(data) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
}

#[test]
fn every_file_levee_creates_is_its_users_alone_whatever_the_umask() {
    let (dir, config) = setup("", "");
    let data = dir.path().join("data");
    // A data dir made loosely, with a file in it, before levee's first run.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notes"), b"x").unwrap();
    std::fs::set_permissions(data.join("notes"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut levee = Levee::start_command(levee_with(None, 0), &config);
    let c = config.to_str().unwrap();
    assert!(cli_umask(&["apikey", "add", "--config", c, "one"], 0)
        .status
        .success());
    levee.signal(libc::SIGHUP);
    levee.wait_for("the reload", |l| l.audit_head().0 >= 4);
    for f in [
        "levee.sock",
        "levee.heartbeat",
        "levee.pid",
        "db/LOCK",
        "db/CURRENT",
    ] {
        assert!(data.join(f).exists(), "{f}");
    }
    assert_private(&data);
    levee.signal(libc::SIGTERM);
    assert_eq!(levee.wait().code(), Some(0));
    // Changes and exports made while levee is down.
    assert!(cli_umask(&["apikey", "add", "--config", c, "two"], 0)
        .status
        .success());
    let export = dir.path().join("audit.jsonl");
    assert!(cli_umask(
        &[
            "audit",
            "export",
            "--config",
            c,
            "--output",
            export.to_str().unwrap()
        ],
        0
    )
    .status
    .success());
    assert_private(&data);
    assert_eq!(mode(&export), 0o600);
}

#[test]
fn a_state_change_is_never_without_its_audit_entry() {
    let (dir, config) = setup("", "");
    let c = config.to_str().unwrap();
    let mut failing = Command::new(levee_bin());
    failing.env("LEVEE_TEST_FAIL_AT", "audit.append:apikey.create");
    let mut levee = Levee::start_command(failing, &config);
    // The first key's audit entry cannot be written: no key either.
    let out = cli(&["apikey", "add", "--config", c, "first"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("500"),
        "{out:?}"
    );
    let out = cli(&["apikey", "list", "--config", c]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "a key without its record"
    );
    let (second, token) = key(&config, "second", "read");
    assert_eq!(
        http(levee.web, "GET", "/api/v1/exporters", Some(&token), None).status,
        200
    );
    levee.signal(libc::SIGTERM);
    assert_eq!(levee.wait().code(), Some(0));

    // The same for a revocation.
    let mut failing = Command::new(levee_bin());
    failing.env("LEVEE_TEST_FAIL_AT", "audit.append:apikey.revoke");
    let levee = Levee::start_command(failing, &config);
    let out = cli(&["apikey", "revoke", "--config", c, &second]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        http(levee.web, "GET", "/api/v1/exporters", Some(&token), None).status,
        200,
        "revoked without a record"
    );
    drop(levee);

    let (audit, head) = export(&config, "jsonl");
    let acts: Vec<String> = audit
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .filter(|a| a.starts_with("apikey."))
        .collect();
    assert_eq!(acts, ["apikey.create"]);
    let file = dir.path().join("a.jsonl");
    std::fs::write(&file, audit).unwrap();
    assert!(
        cli(&["audit", "verify", file.to_str().unwrap(), "--head", &head])
            .status
            .success()
    );
}

#[test]
fn web_binds_loopback_unless_told_and_checks_host_names() {
    // A non-loopback listen is refused without allow_remote …
    let (_d, config) = setup("", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"\n", "listen = \"0.0.0.0:0\"\n");
    std::fs::write(&config, &text).unwrap();
    let out = cli(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allow_remote"),
        "{out:?}"
    );
    // … and served, loudly, with it.
    std::fs::write(
        &config,
        text.replace("[web]\n", "[web]\nallow_remote = true\n"),
    )
    .unwrap();
    let levee = Levee::start(&config);
    let log = levee.log().join("\n");
    assert!(
        log.contains("Serving plain HTTP on a non-loopback address"),
        "{log}"
    );
    assert!(log.contains("set [web] metrics_token"), "{log}");
    let web = SocketAddr::from(([127, 0, 0, 1], levee.web.port()));
    assert_eq!(http_get(web, "/healthz").0, 200);
    drop(levee);

    // /metrics on its own address; Host names checked on both.
    let (_d, config) = setup(
        "",
        "metrics_listen = \"127.0.0.1:0\"\nhost_names = [\"levee.test\"]\n",
    );
    let levee = Levee::start(&config);
    let metrics: SocketAddr = levee
        .log()
        .iter()
        .find(|l| l.contains("Metrics listening"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(http_get(levee.web, "/metrics").0, 404, "moved off listen");
    assert_eq!(http_get(metrics, "/metrics").0, 200);
    assert_eq!(http_get(metrics, "/healthz").0, 200);
    assert_eq!(http_get(metrics, "/api/v1/openapi.json").0, 404);
    let with_host = |addr: SocketAddr, host: &str, path: &str| {
        let s = TcpStream::connect(addr).unwrap();
        exchange(
            s,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .status
    };
    for addr in [levee.web, metrics] {
        assert_eq!(with_host(addr, "attacker.example", "/healthz"), 421);
        assert_eq!(with_host(addr, "attacker.example:80", "/healthz"), 421);
        assert_eq!(with_host(addr, "levee.test:8080", "/healthz"), 200);
        assert_eq!(with_host(addr, "localhost", "/healthz"), 200);
    }
    assert_eq!(
        with_host(levee.web, "rebind.attacker.example", "/api/v1/openapi.json"),
        421
    );
    let r = TcpStream::connect(metrics).unwrap();
    let m = exchange(
        r,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    let refused: u64 = m
        .body
        .lines()
        .find_map(|l| l.strip_prefix("levee_http_host_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(refused, 5);
}

#[test]
fn manual_announcements_are_bounded() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_dir, config) = setup(
        &format!(
            "[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\"]\n\
             [mitigation]\ndry_run = true\nmax_manual_ttl = \"2h\"\n\
             [bgp]\ngobgp_grpc = \"{closed}\"\nnext_hop = \"192.0.2.254\"\n"
        ),
        "",
    );
    let levee = Levee::start(&config);
    let (_, write) = key(&config, "ops", "write");
    let post = |body: &str| {
        let r = http(
            levee.web,
            "POST",
            "/api/v1/mitigations",
            Some(&write),
            Some(body),
        );
        (r.status, r.body)
    };
    for (body, says) in [
        (
            r#"{"host": "192.0.2.10", "level": "rtbh", "ttl": "3h"}"#,
            "max_manual_ttl",
        ),
        (
            r#"{"host": "192.0.2.10", "level": "rtbh", "ttl": "0s"}"#,
            "at least 1s",
        ),
        (
            r#"{"host": "192.0.2.10", "level": "rtbh", "ttl": "584942417355y"}"#,
            "ttl",
        ),
        (
            r#"{"host": "192.0.2.10", "level": "flowspec", "dst_ports": [1, 2, 3, 4, 5, 6, 7, 8, 9]}"#,
            "dst_ports: 9 values",
        ),
        (
            r#"{"host": "192.0.2.10", "level": "flowspec", "src_ports": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}"#,
            "src_ports",
        ),
        (
            r#"{"host": "192.0.2.10", "level": "flowspec", "protocols": [1, 6, 17, 47, 50, 51, 58, 89, 132]}"#,
            "protocols",
        ),
    ] {
        let (status, text) = post(body);
        assert_eq!(status, 422, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    // Within the bounds (repeats folded): made.
    let (status, text) = post(
        r#"{"host": "192.0.2.10", "level": "flowspec", "ttl": "2h", "dst_ports": [53, 53, 123, 443, 80, 80]}"#,
    );
    assert_eq!(status, 201, "{text}");
}

#[test]
fn the_audit_head_is_logged_and_an_unanchored_check_says_what_it_cannot_see() {
    let (dir, config) = setup("", "");
    let mut levee = Levee::start(&config);
    levee.signal(libc::SIGTERM);
    assert_eq!(levee.wait().code(), Some(0));
    let (jsonl, head) = export(&config, "jsonl");
    // The journal holds the head: the last "Audit head" line names it.
    let logged = levee
        .log()
        .iter()
        .rev()
        .find(|l| l.contains("Audit head"))
        .cloned()
        .unwrap();
    assert!(logged.contains(&format!("sha256={head}")), "{logged}");
    assert!(logged.contains(" INFO "), "{logged}");
    let file = dir.path().join("a.jsonl");
    std::fs::write(&file, &jsonl).unwrap();
    let out = cli(&["audit", "verify", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    assert!(text.starts_with("ok 3 entries\n"), "{text}");
    assert!(text.contains("unanchored: without --head"), "{text}");
    let out = cli(&["audit", "verify", file.to_str().unwrap(), "--head", &head]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok 3 entries\n");
    // The tail cut off: verifies alone, fails against the logged head.
    let cut: Vec<&str> = jsonl.lines().take(2).collect();
    std::fs::write(&file, cut.join("\n")).unwrap();
    assert!(cli(&["audit", "verify", file.to_str().unwrap()])
        .status
        .success());
    assert!(
        !cli(&["audit", "verify", file.to_str().unwrap(), "--head", &head])
            .status
            .success()
    );
}

/// A head trickled a byte at a time (slowloris) keeps a read in progress,
/// so only the head's own deadline can end it: `header_read_timeout`
/// closes it while `request_timeout` (far longer) has not run out.
#[test]
fn a_head_trickled_byte_by_byte_is_cut_at_the_header_read_timeout() {
    let (_dir, config) = setup(
        "",
        "header_read_timeout = \"1s\"\nrequest_timeout = \"30s\"\n",
    );
    let levee = Levee::start(&config);
    let mut s = TcpStream::connect(levee.web).unwrap();
    let start = Instant::now();
    let mut cut = None;
    for b in HALF.iter().cycle().take(200) {
        if s.write_all(&[*b]).is_err() || closed(&s) {
            cut = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut = cut.expect("a trickled head is never cut");
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_secs(5),
        "cut after {cut:?}"
    );
    // A whole request right after is still answered.
    assert_eq!(http_get(levee.web, "/healthz").0, 200);
}

/// A soft open-files limit below the hard one (the distribution's 1024
/// under a unit's larger hard limit) is raised at start, and RocksDB keeps
/// its tables to a quarter of it (at most 512). The store's lock holder is
/// known without `/proc`.
#[test]
fn the_open_files_limit_is_raised_and_rocksdb_kept_within_it() {
    let (dir, config) = setup("", "");
    let mut c = Command::new(levee_bin());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 1600,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let levee = Levee::start_command(c, &config);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", levee.pid())).unwrap();
    let open = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(&open[3..5], ["1600", "1600"], "{limits}");
    let log = levee.log().join("\n");
    assert!(
        log.contains("open_files=1600") && log.contains("rocksdb_max_open_files=400"),
        "{log}"
    );
    // The store was opened so: RocksDB's own record of its options.
    let options: String = walk(&dir.path().join("data"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("OPTIONS-"))
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(options.contains("max_open_files=400"), "{options}");
    // Who holds the store, asked of the kernel (what the dead-man checks
    // a heartbeat's writer by, with no need of /proc).
    let data = dir.path().join("data");
    assert_eq!(
        levee::store::lock_owner_pid(&data),
        Some(levee.pid() as u32)
    );
    drop(levee);
    assert_eq!(levee::store::lock_owner_pid(&data), None);
}
