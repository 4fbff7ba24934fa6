//! `levee run` as a process: it serves /healthz and /metrics, reloads on
//! SIGHUP, stops cleanly on SIGTERM/SIGINT, refuses a second instance on the
//! same store, and keeps every acknowledged audit entry across a clean stop
//! and across `kill -9`.

mod common;

use common::*;

fn setup(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    std::fs::write(&config, test_config(&dir.path().join("data"), extra)).unwrap();
    (dir, config)
}

#[test]
fn serves_health_and_metrics_and_exits_0_on_sigterm() {
    let (_dir, config) = setup("");
    let mut levee = Levee::start(&config);
    let (status, body) = levee.get("/healthz");
    assert_eq!(status, 200);
    assert!(body.starts_with("ok\n"), "{body}");
    // No allow-list, no trust_any_exporter: a detect-only box says so.
    assert!(body.contains("not trusted to move routes"), "{body}");
    let (status, metrics) = levee.get("/metrics");
    assert_eq!(status, 200);
    for series in [
        "levee_build_info{version=\"",
        "levee_uptime_seconds ",
        "levee_store_size_bytes ",
        "levee_audit_head_seq 2",
        "levee_config_reloads_total{result=\"ok\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    let size: u64 = levee
        .metric("levee_store_size_bytes")
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 0);
    assert_eq!(levee.get("/nope").0, 404);

    levee.signal(libc::SIGTERM);
    let status = levee.wait();
    assert_eq!(status.code(), Some(0), "{:?}", levee.log());

    // The stop is the last audited action, and the chain holds.
    let (jsonl, head) = export(&config, "jsonl");
    let actions: Vec<String> = jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(actions, ["config.load", "service.start", "service.stop"]);
    let file = config.with_file_name("audit.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    let out = cli(&["audit", "verify", file.to_str().unwrap(), "--head", &head]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok 3 entries\n");
}

#[test]
fn sigint_stops_cleanly_too() {
    let (_dir, config) = setup("");
    let mut levee = Levee::start(&config);
    levee.signal(libc::SIGINT);
    assert_eq!(levee.wait().code(), Some(0));
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_running_one_on_errors() {
    let (dir, config) = setup("");
    let levee = Levee::start(&config);
    let data = dir.path().join("data");

    std::fs::write(
        &config,
        test_config(
            &data,
            "[[hostgroup]]\nname = \"c\"\nprefixes = [\"192.0.2.0/24\"]\n[hostgroup.thresholds]\npps = 1000\n",
        ),
    )
    .unwrap();
    levee.signal(libc::SIGHUP);
    levee.wait_for("the reload", |l| {
        l.metric("levee_config_reloads_total{result=\"ok\"}")
            .as_deref()
            == Some("1")
    });

    // A broken file: rejected, logged with its position, audited; levee lives on.
    std::fs::write(
        &config,
        test_config(&data, "[mitigation]\nhold_dwn = \"5m\"\n"),
    )
    .unwrap();
    levee.signal(libc::SIGHUP);
    levee.wait_for("the rejection", |l| {
        l.metric("levee_config_reloads_total{result=\"rejected\"}")
            .as_deref()
            == Some("1")
    });
    assert_eq!(levee.get("/healthz").0, 200);
    let cfg = config.display().to_string();
    assert!(
        levee
            .log()
            .iter()
            .any(|l| l.contains("Config reload rejected")
                && l.contains(&format!(
                    "{cfg}:3:1: unknown key `hold_dwn` in [mitigation]; did you mean `hold_down`?"
                ))),
        "{:?}",
        levee.log()
    );

    std::fs::write(&config, test_config(&data, "")).unwrap();
    let (jsonl, _) = export(&config, "jsonl");
    let entries: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reload = entries
        .iter()
        .find(|e| e["action"] == "config.reload")
        .expect("reload audited");
    assert_eq!(
        reload["details"]["diff"]["added"]["hostgroup[0].name"],
        "\"c\""
    );
    assert_eq!(
        reload["details"]["diff"]["added"]["hostgroup[0].thresholds.pps"],
        "1000"
    );
    let rejected = entries
        .iter()
        .find(|e| e["action"] == "config.reload_rejected")
        .expect("rejection audited");
    assert!(rejected["details"]["errors"][0]
        .as_str()
        .unwrap()
        .contains(":3:1: unknown key `hold_dwn`"));
}

#[test]
fn a_second_levee_on_the_same_store_is_refused_clearly() {
    let (dir, config) = setup("");
    let first = Levee::start(&config);
    let second = dir.path().join("second.toml");
    std::fs::write(&second, test_config(&dir.path().join("data"), "")).unwrap();
    let out = cli(&["run", "--config", second.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("is in use by another levee (pid {})", first.pid())),
        "{stderr}"
    );
    assert_eq!(first.get("/healthz").0, 200);
}

#[test]
fn an_invalid_config_refuses_to_start_with_the_check_config_messages() {
    let (dir, config) = setup("[bgp]\ngobgp_grpc = \"127.0.0.1:70000\"\n");
    let _ = dir;
    let out = cli(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let run_err = String::from_utf8_lossy(&out.stderr).into_owned();
    let check = cli(&["check-config", "--config", config.to_str().unwrap()]);
    let check_err = String::from_utf8_lossy(&check.stderr).into_owned();
    assert!(
        check_err.contains("port 70000 is out of range"),
        "{check_err}"
    );
    assert!(
        run_err.starts_with(&check_err),
        "run: {run_err}\ncheck: {check_err}"
    );
}

#[test]
fn acknowledged_audit_entries_survive_a_clean_restart() {
    let (_dir, config) = setup("");
    let mut levee = Levee::start(&config);
    levee.signal(libc::SIGHUP);
    levee.wait_for("the reload", |l| l.audit_head().0 == 3);
    levee.signal(libc::SIGTERM);
    assert_eq!(levee.wait().code(), Some(0));

    let levee = Levee::start(&config);
    // config.load, service.start, config.reload, service.stop, then the new start's two.
    assert_eq!(levee.audit_head().0, 6);
    let (jsonl, head) = export(&config, "jsonl");
    assert_eq!(jsonl.lines().count(), 6);
    let file = config.with_file_name("a.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    assert!(
        cli(&["audit", "verify", file.to_str().unwrap(), "--head", &head])
            .status
            .success()
    );
}

#[test]
fn acknowledged_audit_entries_survive_kill_9() {
    let (_dir, config) = setup("");
    let mut levee = Levee::start(&config);
    // Each SIGHUP appends one entry; /metrics shows it only after the durable write.
    for i in 0..20u64 {
        levee.signal(libc::SIGHUP);
        levee.wait_for("the reload entry", |l| l.audit_head().0 >= 3 + i);
    }
    let (seq, hash) = levee.audit_head();
    assert_eq!(seq, 22);
    levee.signal(libc::SIGKILL);
    assert_eq!(levee.wait().code(), None); // killed, not exited

    // Offline, read-only: every acknowledged entry is there and the chain ends at the head.
    let (jsonl, export_head) = export(&config, "jsonl");
    assert_eq!(export_head, hash);
    let file = config.with_file_name("a.jsonl");
    std::fs::write(&file, &jsonl).unwrap();
    let out = cli(&["audit", "verify", file.to_str().unwrap(), "--head", &hash]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok 22 entries\n");

    // And levee starts again on the crashed store and continues the chain.
    let levee = Levee::start(&config);
    assert_eq!(levee.audit_head().0, 24);
}

#[test]
fn export_works_while_levee_runs() {
    let (_dir, config) = setup("");
    let levee = Levee::start(&config);
    let (seq, hash) = levee.audit_head();
    let (jsonl, export_head) = export(&config, "jsonl");
    assert_eq!(jsonl.lines().count() as u64, seq);
    assert_eq!(export_head, hash);
}
