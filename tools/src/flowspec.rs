//! FlowSpec rules as a router holds them, held against scenario packets:
//! the coverage checker of the end-to-end tests.
//!
//! A rule is read from the JSON NLRI the `gobgp` CLI prints for the router
//! (`global rib -j`, `monitor global rib -j`) — what really arrived over
//! BGP, not what levee believes it sent — and matched against a
//! [`PacketSpec`] with RFC 8955's semantics: every component must match; a
//! component's terms are combined left to right, each ANDed with the one
//! before when its `a` bit is set and ORed otherwise.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Context, Result};
use levee_collectors::encode::packet::PacketSpec;
use serde_json::Value;

/// One term of a numeric or bitmask component: its operator byte and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub op: u8,
    pub value: u64,
}

/// A FlowSpec rule's match part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub dst: Option<(IpAddr, u8)>,
    pub src: Option<(IpAddr, u8)>,
    /// (component type, its terms), in NLRI order.
    pub components: Vec<(u8, Vec<Term>)>,
    /// The NLRI as gobgp printed it, for messages.
    pub text: String,
}

/// Component types (RFC 8955 §4.2.2, RFC 8956 §3).
pub mod kind {
    pub const DST: u8 = 1;
    pub const SRC: u8 = 2;
    pub const PROTOCOL: u8 = 3;
    pub const PORT: u8 = 4;
    pub const DST_PORT: u8 = 5;
    pub const SRC_PORT: u8 = 6;
    pub const ICMP_TYPE: u8 = 7;
    pub const ICMP_CODE: u8 = 8;
    pub const TCP_FLAGS: u8 = 9;
    pub const PACKET_LENGTH: u8 = 10;
    pub const DSCP: u8 = 11;
    pub const FRAGMENT: u8 = 12;
}

fn prefix(v: &Value) -> Result<(IpAddr, u8)> {
    let p = v["prefix"]
        .as_str()
        .ok_or_else(|| anyhow!("no prefix in {v}"))?;
    let (addr, len) = p.split_once('/').unwrap_or((p, "128"));
    Ok((addr.parse()?, len.parse()?))
}

fn contains((net, len): (IpAddr, u8), a: IpAddr) -> bool {
    let bits = |ip: IpAddr| -> (u128, u8) {
        match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let ((n, w), (x, w2)) = (bits(net), bits(a));
    if w != w2 {
        return false;
    }
    let len = u32::from(len.min(w));
    if len == 0 {
        return true;
    }
    let mask = !0u128 << (128 - len);
    n & mask == x & mask
}

impl Rule {
    /// A rule from gobgp's JSON of a path's NLRI (`{"value": [...]}`).
    pub fn from_gobgp(nlri: &Value) -> Result<Rule> {
        let items = nlri["value"]
            .as_array()
            .ok_or_else(|| anyhow!("no NLRI components in {nlri}"))?;
        let mut r = Rule {
            dst: None,
            src: None,
            components: Vec::new(),
            text: nlri.to_string(),
        };
        for c in items {
            let t = c["type"]
                .as_u64()
                .and_then(|t| u8::try_from(t).ok())
                .ok_or_else(|| anyhow!("component without a type: {c}"))?;
            match t {
                kind::DST => r.dst = Some(prefix(&c["value"])?),
                kind::SRC => r.src = Some(prefix(&c["value"])?),
                _ => {
                    let terms = c["value"]
                        .as_array()
                        .ok_or_else(|| anyhow!("component {t} without terms: {c}"))?
                        .iter()
                        .map(|x| {
                            Ok(Term {
                                op: u8::try_from(x["op"].as_u64().context("op")?)?,
                                value: x["value"].as_u64().context("value")?,
                            })
                        })
                        .collect::<Result<Vec<Term>>>()?;
                    r.components.push((t, terms));
                }
            }
        }
        if r.dst.is_none() {
            bail!("a rule without a destination: {nlri}");
        }
        Ok(r)
    }

    /// Whether the rule's destination prefix holds `host`.
    pub fn covers(&self, host: IpAddr) -> bool {
        self.dst.is_some_and(|d| contains(d, host))
    }

    /// Whether the rule matches the packet.
    pub fn matches(&self, p: &PacketSpec) -> bool {
        if let Some(d) = self.dst {
            if !contains(d, p.dst) {
                return false;
            }
        }
        if let Some(s) = self.src {
            if !contains(s, p.src) {
                return false;
            }
        }
        let later_fragment = matches!(p.fragment, Some((off, _)) if off > 0);
        let ports = !later_fragment && matches!(p.protocol, 6 | 17 | 132);
        let icmp = !later_fragment && matches!(p.protocol, 1 | 58);
        let tcp = !later_fragment && p.protocol == 6;
        self.components.iter().all(|(t, terms)| {
            let numeric = |v: Option<u64>| v.is_some_and(|v| numeric(terms, v));
            match *t {
                kind::PROTOCOL => numeric(Some(u64::from(p.protocol))),
                kind::PORT => {
                    ports
                        && (numeric(Some(u64::from(p.src_port)))
                            || numeric(Some(u64::from(p.dst_port))))
                }
                kind::DST_PORT => ports && numeric(Some(u64::from(p.dst_port))),
                kind::SRC_PORT => ports && numeric(Some(u64::from(p.src_port))),
                kind::ICMP_TYPE => icmp && numeric(Some(u64::from(p.icmp_type))),
                kind::ICMP_CODE => icmp && numeric(Some(u64::from(p.icmp_code))),
                kind::TCP_FLAGS => tcp && bitmask(terms, u64::from(p.tcp_flags)),
                kind::PACKET_LENGTH => numeric(Some(u64::from(p.ip_len))),
                kind::DSCP => numeric(Some(0)),
                kind::FRAGMENT => bitmask(terms, fragment_bits(p)),
                _ => false, // a component this checker does not know matches nothing
            }
        })
    }

    /// The share of `packets` the rule matches (0 for none).
    pub fn share<'a>(&self, packets: impl IntoIterator<Item = &'a PacketSpec>) -> f64 {
        let (mut n, mut m) = (0u64, 0u64);
        for p in packets {
            n += 1;
            m += u64::from(self.matches(p));
        }
        if n == 0 {
            0.0
        } else {
            m as f64 / n as f64
        }
    }
}

/// The share of `packets` that any of `rules` matches.
pub fn coverage<'a>(rules: &[Rule], packets: impl IntoIterator<Item = &'a PacketSpec>) -> f64 {
    let (mut n, mut m) = (0u64, 0u64);
    for p in packets {
        n += 1;
        m += u64::from(rules.iter().any(|r| r.matches(p)));
    }
    if n == 0 {
        0.0
    } else {
        m as f64 / n as f64
    }
}

/// RFC 8955 §4.2.2.12 bits of a packet: DF 0x01 (never set by the
/// generator), IsF 0x02 (a fragment other than the first), FF 0x04 (first
/// fragment), LF 0x08 (last fragment).
fn fragment_bits(p: &PacketSpec) -> u64 {
    match p.fragment {
        None => 0,
        Some((0, _)) => 0x04,
        Some((_, true)) => 0x02,
        Some((_, false)) => 0x02 | 0x08,
    }
}

/// Numeric operator terms (RFC 8955 §4.2.1.1): `lt` 0x04, `gt` 0x02,
/// `eq` 0x01, `a` (AND with the previous term) 0x40.
fn numeric(terms: &[Term], v: u64) -> bool {
    let mut acc = None;
    for t in terms {
        let (lt, gt, eq) = (t.op & 0x04 != 0, t.op & 0x02 != 0, t.op & 0x01 != 0);
        let r = (lt && v < t.value) || (gt && v > t.value) || (eq && v == t.value);
        acc = Some(match acc {
            None => r,
            Some(a) if t.op & 0x40 != 0 => a && r,
            Some(a) => a || r,
        });
    }
    acc.unwrap_or(false)
}

/// Bitmask operator terms (RFC 8955 §4.2.1.2): `not` 0x02, `m` (match all
/// bits) 0x01, `a` 0x40.
fn bitmask(terms: &[Term], data: u64) -> bool {
    let mut acc = None;
    for t in terms {
        let hit = if t.op & 0x01 != 0 {
            data & t.value == t.value
        } else {
            data & t.value != 0
        };
        let r = hit != (t.op & 0x02 != 0);
        acc = Some(match acc {
            None => r,
            Some(a) if t.op & 0x40 != 0 => a && r,
            Some(a) => a || r,
        });
    }
    acc.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        Rule::from_gobgp(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn a_router_rule_matches_what_it_says() {
        // As gobgp prints "destination 192.0.2.10/32 protocol ==udp source-port ==123".
        let r = rule(
            r#"{"value":[{"type":1,"value":{"prefix":"192.0.2.10/32"}},{"type":3,"value":[{"op":129,"value":17}]},{"type":6,"value":[{"op":129,"value":123}]}]}"#,
        );
        let dst: IpAddr = "192.0.2.10".parse().unwrap();
        let src: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(r.matches(&PacketSpec::udp(src, dst, 123, 4000, 468)));
        assert!(!r.matches(&PacketSpec::udp(src, dst, 53, 4000, 468)));
        assert!(!r.matches(&PacketSpec::tcp(src, dst, 123, 4000)));
        assert!(!r.matches(&PacketSpec::udp(
            src,
            "192.0.2.11".parse().unwrap(),
            123,
            1,
            99
        )));
        // A later fragment carries no ports.
        let frag = PacketSpec {
            fragment: Some((185, true)),
            ..PacketSpec::udp(src, dst, 123, 4000, 468)
        };
        assert!(!r.matches(&frag));
    }

    #[test]
    fn tcp_flags_and_ranges_follow_the_operators() {
        // SYN set and ACK clear: match-all 0x02, then AND NOT 0x10.
        let syn = rule(
            r#"{"value":[{"type":1,"value":{"prefix":"192.0.2.0/24"}},{"type":9,"value":[{"op":1,"value":2},{"op":195,"value":16}]}]}"#,
        );
        let (s, d): (IpAddr, IpAddr) = (
            "198.51.100.1".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
        );
        let tcp = |flags| PacketSpec {
            tcp_flags: flags,
            ..PacketSpec::tcp(s, d, 1000, 80)
        };
        assert!(syn.matches(&tcp(0x02)));
        assert!(!syn.matches(&tcp(0x12)));
        assert!(!syn.matches(&tcp(0x10)));
        // Length 100..=200: >=100 AND <=200.
        let len = rule(
            r#"{"value":[{"type":1,"value":{"prefix":"192.0.2.0/24"}},{"type":10,"value":[{"op":19,"value":100},{"op":213,"value":200}]}]}"#,
        );
        let sized = |l| PacketSpec::udp(s, d, 1, 2, l);
        assert!(len.matches(&sized(150)) && len.matches(&sized(100)) && len.matches(&sized(200)));
        assert!(!len.matches(&sized(99)) && !len.matches(&sized(201)));
    }
}
