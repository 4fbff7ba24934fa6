//! Which hostgroup an address belongs to: longest-prefix match over the
//! configured prefixes, IPv4 and IPv6 (ACC-1, DET-1).
//!
//! Protected prefixes are few (tens to thousands) and of few distinct
//! lengths, so the table is one hash map per prefix length, longest first:
//! a lookup is one probe per distinct length, with no pointer chasing. An
//! IPv4 address outside every prefix (most flow sources) is answered by one
//! bit of a /16 bitmap. The table is built once per config and shared
//! read-only by the receive threads.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use ipnet::IpNet;
use levee_collectors::Addr;

use crate::config::Hostgroup;

/// Index of a hostgroup in the config's list.
pub type GroupId = u16;

/// A multiplicative hasher for integer keys (the keys are prefixes, not
/// attacker-chosen strings; the maps are built from the config).
#[derive(Default)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0.rotate_left(5)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64((n >> 64) as u64);
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ self.0.rotate_left(5)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// The compiled prefix table.
#[derive(Debug, Default, Clone)]
pub struct Hostgroups {
    /// Bit n set: some IPv4 prefix overlaps the /16 numbered n.
    v4_any: Vec<u64>,
    v4: Vec<(u8, IntMap<u32, GroupId>)>,
    v6: Vec<(u8, IntMap<u128, GroupId>)>,
    names: Vec<String>,
}

impl Hostgroups {
    pub fn new(groups: &[Hostgroup]) -> Hostgroups {
        let mut t = Hostgroups::default();
        for (i, g) in groups.iter().enumerate() {
            t.names.push(g.name.clone());
            for p in &g.prefixes {
                let id = i as GroupId;
                match p {
                    IpNet::V4(n) => {
                        let len = n.prefix_len();
                        let key = mask4(u32::from(n.network()), len);
                        level(&mut t.v4, len).insert(key, id);
                        if t.v4_any.is_empty() {
                            t.v4_any = vec![0; 1024];
                        }
                        let first = key >> 16;
                        let count = 1u32 << 16u8.saturating_sub(len);
                        for b in first..first + count {
                            t.v4_any[(b / 64) as usize] |= 1 << (b % 64);
                        }
                    }
                    IpNet::V6(n) => {
                        let len = n.prefix_len();
                        let key = mask6(u128::from(n.network()), len);
                        level(&mut t.v6, len).insert(key, id);
                    }
                }
            }
        }
        t.v4.sort_by_key(|l| std::cmp::Reverse(l.0));
        t.v6.sort_by_key(|l| std::cmp::Reverse(l.0));
        t
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn name(&self, id: GroupId) -> &str {
        self.names.get(usize::from(id)).map_or("", String::as_str)
    }

    /// The hostgroup of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: &Addr) -> Option<GroupId> {
        if addr.is_v4_mapped() {
            let ip = u32::from_be_bytes([addr.0[12], addr.0[13], addr.0[14], addr.0[15]]);
            let b = ip >> 16;
            if self
                .v4_any
                .get((b / 64) as usize)
                .is_none_or(|w| w & (1 << (b % 64)) == 0)
            {
                return None;
            }
            self.v4
                .iter()
                .find_map(|(len, m)| m.get(&mask4(ip, *len)).copied())
        } else {
            let ip = u128::from_be_bytes(addr.0);
            self.v6
                .iter()
                .find_map(|(len, m)| m.get(&mask6(ip, *len)).copied())
        }
    }
}

fn level<K, V>(levels: &mut Vec<(u8, IntMap<K, V>)>, len: u8) -> &mut IntMap<K, V> {
    let i = match levels.iter().position(|(l, _)| *l == len) {
        Some(i) => i,
        None => {
            levels.push((len, IntMap::default()));
            levels.len() - 1
        }
    };
    &mut levels[i].1
}

#[inline]
fn mask4(ip: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        ip & (u32::MAX << (32 - u32::from(len)))
    }
}

#[inline]
fn mask6(ip: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        ip & (u128::MAX << (128 - u32::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostgroupMitigation, Thresholds};

    fn group(name: &str, prefixes: &[&str]) -> Hostgroup {
        Hostgroup {
            name: name.into(),
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            within: None,
            thresholds: Thresholds::default(),
            prefix_thresholds: None,
            mitigation: HostgroupMitigation::default(),
        }
    }

    fn at<'a>(t: &'a Hostgroups, ip: &str) -> Option<&'a str> {
        let a = Addr::from(ip.parse::<std::net::IpAddr>().unwrap());
        t.lookup(&a).map(|g| t.name(g))
    }

    #[test]
    fn the_longest_prefix_wins() {
        let t = Hostgroups::new(&[
            group("all", &["192.0.2.0/24", "2001:db8::/32"]),
            group(
                "vip",
                &["192.0.2.128/25", "2001:db8:1::/48", "198.51.100.7/32"],
            ),
        ]);
        assert_eq!(at(&t, "192.0.2.1"), Some("all"));
        assert_eq!(at(&t, "192.0.2.200"), Some("vip"));
        assert_eq!(at(&t, "198.51.100.7"), Some("vip"));
        assert_eq!(at(&t, "198.51.100.8"), None);
        assert_eq!(at(&t, "2001:db8:1::5"), Some("vip"));
        assert_eq!(at(&t, "2001:db8:2::5"), Some("all"));
        assert_eq!(at(&t, "2001:db9::1"), None);
        // An IPv4-mapped IPv6 address is IPv4 here.
        assert_eq!(at(&t, "::ffff:192.0.2.1"), Some("all"));
    }

    proptest::proptest! {
        /// Any prefixes, any address: the answer of a brute-force longest
        /// match (which the /16 bitmap must never cut short).
        #[test]
        fn matches_brute_force(
            prefixes in proptest::collection::vec((proptest::prelude::any::<u32>(), 0u8..=32), 1..12),
            probes in proptest::collection::vec(proptest::prelude::any::<u32>(), 64),
        ) {
            let nets: Vec<ipnet::Ipv4Net> = prefixes
                .iter()
                .map(|&(a, l)| ipnet::Ipv4Net::new(a.into(), l).unwrap().trunc())
                .collect();
            let groups: Vec<Hostgroup> = nets
                .iter()
                .enumerate()
                .map(|(i, n)| group(&format!("g{i}"), &[&n.to_string()]))
                .collect();
            let t = Hostgroups::new(&groups);
            // Probe each prefix's first address too, and random ones.
            let addrs = probes.iter().copied().chain(nets.iter().map(|n| u32::from(n.network())));
            for a in addrs {
                let ip = std::net::Ipv4Addr::from(a);
                // Same length: the later group wins the map insert.
                let want = nets
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.contains(&ip))
                    .max_by_key(|(i, n)| (n.prefix_len(), *i))
                    .map(|(i, _)| format!("g{i}"));
                let got = t.lookup(&Addr::v4(ip.octets())).map(|g| t.name(g).to_owned());
                proptest::prop_assert_eq!(got, want, "{}", ip);
            }
        }
    }
}
