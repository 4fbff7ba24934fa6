//! NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) messages.

use std::net::Ipv4Addr;

/// NetFlow v5 header fields the encoder does not derive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct V5Header {
    pub uptime_ms: u32,
    pub unix_secs: u32,
    pub unix_nsecs: u32,
    pub seq: u32,
    pub engine_type: u8,
    pub engine_id: u8,
    /// The raw 16-bit field: mode in the top 2 bits, interval in the low 14.
    pub sampling: u16,
}

/// One NetFlow v5 record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V5Record {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub next_hop: Ipv4Addr,
    pub input: u16,
    pub output: u16,
    pub packets: u32,
    pub octets: u32,
    /// Router uptime (ms) at the flow's first and last packet.
    pub first: u32,
    pub last: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub protocol: u8,
    pub tos: u8,
}

/// Appends a NetFlow v5 datagram (the count is `records.len()`, as given).
pub fn v5(h: &V5Header, records: &[V5Record], out: &mut Vec<u8>) {
    out.extend_from_slice(&5u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for v in [h.uptime_ms, h.unix_secs, h.unix_nsecs, h.seq] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&[h.engine_type, h.engine_id]);
    out.extend_from_slice(&h.sampling.to_be_bytes());
    for r in records {
        out.extend_from_slice(&r.src.octets());
        out.extend_from_slice(&r.dst.octets());
        out.extend_from_slice(&r.next_hop.octets());
        out.extend_from_slice(&r.input.to_be_bytes());
        out.extend_from_slice(&r.output.to_be_bytes());
        for v in [r.packets, r.octets, r.first, r.last] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&r.src_port.to_be_bytes());
        out.extend_from_slice(&r.dst_port.to_be_bytes());
        out.extend_from_slice(&[0, r.tcp_flags, r.protocol, r.tos, 0, 0, 0, 0, 24, 24, 0, 0]);
    }
}

/// A template field: information element, length (65535 = variable), and
/// enterprise number (0 for IANA elements; IPFIX only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub ie: u16,
    pub len: u16,
    pub enterprise: u32,
}

impl Field {
    pub const fn new(ie: u16, len: u16) -> Field {
        Field {
            ie,
            len,
            enterprise: 0,
        }
    }
}

/// A (data or options) template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: u16,
    /// Options templates: how many leading fields are scope fields (in
    /// NetFlow v9 their `ie` is a scope type: 1 system, 2 interface, …).
    pub scope_fields: usize,
    pub fields: Vec<Field>,
}

/// A field value; written at the field's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Big-endian, keeping the low bytes when the field is shorter than 8.
    Uint(u64),
    /// Raw bytes: cut or zero-padded to a fixed length, or length-prefixed
    /// for a variable-length field.
    Bytes(Vec<u8>),
}

/// One set of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Set {
    Templates(Vec<Template>),
    OptionsTemplates(Vec<Template>),
    /// Records of one template, each a value per template field.
    Data {
        template: Template,
        records: Vec<Vec<Value>>,
    },
    /// IPFIX template withdrawals (set 2): the template ids.
    Withdraw(Vec<u16>),
}

fn put_value(f: &Field, v: &Value, out: &mut Vec<u8>) {
    match (f.len, v) {
        (65535, Value::Bytes(b)) => {
            if b.len() < 255 {
                out.push(b.len() as u8);
            } else {
                out.push(255);
                out.extend_from_slice(&(b.len().min(65535) as u16).to_be_bytes());
            }
            out.extend_from_slice(&b[..b.len().min(65535)]);
        }
        (65535, Value::Uint(n)) => {
            out.push(8);
            out.extend_from_slice(&n.to_be_bytes());
        }
        (len, Value::Uint(n)) => {
            let len = usize::from(len);
            let bytes = n.to_be_bytes();
            if len <= 8 {
                out.extend_from_slice(&bytes[8 - len..]);
            } else {
                out.resize(out.len() + len - 8, 0);
                out.extend_from_slice(&bytes);
            }
        }
        (len, Value::Bytes(b)) => {
            let len = usize::from(len);
            out.extend_from_slice(&b[..b.len().min(len)]);
            out.resize(out.len() + len.saturating_sub(b.len()), 0);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V9,
    Ipfix,
}

fn sets(version: Version, sets: &[Set], out: &mut Vec<u8>) -> u16 {
    let mut records = 0u16;
    for set in sets {
        let start = out.len();
        let id: u16 = match (set, version) {
            (Set::Templates(_) | Set::Withdraw(_), Version::V9) => 0,
            (Set::OptionsTemplates(_), Version::V9) => 1,
            (Set::Templates(_) | Set::Withdraw(_), Version::Ipfix) => 2,
            (Set::OptionsTemplates(_), Version::Ipfix) => 3,
            (Set::Data { template, .. }, _) => template.id,
        };
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        match set {
            Set::Templates(ts) => {
                for t in ts {
                    records += 1;
                    out.extend_from_slice(&t.id.to_be_bytes());
                    out.extend_from_slice(&(t.fields.len() as u16).to_be_bytes());
                    put_fields(version, &t.fields, out);
                }
            }
            Set::OptionsTemplates(ts) => {
                for t in ts {
                    records += 1;
                    out.extend_from_slice(&t.id.to_be_bytes());
                    let (scope, rest) = t.fields.split_at(t.scope_fields.min(t.fields.len()));
                    match version {
                        Version::V9 => {
                            out.extend_from_slice(&((scope.len() * 4) as u16).to_be_bytes());
                            out.extend_from_slice(&((rest.len() * 4) as u16).to_be_bytes());
                        }
                        Version::Ipfix => {
                            out.extend_from_slice(&(t.fields.len() as u16).to_be_bytes());
                            out.extend_from_slice(&(scope.len() as u16).to_be_bytes());
                        }
                    }
                    put_fields(version, &t.fields, out);
                }
            }
            Set::Withdraw(ids) => {
                for id in ids {
                    records += 1;
                    out.extend_from_slice(&id.to_be_bytes());
                    out.extend_from_slice(&[0, 0]);
                }
            }
            Set::Data {
                template,
                records: rs,
            } => {
                for r in rs {
                    records += 1;
                    for (f, v) in template.fields.iter().zip(r) {
                        put_value(f, v, out);
                    }
                }
            }
        }
        // Pad to 4 bytes (RFC 3954 §5.3 requires it; IPFIX allows it).
        out.resize(out.len() + (4 - (out.len() - start) % 4) % 4, 0);
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    records
}

fn put_fields(version: Version, fields: &[Field], out: &mut Vec<u8>) {
    for f in fields {
        let ent = version == Version::Ipfix && f.enterprise != 0;
        out.extend_from_slice(&(f.ie | if ent { 0x8000 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&f.len.to_be_bytes());
        if ent {
            out.extend_from_slice(&f.enterprise.to_be_bytes());
        }
    }
}

/// Appends an IPFIX message.
pub fn ipfix(export_time: u32, seq: u32, domain: u32, content: &[Set], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&10u16.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    for v in [export_time, seq, domain] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    sets(Version::Ipfix, content, out);
    let len = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NetFlow v9 export packet.
pub fn v9(
    uptime_ms: u32,
    unix_secs: u32,
    seq: u32,
    source_id: u32,
    content: &[Set],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(&9u16.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    for v in [uptime_ms, unix_secs, seq, source_id] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let count = sets(Version::V9, content, out);
    out[start + 2..start + 4].copy_from_slice(&count.to_be_bytes());
}
