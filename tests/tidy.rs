//! The house keeps its plan (rust-analyzer's tidy test is the model):
//!
//! - every Rust file of the workspace opens with a `//!` comment that says
//!   what it owns;
//! - every source file of a crate is named in that crate's part of
//!   ARCHITECTURE.md's code map — by its path, its file name, its folder
//!   (for a `mod.rs`) or its binary's name — so the map cannot fall behind
//!   the folders. (`lib.rs`, and `tests.rs` files of unit tests, need no
//!   entry.)
//!
//! Failures name every file at fault, all at once.

use std::path::{Path, PathBuf};

const ARCHITECTURE_MD: &str = include_str!("../ARCHITECTURE.md");

/// The crates' source folders and the headings of their code-map parts.
const CRATES: [(&str, &str); 4] = [
    ("src", "### `levee` (root crate"),
    ("collectors/src", "### `levee-collectors`"),
    ("bgp/src", "### `levee-bgp`"),
    ("tools/src", "### `levee-tools`"),
];

/// Other folders whose files need the `//!` opening only.
const OTHERS: [&str; 4] = ["tests", "benches", "fuzz/fuzz_targets", "collectors/tests"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.rs` files under `dir` (not under a `data` folder: fixtures).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "data") {
                out.extend(rust_files(&p));
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn relative(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn every_rust_file_says_what_it_owns() {
    let mut missing = Vec::new();
    let dirs = CRATES.iter().map(|c| c.0).chain(OTHERS);
    for dir in dirs {
        for f in rust_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&f).unwrap();
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("#!["));
            if !first.is_some_and(|l| l.starts_with("//!")) {
                missing.push(relative(&f));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} files do not open with a `//!` comment saying what they own:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

/// The part of ARCHITECTURE.md under `heading`, to the next `### `.
fn part(heading: &str) -> &'static str {
    let at = ARCHITECTURE_MD
        .find(heading)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no heading {heading}"));
    let rest = &ARCHITECTURE_MD[at + heading.len()..];
    let end = rest.find("\n### ").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn the_code_map_names_every_source_file() {
    let mut missing = Vec::new();
    for (dir, heading) in CRATES {
        let map = part(heading);
        let base = root().join(dir);
        for f in rust_files(&base) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name == "lib.rs" || name == "tests.rs" {
                continue;
            }
            let inside = f
                .strip_prefix(&base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
            let folder = f
                .parent()
                .unwrap()
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mut names = vec![
                format!("`{}`", relative(&f)),
                format!("`{inside}`"),
                format!("`{name}`"),
                format!("{name}`"),
            ];
            if name == "mod.rs" {
                // The folder, from the repository or from the crate's src.
                let within = inside.trim_end_matches("mod.rs");
                names = vec![
                    format!("`{folder}/`"),
                    format!("`{within}`"),
                    format!("`{}`", relative(&f)),
                ];
            }
            if inside.starts_with("bin/") {
                names.push(format!("`{stem}`"));
            }
            if !names.iter().any(|n| map.contains(n.as_str())) {
                missing.push(format!("{} (under {heading}…)", relative(&f)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} source files are not in ARCHITECTURE.md's code map:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

/// gobgpd's generated types stay inside `levee-bgp`, in its conversions
/// and its RPCs: everything else speaks `levee_bgp::model`.
#[test]
fn generated_gobgp_types_stay_in_two_files() {
    let allowed = ["bgp/src/gobgp.rs", "bgp/src/client.rs", "tests/tidy.rs"];
    let mut leaks = Vec::new();
    for dir in CRATES.iter().map(|(d, _)| *d).chain(OTHERS) {
        for f in rust_files(&root().join(dir)) {
            let rel = relative(&f);
            if allowed.contains(&rel.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            if text.contains("apipb") {
                leaks.push(rel);
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "generated gobgp types (apipb) named outside {allowed:?}: {leaks:?}"
    );
}
