//! Writes a scenario: the raw packets as a pcap and their ground truth as
//! JSON, or the flow export of them (sFlow) as a pcap of UDP datagrams.
//!
//!     levee-scenario mixed --seed 1 --out mixed.pcap --truth mixed.json
//!     levee-scenario mixed --seed 1 --sflow 1000 --out mixed-sflow.pcap

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use levee_collectors::encode::pcap::{udp_frame, PcapWriter, LINKTYPE_ETHERNET};
use levee_tools::{export, scenario};

#[derive(Parser)]
#[command(about = "Write labelled traffic (raw packets or flow export) with its ground truth")]
struct Args {
    /// Scenario name: mixed.
    name: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The pcap to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write the per-destination ground truth here (JSON).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Write sFlow export sampled 1 in N instead of the raw packets.
    #[arg(long, value_name = "N")]
    sflow: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let s = match a.name.as_str() {
        "mixed" => scenario::mixed(a.seed),
        other => anyhow::bail!("unknown scenario `{other}` (known: mixed)"),
    };
    match a.sflow {
        None => s
            .write_pcap(&a.out)
            .with_context(|| format!("writing {}", a.out.display()))?,
        Some(rate) => {
            let agent = Ipv4Addr::new(192, 0, 2, 254);
            let f = std::io::BufWriter::new(std::fs::File::create(&a.out)?);
            let mut w = PcapWriter::new(f, LINKTYPE_ETHERNET, 65_535)?;
            for e in export::sflow(&s, agent.into(), rate, a.seed, 1_000_000) {
                let frame = udp_frame(agent, 50_000, Ipv4Addr::new(127, 0, 0, 1), 6343, &e.payload);
                w.write(e.time_us, &frame, frame.len())?;
            }
            w.into_inner().flush()?;
        }
    }
    if let Some(path) = a.truth {
        let truth: std::collections::BTreeMap<String, scenario::Totals> = s
            .truth()
            .into_iter()
            .map(|(ip, t)| (ip.to_string(), t))
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&truth)? + "\n")?;
    }
    eprintln!("{}: {} packets", s.name, s.packets.len());
    Ok(())
}
