//! The JSON API and its keys, through a running levee: requests without a
//! valid key are refused, read keys read, admin keys manage keys (write
//! keys may not), revoked keys stop working; `levee apikey` works through the admin socket while
//! levee runs and on the store while it does not; every key change is
//! audited; the OpenAPI description lists exactly the API's paths.

mod common;

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::Value;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    std::fs::write(&config, test_config(&dir.path().join("data"), "")).unwrap();
    (dir, config)
}

/// `levee apikey add NAME --scope SCOPE`: the token, and the key id from stderr.
fn add_key(config: &std::path::Path, name: &str, scope: &str) -> (String, String) {
    let out = cli(&[
        "apikey",
        "add",
        "--config",
        config.to_str().unwrap(),
        name,
        "--scope",
        scope,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let id = stderr
        .split("made API key ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    assert!(token.starts_with(&format!("lvk_{id}_")), "{token}");
    (id, token)
}

#[test]
fn api_keys_guard_the_api_and_their_changes_are_audited() {
    let (dir, config) = setup();
    let levee = Levee::start(&config);

    // The admin socket is levee's user's alone.
    let sock = dir.path().join("data/levee.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // No key, a bad key: 401 with a JSON error and a challenge.
    let r = http(levee.web, "GET", "/api/v1/exporters", None, None);
    assert_eq!(r.status, 401);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{}",
        r.head
    );
    assert!(serde_json::from_str::<Value>(&r.body).unwrap()["error"].is_string());
    assert_eq!(
        http(
            levee.web,
            "GET",
            "/api/v1/exporters",
            Some("lvk_000000000000_00"),
            None
        )
        .status,
        401
    );

    // Keys made through the running levee (the store is locked by it).
    let (read_id, read) = add_key(&config, "grafana", "read");
    let (_, write) = add_key(&config, "automation", "write");
    let (_, admin) = add_key(&config, "owner", "admin");

    // A read key reads: the exporters levee heard, with their counters.
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut dgram = Vec::new();
    levee_collectors::encode::netflow::v5(&Default::default(), &[], &mut dgram);
    tx.send_to(&dgram, levee.collector("netflow")).unwrap();
    levee.wait_for("the exporter", |l| {
        let r = http(l.web, "GET", "/api/v1/exporters", Some(&read), None);
        r.status == 200 && r.body.contains("\"address\":\"127.0.0.1\"")
    });
    let r = http(levee.web, "GET", "/api/v1/exporters", Some(&read), None);
    let list: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(list[0]["datagrams"]["netflow5"], 1);

    // … but changes nothing, and cannot manage keys.
    assert_eq!(
        http(
            levee.web,
            "POST",
            "/api/v1/apikeys",
            Some(&read),
            Some(r#"{"name":"x","scope":"write"}"#)
        )
        .status,
        403
    );
    assert_eq!(
        http(levee.web, "GET", "/api/v1/apikeys", Some(&read), None).status,
        403
    );

    // Nor can a write key: managing keys needs an admin key.
    for (method, path) in [("GET", "/api/v1/apikeys"), ("POST", "/api/v1/apikeys")] {
        let r = http(
            levee.web,
            method,
            path,
            Some(&write),
            Some(r#"{"name":"x","scope":"admin"}"#),
        );
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }

    // An admin key manages keys over HTTP.
    let r = http(
        levee.web,
        "POST",
        "/api/v1/apikeys",
        Some(&admin),
        Some(r#"{"name":"ci","scope":"read"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let made: Value = serde_json::from_str(&r.body).unwrap();
    assert!(made["token"].as_str().unwrap().starts_with("lvk_"));
    assert_eq!(
        http(
            levee.web,
            "POST",
            "/api/v1/apikeys",
            Some(&admin),
            Some("{oops")
        )
        .status,
        400
    );

    // Revoked through the CLI: the key stops working at once.
    let out = cli(&[
        "apikey",
        "revoke",
        "--config",
        config.to_str().unwrap(),
        &read_id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        http(levee.web, "GET", "/api/v1/exporters", Some(&read), None).status,
        401
    );
    let out = cli(&["apikey", "list", "--config", config.to_str().unwrap()]);
    let listing = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listing.lines().count(), 4);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&read_id) && l.contains("revoked")),
        "{listing}"
    );
    assert!(!listing.contains(&read[20..]), "tokens are never listed");

    // Every key change is in the audit chain, by who made it.
    let (jsonl, _) = export(&config, "jsonl");
    let entries: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let acts: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("apikey."))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(acts.len(), 5);
    assert!(acts[..3]
        .iter()
        .all(|(a, who)| a == "apikey.create" && who == "system:cli"));
    assert!(
        acts[3].1.starts_with("apikey:"),
        "made over HTTP by the admin key: {acts:?}"
    );
    assert_eq!(
        acts[4],
        ("apikey.revoke".to_owned(), "system:cli".to_owned())
    );
}

#[test]
fn keys_can_be_managed_while_levee_is_stopped() {
    let (_dir, config) = setup();
    let (_, token) = add_key(&config, "made offline", "read");
    let levee = Levee::start(&config);
    assert_eq!(
        http(levee.web, "GET", "/api/v1/exporters", Some(&token), None).status,
        200
    );
}

#[test]
fn the_openapi_description_lists_exactly_the_api() {
    let (_dir, config) = setup();
    let levee = Levee::start(&config);
    let (_, write) = add_key(&config, "probe", "admin");
    let r = http(levee.web, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(r.status, 200, "the description needs no key");
    let doc: Value = serde_json::from_str(&r.body).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    // Each documented operation is routed (a route that does not exist
    // answers "no such API path").
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "000000000000")
                .replace("{addr}", "192.0.2.1")
                .replace("{name}", "x");
            let r = http(
                levee.web,
                &method.to_uppercase(),
                &format!("/api/v1{concrete}"),
                Some(&write),
                Some("{}"),
            );
            assert!(
                !r.body.contains("no such API path"),
                "{method} {path} is documented but not routed"
            );
        }
    }
    // And an undocumented path is not routed.
    let r = http(levee.web, "GET", "/api/v1/nothing", Some(&write), None);
    assert_eq!(r.status, 404);
    let mut documented: Vec<&String> = paths.keys().collect();
    documented.sort();
    assert_eq!(
        documented,
        [
            "/apikeys",
            "/apikeys/{id}",
            "/audit",
            "/config",
            "/exporters",
            "/hostgroups",
            "/hostgroups/{name}",
            "/hosts/top",
            "/hosts/{addr}",
            "/incidents",
            "/incidents/{id}",
            "/mitigations",
            "/mitigations/{id}",
            "/openapi.json"
        ]
    );
}

/// A POST whose body the server may refuse before reading it: the body is
/// written as far as the server takes it, and the answer read anyway.
fn post_raw(addr: std::net::SocketAddr, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

#[test]
fn bodies_are_refused_by_what_is_wrong_with_them() {
    let (_dir, config) = setup();
    let levee = Levee::start(&config);
    let (_, write) = add_key(&config, "automation", "admin");
    let error = |body: &str| -> String {
        serde_json::from_str::<Value>(body).unwrap()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no JSON error in {body:?}"))
            .to_owned()
    };
    // Too large: 413, whatever it holds.
    let big = format!(
        "{{\"name\": \"{}\", \"scope\": \"read\"}}",
        "x".repeat(100 * 1024)
    );
    for path in ["/api/v1/apikeys", "/api/v1/mitigations"] {
        let (status, body) = post_raw(levee.web, path, &write, big.as_bytes());
        assert_eq!(status, 413, "{path}: {body}");
        assert!(error(&body).contains("over 65536 bytes"), "{body}");
    }
    // Not JSON: 400. JSON, but not the request: 422. A bad value: 422.
    let post = |path: &str, body: &str| http(levee.web, "POST", path, Some(&write), Some(body));
    let r = post("/api/v1/apikeys", "{oops");
    assert_eq!(r.status, 400, "{}", r.body);
    error(&r.body);
    let r = post("/api/v1/apikeys", r#"{"name": "ci"}"#);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(error(&r.body).contains("scope"), "{}", r.body);
    let r = post("/api/v1/apikeys", r#"{"name": "", "scope": "read"}"#);
    assert_eq!(r.status, 422, "{}", r.body);
    // Still fine just under the limit's order of size.
    let r = post(
        "/api/v1/apikeys",
        &format!("{{\"name\": \"{}\", \"scope\": \"read\"}}", "x".repeat(64)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn the_audit_chain_is_read_through_the_api() {
    let (dir, config) = setup();
    let levee = Levee::start(&config);
    let (read_id, read) = add_key(&config, "grafana", "read");
    let (write_id, _) = add_key(&config, "automation", "write");
    let get = |query: &str| -> Value {
        let r = http(
            levee.web,
            "GET",
            &format!("/api/v1/audit{query}"),
            Some(&read),
            None,
        );
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    let seqs = |v: &Value| -> Vec<u64> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };

    // A key is needed; a read key will do.
    let r = http(levee.web, "GET", "/api/v1/audit", None, None);
    assert_eq!(r.status, 401);

    // Newest first, anchored at the head the export reports too.
    let all = get("");
    let (_, export_head) = export(&config, "jsonl");
    let head = all["head"]["seq"].as_u64().unwrap();
    assert_eq!(all["head"]["hash"], export_head.as_str());
    assert_eq!(all["order"], "newest");
    assert_eq!(all["next"], Value::Null, "everything fits one page");
    let listed = seqs(&all);
    assert_eq!(listed, (1..=head).rev().collect::<Vec<_>>());
    let newest = &all["entries"][0];
    assert_eq!(newest["hash"], all["head"]["hash"]);
    assert_eq!(newest["action"], "apikey.create");
    assert_eq!(newest["target"], write_id.as_str());
    for field in ["time", "actor", "details", "prev_hash", "actor_name"] {
        assert!(newest.get(field).is_some(), "{field} in {newest}");
    }
    assert_eq!(
        all["entries"][1]["hash"], newest["prev_hash"],
        "the chain links"
    );

    // Filters: action prefix, actor, target.
    let keys = get("?action=apikey.&actor=system:cli");
    assert_eq!(seqs(&keys).len(), 2, "{keys}");
    let one = get(&format!("?target={read_id}"));
    assert_eq!(one["entries"][0]["details"]["name"], "grafana");
    assert_eq!(seqs(&one).len(), 1);
    assert!(seqs(&get("?action=nothing.")).is_empty());

    // Oldest first, in pages, by seq.
    let first = get("?order=oldest&limit=2");
    assert_eq!(seqs(&first), [1, 2]);
    assert_eq!(first["entries"][0]["prev_hash"], "0".repeat(64));
    assert_eq!(first["next"]["after_seq"], 2);
    assert_eq!(seqs(&get("?order=oldest&after_seq=2&limit=1")), [3]);
    let older = get("?before_seq=3");
    assert_eq!(seqs(&older), [2, 1]);

    // By time: since inclusive, until exclusive.
    let at = all["entries"][1]["time"].as_str().unwrap().to_owned();
    let since = get(&format!("?since={at}"));
    assert_eq!(seqs(&since), listed[..2]);
    let until = get(&format!("?until={at}"));
    assert_eq!(seqs(&until), listed[2..]);

    // The limit has a default and a ceiling.
    assert_eq!(get("")["limit"], 100);
    assert_eq!(get("?limit=5000")["limit"], 1000);
    assert_eq!(seqs(&get("?limit=0")).len(), 1);

    // Bad queries say what is wrong.
    for q in ["?since=yesterday", "?order=sideways", "?limit=many"] {
        let r = http(
            levee.web,
            "GET",
            &format!("/api/v1/audit{q}"),
            Some(&read),
            None,
        );
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(serde_json::from_str::<Value>(&r.body).unwrap()["error"].is_string());
    }

    // The admin socket needs no key.
    use std::io::{Read, Write};
    let mut s =
        std::os::unix::net::UnixStream::connect(dir.path().join("data/levee.sock")).unwrap();
    write!(
        s,
        "GET /api/v1/audit?limit=1 HTTP/1.1\r\nHost: levee\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("\"entries\""), "{raw}");
}

/// A config whose gobgpd is at `grpc` and whose `extra` adds to
/// `[mitigation]`.
fn mitigation_setup(
    grpc: std::net::SocketAddr,
    extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    let text = format!(
        "[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\"]\n\
         [hostgroup.thresholds]\npps = 2000\n\
         [mitigation]\nnever = [\"192.0.2.53\"]\n{extra}\n\
         [bgp]\ngobgp_grpc = \"{grpc}\"\nnext_hop = \"192.0.2.254\"\n"
    );
    std::fs::write(&config, test_config(&dir.path().join("data"), &text)).unwrap();
    (dir, config)
}

/// A loopback port nothing listens on.
fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn a_manual_mitigation_is_refused_with_the_status_of_its_reason() {
    let (_dir, config) = mitigation_setup(closed_port(), "");
    let levee = Levee::start(&config);
    let (_, write) = add_key(&config, "ops", "write");
    let post = |body: &str| {
        let r = http(
            levee.web,
            "POST",
            "/api/v1/mitigations",
            Some(&write),
            Some(body),
        );
        let error = serde_json::from_str::<Value>(&r.body).unwrap()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (r.status, error)
    };

    // gobgpd is unreachable: a route that must go through it is refused
    // at once, and nothing is stored to be sent later.
    let (status, error) = post(r#"{"host": "192.0.2.10", "level": "rtbh"}"#);
    assert_eq!(status, 503, "{error}");
    assert!(error.contains("not connected to gobgpd"), "{error}");
    let r = http(levee.web, "GET", "/api/v1/mitigations", Some(&write), None);
    let m: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(m["bgp_up"], false);
    assert_eq!(m["active"], serde_json::json!([]), "{m}");
    assert_eq!(m["log"], serde_json::json!([]), "{m}");

    // The request's own faults come first, gobgpd or not.
    let cases = [
        // A guard: 409.
        (
            r#"{"host": "192.0.2.53", "level": "rtbh"}"#,
            409,
            "never-mitigate",
        ),
        // Nothing levee protects, a level that is off, a narrowing RTBH
        // cannot carry, a bad TTL, a missing or unknown field: 422.
        (
            r#"{"host": "198.51.100.1", "level": "rtbh"}"#,
            422,
            "in no hostgroup",
        ),
        (
            r#"{"host": "192.0.2.10", "level": "firewall"}"#,
            422,
            "firewall level is off",
        ),
        (
            r#"{"host": "192.0.2.10", "level": "rtbh", "dst_ports": [53]}"#,
            422,
            "narrow FlowSpec",
        ),
        (
            r#"{"host": "192.0.2.10", "level": "rtbh", "ttl": "soon"}"#,
            422,
            "ttl",
        ),
        (r#"{"host": "192.0.2.10"}"#, 422, "level"),
        (
            r#"{"host": "192.0.2.10", "level": "rtbh", "colour": "red"}"#,
            422,
            "colour",
        ),
        // Not JSON: 400.
        (r#"{"host": "#, 400, ""),
    ];
    for (body, want, says) in cases {
        let (status, error) = post(body);
        assert_eq!(status, want, "{body}: {error}");
        assert!(error.contains(says), "{body}: {error}");
    }

    // Withdrawing what is not in force: 404.
    let r = http(
        levee.web,
        "DELETE",
        "/api/v1/mitigations/mit-0-1",
        Some(&write),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("no mitigation mit-0-1"), "{}", r.body);

    // The CLI prints the reason and fails.
    let c = config.to_str().unwrap();
    let out = cli(&[
        "mitigation",
        "announce",
        "--config",
        c,
        "192.0.2.10",
        "--level",
        "rtbh",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not connected to gobgpd") && stderr.contains("503"),
        "{stderr}"
    );
    let out = cli(&["mitigation", "withdraw", "--config", c, "mit-0-1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no mitigation mit-0-1") && stderr.contains("404"),
        "{stderr}"
    );
}

#[test]
fn a_dry_run_announces_by_hand_without_gobgpd() {
    let (_dir, config) = mitigation_setup(closed_port(), "dry_run = true");
    let levee = Levee::start(&config);
    let (_, write) = add_key(&config, "ops", "write");
    let r = http(
        levee.web,
        "POST",
        "/api/v1/mitigations",
        Some(&write),
        Some(r#"{"host": "192.0.2.10", "level": "rtbh"}"#),
    );
    assert_eq!(
        r.status, 201,
        "nothing is sent, so gobgpd is not needed: {}",
        r.body
    );
    let made: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(made[0]["shadow"], true, "{made}");
}
