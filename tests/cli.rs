//! The CLI contract of docs/cli.md for `check-config` and `audit`: exit
//! codes, the `PATH:LINE:COL: message` lines, `ok N entries`, and that
//! `audit verify` names the first bad entry. The offline verifier in
//! `scripts/audit-verify.py` must agree with levee on the same files.

mod common;

use std::process::Command;

use common::*;

#[test]
fn check_config_exits_0_on_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    std::fs::write(&config, test_config(&dir.path().join("data"), "")).unwrap();
    let out = cli(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_exits_2_with_one_positioned_line_per_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[[hostgroup]]\nname = \"a\"\nprefixes = [\"192.0.2.0/33\"]\n[hostgroup.thresholds]\npps = -5\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = cli(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let p = config.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{p}:4:13: `192.0.2.0/33` is not an IP prefix (write e.g. 192.0.2.0/24 or 2001:db8::/48)\n\
             {p}:6:7: `pps` in [hostgroup.thresholds] must be a positive integer, got -5\n"
        )
    );
}

#[test]
fn check_config_reads_levee_config_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    std::fs::write(&config, "bogus = 1\n").unwrap();
    let out = Command::new(levee_bin())
        .arg("check-config")
        .env("LEVEE_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with(&format!("{}:1:1: unknown key `bogus`", config.display())));
}

#[test]
fn check_config_of_a_missing_file_says_so() {
    let out = cli(&["check-config", "--config", "/nonexistent/levee.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/levee.toml:1:1: cannot read the config file"));
}

/// A store with a few entries, made by a real levee run, plus its exports.
fn exported() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("levee.toml");
    std::fs::write(&config, test_config(&dir.path().join("data"), "")).unwrap();
    let mut l = Levee::start(&config);
    l.signal(libc::SIGHUP);
    l.wait_for("reload", |l| l.audit_head().0 == 3);
    l.signal(libc::SIGTERM);
    assert_eq!(l.wait().code(), Some(0));
    let (_, head) = export(&config, "jsonl");
    (dir, config, head)
}

fn verify(file: &std::path::Path, head: Option<&str>) -> (i32, String) {
    let mut args = vec!["audit", "verify", file.to_str().unwrap()];
    if let Some(h) = head {
        args.extend(["--head", h]);
    }
    let out = cli(&args);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn python_verify(file: &std::path::Path, head: &str) -> (i32, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/audit-verify.py");
    let out = Command::new("python3")
        .args([script, file.to_str().unwrap(), "--head", head])
        .output()
        .expect("python3 runs");
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn audit_export_and_verify_round_trip_in_both_formats() {
    let (dir, config, head) = exported();
    for format in ["jsonl", "csv"] {
        let file = dir.path().join(format!("audit.{format}"));
        let out = cli(&[
            "audit",
            "export",
            "--config",
            config.to_str().unwrap(),
            "--format",
            format,
            "--output",
            file.to_str().unwrap(),
        ]);
        assert!(out.status.success());
        assert_eq!(
            verify(&file, Some(&head)),
            (0, "ok 4 entries\n".to_owned()),
            "{format}"
        );
    }
    // The independent implementation of the documented hash format agrees.
    let file = dir.path().join("audit.jsonl");
    assert_eq!(
        python_verify(&file, &head),
        (0, "ok 4 entries\n".to_owned())
    );
}

#[test]
fn audit_verify_exits_1_and_names_the_first_bad_entry() {
    let (dir, config, head) = exported();
    let (jsonl, _) = export(&config, "jsonl");
    let lines: Vec<&str> = jsonl.lines().collect();
    let file = dir.path().join("t.jsonl");
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "changed field",
            lines
                .iter()
                .map(|l| l.replace("service.start", "service.stort"))
                .collect(),
            "line 2 (seq 2): altered",
        ),
        (
            "deleted entry",
            [lines[0], lines[2], lines[3]]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "line 2 (seq 3): entries 2..=2 were removed",
        ),
        (
            "swapped entries",
            [lines[0], lines[2], lines[1], lines[3]]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "line 2 (seq 3): reordered",
        ),
        (
            "truncated tail",
            lines[..3].iter().map(|s| s.to_string()).collect(),
            "the chain ends at seq 3",
        ),
    ];
    for (what, content, needle) in cases {
        std::fs::write(&file, content.join("\n")).unwrap();
        let (code, out) = verify(&file, Some(&head));
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains(needle), "{what}: {out}");
        assert_eq!(
            python_verify(&file, &head).0,
            1,
            "{what}: python accepted it"
        );
    }
}
