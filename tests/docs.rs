//! The reference in `docs/` keeps up with the code.
//!
//! - Every subcommand of the `levee` binary (found by walking the
//!   "Commands:" sections of `--help`) has a heading `` `levee SUB …` `` in
//!   `docs/cli.md`, and every long flag its `--help` prints is named in
//!   that heading's section (`--help` and `--version` anywhere in the page).
//! - Every metric name `src/web/metrics.rs` emits is in `docs/metrics.md`.
//! - Every operation of `src/web/openapi.json`, and every route `src/web/mod.rs`
//!   and `src/web/api.rs` declare, is in `docs/http-api.md` as `METHOD /path`.
//!
//! Failures name exactly what is missing, all at once.

use std::process::Command;

const CLI_MD: &str = include_str!("../docs/cli.md");
const METRICS_MD: &str = include_str!("../docs/metrics.md");
const HTTP_MD: &str = include_str!("../docs/http-api.md");
/// Every file that writes metrics: `/metrics` itself and each subsystem's
/// `write_metrics`.
const METRICS_RS: &str = concat!(
    include_str!("../src/web/metrics.rs"),
    include_str!("../src/dataplane.rs"),
    include_str!("../src/ingest.rs"),
    include_str!("../src/mitigation/service.rs"),
);
const OPENAPI_JSON: &str = include_str!("../src/web/openapi.json");
const WEB_RS: &str = include_str!("../src/web/mod.rs");
const API_RS: &str = include_str!("../src/web/api.rs");

/// Flags every command has; documented once for all.
const UNIVERSAL_FLAGS: [&str; 2] = ["--help", "--version"];

fn assert_none_missing(what: &str, missing: &[String]) {
    assert!(
        missing.is_empty(),
        "{what}: {} missing:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

/// Whether `needle` occurs in `hay` as a whole token: not directly preceded
/// or followed by a character for which `word` holds.
fn contains_token(hay: &str, needle: &str, word: fn(char) -> bool) -> bool {
    hay.match_indices(needle).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + needle.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

fn flag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/{}_-.".contains(c)
}

// --- the command line -------------------------------------------------------

/// `levee ARGS… --help`, which must succeed.
fn help(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(args)
        .arg("--help")
        .output()
        .expect("running levee --help");
    assert!(
        out.status.success(),
        "levee {} --help failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// What one `--help` lists: subcommands (without clap's `help`) and long
/// flags.
#[derive(Debug, Default)]
struct Help {
    commands: Vec<String>,
    flags: Vec<String>,
}

fn parse_help(text: &str) -> Help {
    let mut h = Help::default();
    let mut section = "";
    for line in text.lines() {
        if line.trim().is_empty() {
            continue; // long help separates options by blank lines
        }
        if !line.starts_with(' ') {
            // "Commands:", "Options:", "Arguments:" open a section; "Usage:
            // …" and the description close it.
            section = line.strip_suffix(':').unwrap_or("");
            continue;
        }
        let item = line.trim_start();
        match section {
            // Subcommands are indented by two spaces; deeper lines are
            // wrapped descriptions.
            "Commands" if line.len() - item.len() == 2 => {
                if let Some(name) = item.split_whitespace().next() {
                    if name != "help" {
                        h.commands.push(name.to_owned());
                    }
                }
            }
            // An option line starts with its flags ("-h, --help",
            // "--config <PATH>"); description lines start otherwise.
            "Options" if item.starts_with('-') => {
                for word in item.split([' ', ',']) {
                    if let Some(rest) = word.strip_prefix("--") {
                        let name: String = rest.chars().take_while(|&c| flag_char(c)).collect();
                        if !name.is_empty() {
                            h.flags.push(format!("--{name}"));
                        }
                    }
                    if !word.is_empty() && !word.starts_with('-') {
                        break; // past the flags: value names and description
                    }
                }
            }
            _ => {}
        }
    }
    h
}

/// The section of `md` under the first heading that names `` `title` ``,
/// down to the next heading of the same or a higher level.
fn section<'a>(md: &'a str, title: &str) -> Option<&'a str> {
    let quoted = format!("`{title}`");
    let mut start: Option<(usize, usize)> = None; // (byte offset, level)
    let mut offset = 0;
    let mut fenced = false;
    for line in md.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        let heading = !fenced && level > 0 && line[level..].starts_with(' ');
        if heading {
            match start {
                Some((from, l)) if level <= l => return Some(&md[from..offset]),
                None if line.contains(&quoted) => start = Some((offset, level)),
                _ => {}
            }
        }
        offset += line.len();
    }
    start.map(|(from, _)| &md[from..])
}

#[test]
fn every_subcommand_and_flag_is_in_cli_md() {
    let mut missing = Vec::new();
    let mut seen = 0;
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let h = parse_help(&help(&path));
        for c in &h.commands {
            let mut sub = path.clone();
            sub.push(c.clone());
            todo.push(sub);
        }
        seen += 1;
        let name = if path.is_empty() {
            "levee".to_owned()
        } else {
            format!("levee {}", path.join(" "))
        };
        for flag in &h.flags {
            if !contains_token(CLI_MD, flag, flag_char) {
                missing.push(format!("{flag} (of `{name}`) appears nowhere"));
            }
        }
        if path.is_empty() {
            continue;
        }
        let Some(text) = section(CLI_MD, &name) else {
            missing.push(format!("no heading naming `{name}`"));
            continue;
        };
        for flag in &h.flags {
            if !UNIVERSAL_FLAGS.contains(&flag.as_str()) && !contains_token(text, flag, flag_char) {
                missing.push(format!("`{name}`: its section does not mention {flag}"));
            }
        }
    }
    // The walk found the command tree, not nothing.
    assert!(
        seen > 10,
        "only {seen} commands found; is --help parsed right?"
    );
    assert_none_missing("docs/cli.md", &missing);
}

#[test]
fn help_parsing_finds_commands_and_flags() {
    let h = parse_help(&help(&["mitigation".to_owned()]));
    assert_eq!(h.commands, ["list", "announce", "withdraw"]);
    let h = parse_help(&help(&["mitigation".to_owned(), "announce".to_owned()]));
    for f in [
        "--config",
        "--level",
        "--src-port",
        "--rate-limit",
        "--help",
    ] {
        assert!(h.flags.iter().any(|x| x == f), "{f} not in {:?}", h.flags);
    }
    // Long help (`apikey add` has documented values) parses the same way.
    let h = parse_help(&help(&["apikey".to_owned(), "add".to_owned()]));
    assert_eq!(h.flags, ["--config", "--scope", "--help"]);
}

// --- metrics ----------------------------------------------------------------

/// The `levee_…` names in the files that write metrics, but not crate
/// paths (`levee_collectors::…`).
fn metric_names() -> Vec<String> {
    let mut names: Vec<String> = METRICS_RS
        .match_indices("levee_")
        .filter(|(at, _)| {
            !METRICS_RS[..*at]
                .chars()
                .next_back()
                .is_some_and(metric_char)
        })
        .map(|(at, _)| {
            let rest = &METRICS_RS[at..];
            let len = rest.find(|c: char| !metric_char(c)).unwrap_or(rest.len());
            (&rest[..len], rest[len..].starts_with("::"))
        })
        .filter(|(_, crate_path)| !crate_path)
        .map(|(name, _)| name.to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_metric_is_in_metrics_md() {
    let names = metric_names();
    for known in ["levee_datagrams_total", "levee_bgp_up", "levee_build_info"] {
        assert!(
            names.iter().any(|n| n == known),
            "{known} not found in src/web/metrics.rs: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n == "levee_collectors"),
        "crate paths are not metrics"
    );
    let missing: Vec<String> = names
        .into_iter()
        .filter(|n| !contains_token(METRICS_MD, n, metric_char))
        .collect();
    assert_none_missing("docs/metrics.md", &missing);
}

// --- HTTP -------------------------------------------------------------------

#[test]
fn every_openapi_operation_is_in_http_api_md() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json");
    let paths = doc["paths"].as_object().expect("openapi.json has paths");
    assert!(!paths.is_empty());
    let mut missing = Vec::new();
    for (path, ops) in paths {
        let ops = ops.as_object().expect("a path's operations");
        for method in ops.keys() {
            let op = format!("{} /api/v1{path}", method.to_uppercase());
            if !contains_token(HTTP_MD, &op, path_char) {
                missing.push(op);
            }
        }
    }
    assert_none_missing("docs/http-api.md", &missing);
}

/// `METHOD /path` for each `.route("/path", get(…).post(…))` of a source
/// file, under `prefix`.
fn routes(source: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in source.lines() {
        let Some(rest) = line.trim_start().strip_prefix(".route(\"") else {
            continue;
        };
        let Some((path, handlers)) = rest.split_once('"') else {
            continue;
        };
        let full = format!("{prefix}{path}");
        let methods: Vec<&str> = ["get", "post", "put", "patch", "delete"]
            .into_iter()
            .filter(|m| {
                handlers
                    .match_indices(&format!("{m}("))
                    .any(|(at, _)| !handlers[..at].chars().next_back().is_some_and(metric_char))
            })
            .collect();
        if methods.is_empty() {
            out.push(full);
        } else {
            out.extend(
                methods
                    .iter()
                    .map(|m| format!("{} {full}", m.to_uppercase())),
            );
        }
    }
    out
}

#[test]
fn every_route_is_in_http_api_md() {
    let all: Vec<String> = routes(WEB_RS, "")
        .into_iter()
        .chain(routes(API_RS, "/api/v1"))
        .collect();
    for known in ["GET /healthz", "GET /metrics", "GET /api/v1/exporters"] {
        assert!(all.iter().any(|r| r == known), "{known} not in {all:?}");
    }
    let missing: Vec<String> = all
        .into_iter()
        .filter(|r| !contains_token(HTTP_MD, r, path_char))
        .collect();
    assert_none_missing("docs/http-api.md", &missing);
}
