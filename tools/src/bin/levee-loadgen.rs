//! Sends flow export at a chosen rate for a chosen time, batched with
//! `sendmmsg(2)`, so the loss levee shows on `/metrics` at that rate can be
//! read (levee_socket_drops_total, levee_ring_drops_total,
//! levee_records_total).
//!
//!     levee-loadgen --to 127.0.0.1:2055 --format netflow5 --rate 2000000 --seconds 10
//!     levee-loadgen --to 127.0.0.1:6343 --format sflow --rate 500000 --hosts 5000
//!
//! Datagrams are encoded once, before sending (realistic ones: 30 NetFlow v5
//! records, 27 IPFIX records of a common template, 8 sFlow raw-header
//! samples), with destinations spread over `--hosts` addresses of
//! `--prefix`; the rate is in records (sFlow: samples) per second.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use levee_collectors::encode::netflow::{self as nf, Set, Value};
use levee_collectors::encode::packet::{self as pkt, PacketSpec};
use levee_collectors::encode::samples;
use levee_collectors::encode::sflow as sf;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Netflow5,
    Ipfix,
    Sflow,
}

#[derive(Parser)]
#[command(about = "Send flow export to a collector at a chosen rate (sendmmsg)")]
struct Args {
    /// Where to send.
    #[arg(long)]
    to: SocketAddr,
    #[arg(long, value_enum, default_value = "netflow5")]
    format: Format,
    /// Records (sFlow: samples) per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 1_000_000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Destinations, spread over --prefix.
    #[arg(long, default_value_t = 1000)]
    hosts: u32,
    /// The /16 the destinations are in (its first two octets).
    #[arg(long, default_value = "192.0.0.0")]
    prefix: Ipv4Addr,
    /// sFlow sampling rate written in the samples.
    #[arg(long, default_value_t = 1024)]
    sampling: u32,
}

/// Distinct datagrams to cycle through: enough for every host to appear
/// (`--hosts` / records per datagram), at least this many.
const VARIANTS: usize = 512;
/// Datagrams per sendmmsg call.
const BATCH: usize = 64;

fn dst(prefix: Ipv4Addr, hosts: u32, i: u32) -> Ipv4Addr {
    let base = u32::from(prefix) & 0xffff_0000;
    Ipv4Addr::from(base + 1 + i % hosts.clamp(1, 65_000))
}

/// Pre-encoded datagrams and records per datagram (plus a template to send first).
fn datagrams(a: &Args) -> (Vec<Vec<u8>>, u64, Option<Vec<u8>>) {
    let per = match a.format {
        Format::Netflow5 => 30,
        Format::Ipfix => 27,
        Format::Sflow => 8,
    };
    let variants = (a.hosts as usize).div_ceil(per).max(VARIANTS);
    let mut out = Vec::with_capacity(variants);
    let mut n = 0u32;
    match a.format {
        Format::Netflow5 => {
            for v in 0..variants {
                let recs: Vec<nf::V5Record> = (0..30)
                    .map(|j| {
                        n += 1;
                        nf::V5Record {
                            src: Ipv4Addr::from(0x0b00_0000 + n * 7919),
                            dst: dst(a.prefix, a.hosts, n),
                            next_hop: Ipv4Addr::new(10, 0, 0, 1),
                            input: 1,
                            output: 2,
                            packets: 10 + j,
                            octets: 1500 * (10 + j),
                            // Flows of nine seconds: a rate, not a burst.
                            first: 3_590_000,
                            last: 3_599_000,
                            src_port: 1024 + j as u16,
                            dst_port: 443,
                            tcp_flags: 0x18,
                            protocol: 6,
                            tos: 0,
                        }
                    })
                    .collect();
                let mut d = Vec::new();
                let h = nf::V5Header {
                    uptime_ms: 3_600_000,
                    unix_secs: 1_700_000_000,
                    seq: (v * 30) as u32,
                    ..Default::default()
                };
                nf::v5(&h, &recs, &mut d);
                out.push(d);
            }
            (out, 30, None)
        }
        Format::Ipfix => {
            let t = samples::ipv4_template(256);
            let mut template = Vec::new();
            nf::ipfix(
                1_700_000_000,
                0,
                1,
                &[Set::Templates(vec![t.clone()])],
                &mut template,
            );
            for v in 0..variants {
                let recs: Vec<Vec<Value>> = (0..27)
                    .map(|_| {
                        n += 1;
                        let mut r = vec![Value::Uint(0); t.fields.len()];
                        r[0] =
                            Value::Bytes(Ipv4Addr::from(0x0b00_0000 + n * 7919).octets().to_vec());
                        r[1] = Value::Bytes(dst(a.prefix, a.hosts, n).octets().to_vec());
                        r[3] = Value::Uint(1024);
                        r[4] = Value::Uint(443);
                        r[5] = Value::Uint(6);
                        r[10] = Value::Uint(10);
                        r[11] = Value::Uint(15_000);
                        r
                    })
                    .collect();
                let mut d = Vec::new();
                nf::ipfix(
                    1_700_000_000,
                    (v * 27) as u32,
                    1,
                    &[Set::Data {
                        template: t.clone(),
                        records: recs,
                    }],
                    &mut d,
                );
                out.push(d);
            }
            (out, 27, Some(template))
        }
        Format::Sflow => {
            for v in 0..variants {
                let samples = (0..8)
                    .map(|_| {
                        n += 1;
                        let spec = PacketSpec {
                            ip_len: 1500,
                            ..PacketSpec::tcp(
                                Ipv4Addr::from(0x0b00_0000 + n * 7919).into(),
                                dst(a.prefix, a.hosts, n).into(),
                                1024,
                                443,
                            )
                        };
                        let mut header = Vec::new();
                        pkt::ethernet(&spec, 110, &mut header);
                        sf::Sample::Flow {
                            expanded: false,
                            seq: n,
                            source_index: 1,
                            rate: a.sampling,
                            pool: n * a.sampling,
                            drops: 0,
                            input: 1,
                            output: 2,
                            frame_len: 1518,
                            header,
                        }
                    })
                    .collect();
                let mut d = Vec::new();
                sf::encode(
                    &sf::Datagram {
                        agent: Ipv4Addr::new(10, 0, 0, 1).into(),
                        sub_agent: 0,
                        seq: v as u32 + 1,
                        uptime_ms: 1000,
                        samples,
                    },
                    &mut d,
                );
                out.push(d);
            }
            (out, 8, None)
        }
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let (grams, per, template) = datagrams(&a);
    let socket = UdpSocket::bind(if a.to.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    socket
        .connect(a.to)
        .with_context(|| format!("connecting to {}", a.to))?;
    if let Some(t) = template {
        socket.send(&t)?;
    }
    let mut iov: Vec<libc::iovec> = grams
        .iter()
        .map(|g| libc::iovec {
            iov_base: g.as_ptr() as *mut libc::c_void,
            iov_len: g.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid mmsghdr; the pointers set below point into
    // `iov`, which outlives every sendmmsg call.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let datagrams_per_s = if a.rate == 0 {
        u64::MAX
    } else {
        (a.rate / per).max(1)
    };
    let started = Instant::now();
    let end = started + Duration::from_secs(a.seconds);
    let (mut sent, mut next) = (0u64, 0usize);
    while Instant::now() < end {
        // Pace: no further ahead than the rate allows.
        let due = if datagrams_per_s == u64::MAX {
            u64::MAX
        } else {
            (started.elapsed().as_secs_f64() * datagrams_per_s as f64) as u64
        };
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let n = BATCH.min((due - sent) as usize);
        for m in msgs.iter_mut().take(n) {
            m.msg_hdr.msg_iov = &mut iov[next];
            m.msg_hdr.msg_iovlen = 1;
            next = (next + 1) % iov.len();
        }
        // SAFETY: msgs[..n] point at valid iovecs over live buffers.
        let r =
            unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                continue; // nobody listening for a moment: keep the pace
            }
            bail!("sendmmsg: {e}");
        }
        sent += r as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {sent} datagrams, {} records in {secs:.2} s: {:.0} records/s",
        sent * per,
        (sent * per) as f64 / secs
    );
    Ok(())
}
