//! Writes a scenario: the raw packets as a pcap and their ground truth as
//! JSON, or the flow export of them (sFlow) as a pcap of UDP datagrams.
//!
//!     levee-scenario mixed --seed 1 --out mixed.pcap --truth mixed.json
//!     levee-scenario mixed --seed 1 --sflow 1000 --out mixed-sflow.pcap
//!     levee-scenario benign --out benign.pcap
//!     levee-scenario syn_flood --target 192.0.2.10 --pps 100000 --seconds 5 --out syn.pcap
//!     levee-scenario amplification-ntp --sources 500 --out ntp.pcap
//!     levee-scenario carpet-amplification-dns --prefix 192.0.2.0/24 --hosts 254 --pps 120000 --out carpet.pcap
//!     levee-scenario surge --prefix 192.0.2.0/24 --pps 60000 --out surge.pcap
//!
//! Attack names: syn_flood, syn_ack, ack_flood, rst_flood, udp_flood,
//! icmp_flood, amplification-<dns|ntp|ssdp|memcached|cldap|chargen|snmp|wsd>,
//! fragment_flood, protocol_flood-<gre|esp|ipip>; `carpet-` before any of
//! them spreads it over `--hosts` addresses of `--prefix`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use levee_collectors::encode::pcap::{udp_frame, PcapWriter, LINKTYPE_ETHERNET};
use levee_tools::{attacks, carpet, export, scenario};

#[derive(Parser)]
#[command(about = "Write labelled traffic (raw packets or flow export) with its ground truth", long_about = None)]
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
    /// Attacks: the victim.
    #[arg(long, default_value = "192.0.2.10")]
    target: std::net::IpAddr,
    /// Attacks: packets per second.
    #[arg(long, default_value_t = 100_000)]
    pps: u64,
    /// Attacks and benign traffic: how long.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Attacks: `spoofed`, or how many real source hosts.
    #[arg(long, default_value = "spoofed")]
    sources: String,
    /// Cut raw packets at this many bytes (a mirror port's snap length).
    #[arg(long, default_value_t = 65_535)]
    snaplen: usize,
    /// Carpet bombing and surges: the prefix (`192.0.2.0/24`,
    /// `2001:db8:1::/64`).
    #[arg(long, default_value = "192.0.2.0/24")]
    prefix: String,
    /// Carpet bombing and surges: how many of its addresses.
    #[arg(long, default_value_t = 254)]
    hosts: u32,
}

/// `--prefix`'s network and length.
fn prefix(s: &str) -> anyhow::Result<(std::net::IpAddr, u8)> {
    let (a, l) = s
        .split_once('/')
        .context("--prefix: an address and a length, e.g. 192.0.2.0/24")?;
    Ok((
        a.parse().context("--prefix address")?,
        l.parse().context("--prefix length")?,
    ))
}

fn attack_family(name: &str) -> Option<attacks::Family> {
    use attacks::Family as F;
    let port = |s: &str| match s {
        "dns" => Some(53),
        "ntp" => Some(123),
        "ssdp" => Some(1900),
        "memcached" => Some(11211),
        "cldap" => Some(389),
        "chargen" => Some(19),
        "snmp" => Some(161),
        "wsd" => Some(3702),
        _ => None,
    };
    Some(match name {
        "syn_flood" => F::SynFlood,
        "syn_ack" => F::SynAck,
        "ack_flood" => F::AckFlood,
        "rst_flood" => F::RstFlood,
        "udp_flood" => F::UdpFlood,
        "icmp_flood" => F::IcmpFlood,
        "fragment_flood" => F::FragmentFlood,
        n if n.starts_with("amplification-") => F::Amplification(port(&n[14..])?),
        "protocol_flood-gre" => F::ProtocolFlood(47),
        "protocol_flood-esp" => F::ProtocolFlood(50),
        "protocol_flood-ipip" => F::ProtocolFlood(4),
        _ => return None,
    })
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let s = match a.name.as_str() {
        "mixed" => scenario::mixed(a.seed),
        "benign" => attacks::benign(a.target, "2001:db8::10".parse()?, a.seconds, a.seed),
        "surge" => {
            let (net, len) = prefix(&a.prefix)?;
            let targets = carpet::addresses(net, len, a.hosts, a.seed);
            carpet::surge(&targets, a.pps, 500_000, a.seconds, a.seed)
        }
        name if name.starts_with("carpet-") => {
            let family = attack_family(&name[7..])
                .with_context(|| format!("unknown scenario `{name}` (see --help)"))?;
            let (net, len) = prefix(&a.prefix)?;
            let targets = carpet::addresses(net, len, a.hosts, a.seed);
            let sources = match a.sources.as_str() {
                "spoofed" => attacks::Sources::Spoofed,
                n => {
                    attacks::Sources::Hosts(n.parse().context("--sources: `spoofed` or a number")?)
                }
            };
            attacks::merge(vec![
                carpet::spread(
                    &attacks::Attack {
                        family,
                        target: targets[0],
                        pps: a.pps,
                        start_us: 500_000,
                        duration_s: a.seconds,
                        sources,
                    },
                    &targets,
                    a.seed,
                ),
                carpet::web(&targets, 2_000, a.seconds + 1, a.seed),
            ])
        }
        name => {
            let family = attack_family(name)
                .with_context(|| format!("unknown scenario `{name}` (see --help)"))?;
            let sources = match a.sources.as_str() {
                "spoofed" => attacks::Sources::Spoofed,
                n => {
                    attacks::Sources::Hosts(n.parse().context("--sources: `spoofed` or a number")?)
                }
            };
            attacks::merge(vec![
                attacks::attack(
                    &attacks::Attack {
                        family,
                        target: a.target,
                        pps: a.pps,
                        start_us: 500_000,
                        duration_s: a.seconds,
                        sources,
                    },
                    a.seed,
                ),
                attacks::background(a.target, a.seconds + 1, a.seed),
            ])
        }
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
