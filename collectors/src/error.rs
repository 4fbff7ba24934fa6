//! Decode errors and the protocols they are counted under.
//!
//! A malformed datagram is not a process error: the decoder stops at the
//! first problem it cannot step over, keeps the records decoded before it,
//! and returns a [`DecodeError`] whose [`ErrorKind`] is a small fixed set, so
//! counters are arrays indexed by kind, never maps keyed by message text.

use std::fmt;

/// The flow sources levee counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Sflow,
    Netflow5,
    Netflow9,
    Ipfix,
    Pcap,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Sflow,
        Protocol::Netflow5,
        Protocol::Netflow9,
        Protocol::Ipfix,
        Protocol::Pcap,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The `protocol` label of levee's metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sflow => "sflow",
            Protocol::Netflow5 => "netflow5",
            Protocol::Netflow9 => "netflow9",
            Protocol::Ipfix => "ipfix",
            Protocol::Pcap => "pcap",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, coarsely: the `kind` label of `levee_decode_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The datagram ends before a structure it announces.
    Truncated,
    /// A version this decoder does not speak (or not flow export at all).
    BadVersion,
    /// A length field that contradicts the data around it.
    BadLength,
    /// A count field that cannot be true (more records than bytes allow).
    BadCount,
    /// A field holds a value the specification does not allow.
    BadValue,
    /// A sampling rate of 0.
    ZeroSampling,
    /// Data for a template the exporter has not sent (yet).
    TemplateMissing,
    /// A template that cannot be used (zero length, too many fields, …).
    BadTemplate,
    /// The per-exporter template limit was reached; the template was refused.
    TemplateLimit,
    /// The exporter limit was reached; the datagram was refused.
    ExporterLimit,
    /// A captured packet that is not IP, or an IP header that is invalid.
    BadPacket,
    /// Counters that contradict the exporter's own earlier ones (an sFlow
    /// sample pool that does not move with its sequence numbers): counted,
    /// and the records marked untrusted, never the ground for a mitigation.
    ImplausibleCounters,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Truncated,
        ErrorKind::BadVersion,
        ErrorKind::BadLength,
        ErrorKind::BadCount,
        ErrorKind::BadValue,
        ErrorKind::ZeroSampling,
        ErrorKind::TemplateMissing,
        ErrorKind::BadTemplate,
        ErrorKind::TemplateLimit,
        ErrorKind::ExporterLimit,
        ErrorKind::BadPacket,
        ErrorKind::ImplausibleCounters,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Truncated => "truncated",
            ErrorKind::BadVersion => "bad_version",
            ErrorKind::BadLength => "bad_length",
            ErrorKind::BadCount => "bad_count",
            ErrorKind::BadValue => "bad_value",
            ErrorKind::ZeroSampling => "zero_sampling_rate",
            ErrorKind::TemplateMissing => "template_missing",
            ErrorKind::BadTemplate => "bad_template",
            ErrorKind::TemplateLimit => "template_limit",
            ErrorKind::ExporterLimit => "exporter_limit",
            ErrorKind::BadPacket => "bad_packet",
            ErrorKind::ImplausibleCounters => "implausible_counters",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One decode failure: its kind, the byte offset in the datagram where it
/// was found, and what was being read there. No allocation: a flood of bad
/// datagrams costs no more than a flood of good ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{protocol} at byte {offset}: {what}")]
pub struct DecodeError {
    pub protocol: Protocol,
    pub kind: ErrorKind,
    pub offset: usize,
    pub what: &'static str,
}

impl DecodeError {
    pub const fn new(
        protocol: Protocol,
        kind: ErrorKind,
        offset: usize,
        what: &'static str,
    ) -> DecodeError {
        DecodeError {
            protocol,
            kind,
            offset,
            what,
        }
    }
}
