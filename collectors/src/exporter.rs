//! One exporter: its decoding state and its counters (IN-7).
//!
//! [`Exporter::decode`] tells the protocol by the datagram's first bytes, not
//! by the port it came in on (sFlow starts with the 32-bit word 5, NetFlow
//! and IPFIX with the 16-bit version 5, 9 or 10), so a router pointed at the
//! wrong port is still understood, and counts every outcome.

use crate::error::{DecodeError, ErrorKind, Protocol};
use crate::ipfix::{self, Version};
use crate::record::FlowRecord;
use crate::{netflow5, sflow, Datagram, Tally};

/// Totals since the exporter was first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExporterCounts {
    pub datagrams: [u64; Protocol::COUNT],
    pub records: [u64; Protocol::COUNT],
    /// Decode errors by protocol and kind (fatal ones and stepped-over ones).
    pub errors: [[u64; ErrorKind::COUNT]; Protocol::COUNT],
    pub template_misses: u64,
    pub lost: u64,
    pub exporter_drops: u64,
    pub non_ip: u64,
    /// Records placed at arrival because the exporter's clocks disagreed.
    pub clock_skew: u64,
    /// Unix ms of the last datagram.
    pub last_seen_ms: u64,
    /// The longest flow a record reported, seconds: about the exporter's
    /// active timeout, which bounds how late a long flow is reported (and
    /// so how late an attack carried in one can be seen).
    pub longest_flow_s: u16,
}

impl ExporterCounts {
    /// Adds another set of totals (the same exporter seen by another receiver).
    pub fn add(&mut self, c: &ExporterCounts) {
        for (a, b) in self.datagrams.iter_mut().zip(c.datagrams) {
            *a += b;
        }
        for (a, b) in self.records.iter_mut().zip(c.records) {
            *a += b;
        }
        for (row, other) in self.errors.iter_mut().zip(&c.errors) {
            for (a, b) in row.iter_mut().zip(other) {
                *a += b;
            }
        }
        self.template_misses += c.template_misses;
        self.lost += c.lost;
        self.exporter_drops += c.exporter_drops;
        self.non_ip += c.non_ip;
        self.clock_skew += c.clock_skew;
        self.last_seen_ms = self.last_seen_ms.max(c.last_seen_ms);
        self.longest_flow_s = self.longest_flow_s.max(c.longest_flow_s);
    }
}

/// State and counters of one exporter.
#[derive(Debug, Default)]
pub struct Exporter {
    /// What the decoders found, by protocol: running totals they add to
    /// directly, so a datagram costs no tally to clear and merge.
    tallies: [Tally; Protocol::COUNT],
    datagrams: [u64; Protocol::COUNT],
    /// Errors that ended a datagram, by protocol and kind.
    fatal: [[u64; ErrorKind::COUNT]; Protocol::COUNT],
    last_seen_ms: u64,
    longest_flow_s: u16,
    pub sflow: sflow::State,
    pub netflow5: netflow5::State,
    /// NetFlow v9 and IPFIX templates, samplers and sequence state.
    pub templates: ipfix::State,
}

/// Which decoder a datagram is for, by its first bytes.
pub fn sniff(data: &[u8]) -> Option<Protocol> {
    if sflow::sniff(data) {
        return Some(Protocol::Sflow);
    }
    match data.get(..2).map(|v| u16::from_be_bytes([v[0], v[1]])) {
        Some(5) => Some(Protocol::Netflow5),
        Some(9) => Some(Protocol::Netflow9),
        Some(10) => Some(Protocol::Ipfix),
        _ => None,
    }
}

impl Exporter {
    /// Decodes one datagram, appending its records to `out`, and counts the
    /// outcome. On error the records decoded before it stay in `out`.
    pub fn decode(
        &mut self,
        dg: &Datagram<'_>,
        out: &mut Vec<FlowRecord>,
    ) -> Result<Protocol, DecodeError> {
        self.last_seen_ms = self.last_seen_ms.max(dg.received_ms);
        let first = out.len();
        let Some(protocol) = sniff(dg.data) else {
            // Not flow export at all; count it under the NetFlow family,
            // which is what most stray traffic on these ports was meant as.
            let e = DecodeError::new(
                Protocol::Netflow5,
                ErrorKind::BadVersion,
                0,
                "not sFlow v5, NetFlow v5/v9 or IPFIX",
            );
            self.count(e.protocol, Some(e.kind));
            return Err(e);
        };
        let tally = &mut self.tallies[protocol.index()];
        let result = match protocol {
            Protocol::Sflow => sflow::decode(dg, &mut self.sflow, out, tally),
            Protocol::Netflow5 => netflow5::decode(dg, &mut self.netflow5, out, tally),
            Protocol::Netflow9 => ipfix::decode(Version::V9, dg, &mut self.templates, out, tally),
            Protocol::Ipfix => ipfix::decode(Version::Ipfix, dg, &mut self.templates, out, tally),
            Protocol::Pcap => unreachable!("sniff never says pcap"),
        };
        self.count(protocol, result.as_ref().err().map(|e| e.kind));
        if protocol != Protocol::Sflow {
            if let Some(d) = out[first..].iter().map(|r| r.duration_s).max() {
                self.longest_flow_s = self.longest_flow_s.max(d);
            }
        }
        result.map(|()| protocol)
    }

    fn count(&mut self, protocol: Protocol, fatal: Option<ErrorKind>) {
        let p = protocol.index();
        self.datagrams[p] += 1;
        if let Some(kind) = fatal {
            self.fatal[p][kind.index()] += 1;
        }
    }

    /// Totals since the exporter was first seen.
    pub fn counters(&self) -> ExporterCounts {
        let mut c = ExporterCounts {
            datagrams: self.datagrams,
            errors: self.fatal,
            last_seen_ms: self.last_seen_ms,
            longest_flow_s: self.longest_flow_s,
            ..ExporterCounts::default()
        };
        for (p, t) in self.tallies.iter().enumerate() {
            c.records[p] = t.records;
            for (total, n) in c.errors[p].iter_mut().zip(t.errors) {
                *total += n;
            }
            c.template_misses += t.template_misses;
            c.lost += t.lost;
            c.exporter_drops += t.exporter_drops;
            c.non_ip += t.non_ip;
            c.clock_skew += t.clock_skew;
        }
        c
    }

    /// Records decoded so far, all protocols (cheaper than [`Self::counters`]).
    pub fn records(&self) -> u64 {
        self.tallies.iter().map(|t| t.records).sum()
    }
}
