//! How incidents are shown: the JSON object of `levee replay` and the API
//! (the fields docs/replay.md documents), and one line of text.

use serde_json::{json, Value};

use crate::detect::Incident;

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// A verdict's components as JSON.
fn components(cs: &[crate::detect::classify::Component]) -> Vec<Value> {
    cs.iter()
        .map(|c| {
            let mut o = json!({
                "family": c.family.as_str(),
                "vector": c.vector,
                "share": c.share,
                "interval": [c.low, c.high],
            });
            if !c.services.is_empty() {
                o["services"] = json!(c.services);
            }
            o
        })
        .collect()
}

/// The peak second's rate with the interval its samples allow: the
/// sampling rate, the packets really seen, and pps low–high (±3 standard
/// errors; exact when unsampled).
fn peak_rate(i: &Incident) -> Value {
    let Some(p) = i.timeline.iter().max_by_key(|p| p.pps) else {
        return Value::Null;
    };
    if p.samples == 0 {
        return json!({ "pps": p.pps, "samples": null, "sampling": null, "interval": null });
    }
    let n = p.samples as f64;
    let per = p.pps as f64 / n;
    let rel = ((1.0 - 1.0 / per.max(1.0)) / n).sqrt();
    let z = crate::accounting::Z;
    json!({
        "pps": p.pps,
        "samples": p.samples,
        "sampling": per.round() as u64,
        "interval": [
            (p.pps as f64 * (1.0 - z * rel)).max(0.0).round() as u64,
            (p.pps as f64 * (1.0 + z * rel)).round() as u64,
        ],
    })
}

/// The incident as a JSON object (`type` is left to the caller).
pub fn incident_json(i: &Incident) -> Value {
    let v = &i.verdict;
    let now = &i.current.verdict;
    let mut o = json!({
        "id": i.id,
        "scope": i.scope(),
        "host": if i.prefix.is_some() { Value::Null } else { json!(i.host.to_string()) },
        "prefix": i.prefix.map(|p| p.to_string()),
        "hostgroup": i.hostgroup,
        "family": v.family,
        "vector": v.vector,
        "components": components(&v.components),
        "unclassified_why": v.why,
        "samples": v.samples,
        "current": {
            "family": now.family,
            "vector": now.vector,
            "confidence": now.confidence,
            "samples": now.samples,
            "components": components(&now.components),
            "unclassified_why": now.why,
            "seconds": crate::detect::RECENT_SECONDS,
        },
        "severity": i.severity,
        "confidence": v.confidence,
        "started_at": rfc3339_ms(i.started_ms),
        "detected_at": rfc3339_ms(i.detected_ms),
        "ended_at": rfc3339_ms(i.last_over_ms),
        "ongoing": !i.ended,
        "peak_pps": i.peak_pps,
        "peak_bps": i.peak_bps,
        "peak_rate": peak_rate(i),
        "sources_estimate": v.sources_estimate,
        "spoofed": v.spoofed,
        "botnet": v.botnet,
        "flags_why": v.flags_why,
        "protocol": i.protocol,
        "top_src_ports": i.top_src_ports,
        "top_dst_ports": i.top_dst_ports,
        "reason": i.reason,
        "features": i.features,
    });
    if i.prefix.is_some() {
        o["hosts_affected"] = json!(i.hosts_affected);
        o["top_hosts"] = json!(i.top_hosts);
    }
    if !i.linked.is_empty() {
        o["linked"] = json!(i.linked);
    }
    o
}

/// One line for people.
pub fn incident_text(i: &Incident) -> String {
    let v = &i.verdict;
    let vector = v
        .vector
        .as_deref()
        .map(|s| format!("/{s}"))
        .unwrap_or_default();
    let mut flags = Vec::new();
    if v.spoofed {
        flags.push("spoofed");
    }
    if v.botnet {
        flags.push("botnet");
    }
    let why = match &v.why {
        Some(w) => format!(" ({w})"),
        None => String::new(),
    };
    format!(
        "{} {} ({}) {}{}{} confidence {:.2} {} peak {} pps {:.1} Mbit/s ~{} sources{}{} [{} {} > {} {}]",
        rfc3339_ms(i.detected_ms),
        match i.prefix {
            Some(p) => format!("{p} ({} hosts)", i.hosts_affected),
            None => i.host.to_string(),
        },
        i.hostgroup,
        v.family,
        vector,
        why,
        v.confidence,
        i.severity,
        i.peak_pps,
        i.peak_bps as f64 / 1e6,
        v.sources_estimate,
        if flags.is_empty() { "" } else { " " },
        flags.join(" "),
        i.reason.kind,
        i.reason.metric,
        i.reason.limit,
        if i.ended { "ended" } else { "ongoing" },
    )
}
