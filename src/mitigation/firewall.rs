//! The local firewall level: nftables rules in a table of levee's own,
//! `inet levee`, for a box that is inline or protects itself.
//!
//! The table is always written whole, in one `nft -f` transaction that
//! declares it, deletes it and defines it again with every firewall
//! mitigation in force: the kernel swaps the old rules for the new ones
//! atomically, and there is no partial state to reconcile — only "is the
//! table what the intents say", answered by the rule comments
//! (`levee:<mitigation id>`). Rules are FlowSpec rules in nft's words,
//! in an input and a forward chain at priority -10 (before the usual
//! filter chains), policy accept: levee only ever drops what it matched.

use std::io::Write;
use std::process::{Command, Stdio};

use levee_bgp::{FlowAction, FlowSpecRule, Fragment, Range, Route};

use super::Mitigation;

/// The table levee owns.
pub const TABLE: &str = "inet levee";

fn set(items: &[String]) -> String {
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

fn ranges(rs: &[Range], shift: u16) -> String {
    let items: Vec<String> = rs
        .iter()
        .map(|r| {
            let (lo, hi) = (r.lo.saturating_sub(shift), r.hi.saturating_sub(shift));
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    set(&items)
}

/// Why the local firewall could not take a rule or a ruleset.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A FlowSpec redirect names a VRF, which the box itself has none of.
    #[error("a VRF redirect has no meaning on the local firewall")]
    Redirect,
    /// A route that is not a FlowSpec rule was handed to the firewall.
    #[error("{0} is not a firewall rule")]
    NotARule(String),
    /// `nft` could not be run or fed (not installed, no permission).
    #[error("running nft: {0} (is nftables installed, and may levee use it?)")]
    Run(std::io::Error),
    /// `nft` ran and refused.
    #[error("nft refused {what}: {stderr}")]
    Refused { what: &'static str, stderr: String },
}

/// One rule's text (without the chain), or why nft cannot express it.
pub fn rule(r: &FlowSpecRule, id: &str) -> Result<String, FirewallError> {
    let v6 = r.dst.addr().is_ipv6();
    let (ip, proto) = if v6 { ("ip6", "ip6") } else { ("ip", "ip") };
    let mut parts = vec![format!("{ip} daddr {}", r.dst)];
    if let Some(src) = r.src {
        parts.push(format!("{ip} saddr {src}"));
    }
    let mut protocols: Vec<String> = r.protocols.iter().map(u8::to_string).collect();
    if protocols.is_empty() && !(r.src_ports.is_empty() && r.dst_ports.is_empty()) {
        protocols = vec!["6".into(), "17".into()];
    }
    if !protocols.is_empty() {
        parts.push(format!("meta l4proto {}", set(&protocols)));
    }
    if !r.src_ports.is_empty() {
        parts.push(format!("th sport {}", ranges(&r.src_ports, 0)));
    }
    if !r.dst_ports.is_empty() {
        parts.push(format!("th dport {}", ranges(&r.dst_ports, 0)));
    }
    if !r.icmp_types.is_empty() {
        let kw = if v6 { "icmpv6" } else { "icmp" };
        parts.push(format!("{kw} type {}", ranges(&r.icmp_types, 0)));
    }
    if !r.packet_lengths.is_empty() {
        // FlowSpec counts the whole IP packet; ip6 length is the payload.
        let shift = if v6 { 40 } else { 0 };
        parts.push(format!(
            "{proto} length {}",
            ranges(&r.packet_lengths, shift)
        ));
    }
    if let Some(t) = r.tcp_flags {
        parts.push(format!(
            "tcp flags & {:#x} == {:#x}",
            t.set | t.unset,
            t.set
        ));
    }
    if let Some(f) = r.fragment {
        parts.push(
            match (v6, f) {
                (false, Fragment::IsFragment) => "ip frag-off & 0x3fff != 0",
                (false, Fragment::NotFragment) => "ip frag-off & 0x3fff == 0",
                (false, Fragment::First) => "ip frag-off & 0x3fff == 0x2000",
                (false, Fragment::Last) => "ip frag-off & 0x2000 == 0 ip frag-off & 0x1fff != 0",
                (true, Fragment::IsFragment) => "exthdr frag exists",
                (true, Fragment::NotFragment) => "exthdr frag missing",
                (true, Fragment::First) => "frag frag-off 0",
                (true, Fragment::Last) => "frag more-fragments 0",
            }
            .to_owned(),
        );
    }
    let action = match r.action {
        FlowAction::Discard => "counter drop".to_owned(),
        FlowAction::RateLimit { bytes_per_second } => {
            format!("limit rate over {bytes_per_second} bytes/second counter drop")
        }
        FlowAction::MarkDscp { dscp } => format!("counter {ip} dscp set {dscp}"),
        FlowAction::Redirect { .. } => return Err(FirewallError::Redirect),
    };
    Ok(format!(
        "{} {action} comment \"levee:{id}\"",
        parts.join(" ")
    ))
}

/// The whole script: the table replaced by one holding these mitigations
/// (none: the table removed).
pub fn script(ms: &[&Mitigation]) -> Result<String, FirewallError> {
    let mut rules = Vec::new();
    for m in ms {
        let Route::FlowSpec(r) = &m.route else {
            return Err(FirewallError::NotARule(m.route.to_string()));
        };
        rules.push(rule(r, &m.id)?);
    }
    let mut s = format!("table {TABLE}\ndelete table {TABLE}\n");
    if !rules.is_empty() {
        s += &format!("table {TABLE} {{\n");
        for (chain, hook) in [("input", "input"), ("forward", "forward")] {
            s += &format!(
                "  chain {chain} {{\n    type filter hook {hook} priority -10; policy accept;\n"
            );
            for r in &rules {
                s += &format!("    {r}\n");
            }
            s += "  }\n";
        }
        s += "}\n";
    }
    Ok(s)
}

/// Applies a script with `nft -f -` (one transaction).
pub fn apply(script: &str) -> Result<(), FirewallError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::Run)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(FirewallError::Run)?;
    }
    let out = child.wait_with_output().map_err(FirewallError::Run)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Refused {
            what: "the ruleset",
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The mitigation ids whose rules are in the table now (empty when there
/// is no table).
pub fn installed() -> Result<Vec<String>, FirewallError> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "levee"])
        .output()
        .map_err(FirewallError::Run)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(Vec::new());
        }
        return Err(FirewallError::Refused {
            what: "listing the table",
            stderr: err.trim().to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ids: Vec<String> = text
        .split("comment \"levee:")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}
