//! The JSON API and its keys, through a running levee: requests without a
//! valid key are refused, read keys read, write keys manage keys, revoked
//! keys stop working; `levee apikey` works through the admin socket while
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

    // A write key manages keys over HTTP.
    let r = http(
        levee.web,
        "POST",
        "/api/v1/apikeys",
        Some(&write),
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
            Some(&write),
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
    assert_eq!(listing.lines().count(), 3);
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
    assert_eq!(acts.len(), 4);
    assert!(acts[..2]
        .iter()
        .all(|(a, who)| a == "apikey.create" && who == "system:cli"));
    assert!(
        acts[2].1.starts_with("apikey:"),
        "made over HTTP by the write key: {acts:?}"
    );
    assert_eq!(
        acts[3],
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
    let (_, write) = add_key(&config, "probe", "write");
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
