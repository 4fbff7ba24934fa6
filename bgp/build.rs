//! Compiles GoBGP's v3 API (`apipb`) into a tonic client, without a system
//! `protoc`: protox parses the `.proto` files, tonic-prost-build generates.
//!
//! The files come from Debian's golang-github-osrg-gobgp-dev (GoBGP 3.10, the
//! version of Debian's gobgpd); `LEVEE_GOBGP_PROTO_DIR` points elsewhere.
//! They are not copied into the repository, and upstream master's (v4,
//! package `api`) would not talk to this daemon.

use std::path::PathBuf;

const DEFAULT_DIR: &str = "/usr/share/gocode/src/github.com/osrg/gobgp/api";

fn main() {
    println!("cargo:rerun-if-env-changed=LEVEE_GOBGP_PROTO_DIR");
    let dir = PathBuf::from(
        std::env::var("LEVEE_GOBGP_PROTO_DIR").unwrap_or_else(|_| DEFAULT_DIR.to_owned()),
    );
    let files = ["gobgp.proto", "attribute.proto", "capability.proto"];
    for f in files {
        let p = dir.join(f);
        if !p.exists() {
            panic!(
                "GoBGP API file {} not found: install golang-github-osrg-gobgp-dev \
                 (scripts/install-deps) or set LEVEE_GOBGP_PROTO_DIR",
                p.display()
            );
        }
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let fds = protox::compile(files, [&dir]).unwrap_or_else(|e| panic!("GoBGP protos: {e}"));
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating the GoBGP client: {e}"));
}
