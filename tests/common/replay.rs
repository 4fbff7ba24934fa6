//! What the replay tests share: a config of one `customers` hostgroup,
//! export datagrams written as the capture `levee replay` reads, and the
//! lines a replay prints.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use levee::config;
use levee::replay::{self, Format};
use levee_collectors::encode::pcap::{udp_frame, PcapWriter, LINKTYPE_ETHERNET};
use levee_tools::export::Export;
use serde_json::Value;

/// A config of the hostgroup `customers` (192.0.2.0/24, 2001:db8::/48)
/// with `extra` after it, and an sFlow listener.
pub fn config(extra: &str) -> config::Config {
    let text = format!(
        "[[hostgroup]]\nname = \"customers\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n{extra}\n\
         [collector.sflow]\nlisten = [\"0.0.0.0:6343\"]\n"
    );
    config::parse(Path::new("test.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

/// `exports` as a capture at `dir/input.pcap`: each datagram from agent
/// 10.0.0.1 to 127.0.0.1:6343 at its export time.
pub fn write_exports(exports: &[Export], dir: &Path) -> PathBuf {
    let path = dir.join("input.pcap");
    let agent = Ipv4Addr::new(10, 0, 0, 1);
    let f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut w = PcapWriter::new(f, LINKTYPE_ETHERNET, 65_535).unwrap();
    for e in exports {
        let frame = udp_frame(agent, 50_000, Ipv4Addr::new(127, 0, 0, 1), 6343, &e.payload);
        w.write(e.time_us, &frame, frame.len()).unwrap();
    }
    std::io::Write::flush(&mut w.into_inner()).unwrap();
    path
}

/// Every line `levee replay --format json` prints for `path` (with the
/// summary line when `summary`).
pub fn lines(c: &config::Config, path: PathBuf, summary: bool) -> Vec<Value> {
    let mut out = Vec::new();
    replay::replay(c, &[path], Format::Json, summary, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The incidents a replay of `path` prints.
pub fn incidents(c: &config::Config, path: PathBuf) -> Vec<Value> {
    lines(c, path, false)
        .into_iter()
        .filter(|v| v["type"] == "incident")
        .collect()
}
