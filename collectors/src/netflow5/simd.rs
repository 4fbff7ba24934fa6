//! Vector paths of the NetFlow v5 record loop, chosen at run time by what
//! the CPU has ([`Path::best`]); [`super::write`] is the portable one and
//! the reference the tests hold these to (same records, same skew count).
//!
//! A v5 record is fixed: every `FlowRecord` byte comes from a fixed input
//! byte, a header constant, or one of three sums (time, duration, counts ×
//! rate). So instead of one store per field, each path gathers whole
//! pieces of the `FlowRecord` with byte shuffles and stores those:
//! - SSSE3 (`pshufb`, any x86-64 server of the last fifteen years): six
//!   16-byte pieces and the time, ~1.7× the portable path;
//! - AVX-512 VBMI (`vpermi2b`, Ice Lake and Zen 4 onwards): the record's
//!   last 64 bytes in one two-table shuffle of the record and the
//!   datagram's constants, the first 32 in one more; ~2.4× the portable
//!   path.
//!
//! The stores write a `FlowRecord` by byte offset: its layout is checked
//! at compile time below (`repr(C)`, no padding, every byte pattern valid).

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of, MaybeUninit};
use std::sync::OnceLock;

use super::{duration, first_last, placed, Head, RECORD};
use crate::record::{proto, FlowRecord};

const _: () = {
    assert!(size_of::<FlowRecord>() == 96);
    assert!(std::mem::align_of::<FlowRecord>() == 32);
    assert!(offset_of!(FlowRecord, time_ms) == 0);
    assert!(offset_of!(FlowRecord, packets) == 8);
    assert!(offset_of!(FlowRecord, bytes) == 16);
    assert!(offset_of!(FlowRecord, src) == 24);
    assert!(offset_of!(FlowRecord, dst) == 40);
    assert!(offset_of!(FlowRecord, exporter) == 56);
    assert!(offset_of!(FlowRecord, sampling) == 72);
    assert!(offset_of!(FlowRecord, in_if) == 76);
    assert!(offset_of!(FlowRecord, out_if) == 80);
    assert!(offset_of!(FlowRecord, src_port) == 84);
    assert!(offset_of!(FlowRecord, dst_port) == 86);
    assert!(offset_of!(FlowRecord, protocol) == 88);
    assert!(offset_of!(FlowRecord, tcp_flags) == 89);
    assert!(offset_of!(FlowRecord, ttl) == 90);
    assert!(offset_of!(FlowRecord, icmp_type) == 91);
    assert!(offset_of!(FlowRecord, icmp_code) == 92);
    assert!(offset_of!(FlowRecord, flags) == 93);
    assert!(offset_of!(FlowRecord, duration_s) == 94);
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Portable,
    Ssse3,
    Avx512,
}

/// A record loop this CPU runs. Made only by [`Path::best`] and (in tests)
/// [`Path::available`], which check the CPU for the loop's features: that
/// is what makes [`Path::write`] safe to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Path(Kind);

impl Path {
    /// The fastest loop this CPU runs: detected once, then one load.
    #[inline]
    pub(super) fn best() -> Path {
        static BEST: OnceLock<Kind> = OnceLock::new();
        Path(*BEST.get_or_init(|| {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vbmi")
            {
                Kind::Avx512
            } else if is_x86_feature_detected!("ssse3") {
                Kind::Ssse3
            } else {
                Kind::Portable
            }
        }))
    }

    /// Every loop this CPU runs.
    #[cfg(test)]
    fn available() -> Vec<Path> {
        let mut paths = vec![Path(Kind::Portable)];
        if is_x86_feature_detected!("ssse3") {
            paths.push(Path(Kind::Ssse3));
        }
        if Path::best().0 == Kind::Avx512 {
            paths.push(Path(Kind::Avx512));
        }
        paths
    }

    /// [`super::write`] with this loop: the same contract and result.
    #[inline]
    pub(super) fn write(
        self,
        records: &[[u8; RECORD]],
        h: &Head,
        slots: &mut [MaybeUninit<FlowRecord>],
    ) -> u64 {
        match self.0 {
            Kind::Portable => super::write(records, h, slots),
            // SAFETY: a `Path` is made only for a loop the CPU runs.
            Kind::Ssse3 => unsafe { ssse3(records, h, slots) },
            Kind::Avx512 => unsafe { avx512(records, h, slots) },
        }
    }
}

/// A `pshufb` index that clears its byte.
const Z: i8 = -128;

/// SSSE3 masks. Input registers: `a` = record bytes 0..16 (addresses, next
/// hop, interfaces), `b` = 16..32 (counts, first, last), `c` = 32..48
/// (ports, flags, protocol, …). Each mask lists, per output byte, the
/// input byte it takes: little-endian output fields from big-endian input.
mod mask {
    use super::Z;
    /// Packets and bytes as u64 lanes (the high halves do not matter:
    /// `pmuludq` reads only the low ones), from `b`.
    pub const COUNTS: [i8; 16] = [3, 2, 1, 0, Z, Z, Z, Z, 7, 6, 5, 4, Z, Z, Z, Z];
    /// IPv4-mapped source and destination from `a` (the 0xffff is or-ed in).
    pub const SRC: [i8; 16] = [Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, 0, 1, 2, 3];
    pub const DST: [i8; 16] = [Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, 4, 5, 6, 7];
    /// Bytes 72..80 from `a`: sampling (or-ed in), in_if.
    pub const IN_IF: [i8; 16] = [Z, Z, Z, Z, 13, 12, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z];
    /// Bytes 80..96: out_if from `a` …
    pub const OUT_IF: [i8; 16] = [15, 14, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z];
    /// … and ports, protocol, TCP flags from `c` (the duration is inserted
    /// after); for ICMP no ports, but type and code from the destination port.
    pub const TAIL: [[i8; 16]; 2] = [
        [Z, Z, Z, Z, 1, 0, 3, 2, 6, 5, Z, Z, Z, Z, Z, Z],
        [Z, Z, Z, Z, Z, Z, Z, Z, 6, 5, Z, 2, 3, Z, Z, Z],
    ];
}

#[inline(always)]
fn load(m: &[i8; 16]) -> __m128i {
    // SAFETY: 16 readable bytes; SSE2 is part of x86-64.
    unsafe { _mm_loadu_si128(m.as_ptr().cast()) }
}

/// # Safety
/// The CPU must have SSSE3.
#[target_feature(enable = "ssse3")]
unsafe fn ssse3(records: &[[u8; RECORD]], h: &Head, slots: &mut [MaybeUninit<FlowRecord>]) -> u64 {
    let counts = load(&mask::COUNTS);
    let (src, dst) = (load(&mask::SRC), load(&mask::DST));
    let mapped = _mm_set_epi32(0, 0xffff_0000_u32 as i32, 0, 0); // bytes 10..12
    let (in_if, out_if) = (load(&mask::IN_IF), load(&mask::OUT_IF));
    let tails = [load(&mask::TAIL[0]), load(&mask::TAIL[1])];
    let rate = _mm_set1_epi64x(i64::from(h.rate));
    let sampling = _mm_set_epi32(0, 0, 0, h.rate as i32);
    // SAFETY: 16 readable bytes.
    let exporter = unsafe { _mm_loadu_si128(h.exporter.0.as_ptr().cast()) };
    let mut skewed = 0;
    for (slot, rec) in slots.iter_mut().zip(records) {
        // SAFETY: `rec` has 48 readable bytes.
        let (a, b, c) = unsafe {
            let p = rec.as_ptr().cast::<__m128i>();
            (
                _mm_loadu_si128(p),
                _mm_loadu_si128(p.add(1)),
                _mm_loadu_si128(p.add(2)),
            )
        };
        let (first, last) = first_last(rec);
        let (time, skew) = placed(h, last);
        skewed += u64::from(skew);
        let mask = tails[usize::from(rec[38] == proto::ICMP)];
        let tail = _mm_or_si128(_mm_shuffle_epi8(a, out_if), _mm_shuffle_epi8(c, mask));
        let tail = _mm_insert_epi16::<7>(tail, i32::from(duration(first, last)));
        let p = slot.as_mut_ptr().cast::<u8>();
        // SAFETY: every store is inside the slot's 96 bytes (offsets
        // checked above); together they write all of it.
        unsafe {
            p.cast::<u64>().write_unaligned(time);
            let counts = _mm_mul_epu32(_mm_shuffle_epi8(b, counts), rate);
            _mm_storeu_si128(p.add(8).cast(), counts);
            let src = _mm_or_si128(_mm_shuffle_epi8(a, src), mapped);
            _mm_storeu_si128(p.add(24).cast(), src);
            let dst = _mm_or_si128(_mm_shuffle_epi8(a, dst), mapped);
            _mm_storeu_si128(p.add(40).cast(), dst);
            _mm_storeu_si128(p.add(56).cast(), exporter);
            let in_if = _mm_or_si128(_mm_shuffle_epi8(a, in_if), sampling);
            _mm_storel_epi64(p.add(72).cast(), in_if);
            _mm_storeu_si128(p.add(80).cast(), tail);
        }
    }
    skewed
}

/// AVX-512 tables. `vpermi2b` indices 0..63 take a record byte, 64..127 a
/// byte of the datagram's constants (built in [`avx512`]).
mod table {
    /// Constants' bytes: the exporter at 0..16, the sampling rate
    /// (little-endian) at 16..20, then 0xff and 0.
    pub const EXPORTER: u8 = 64;
    pub const SAMPLING: u8 = 64 + 16;
    pub const FF: u8 = 64 + 20;
    pub const O: u8 = 64 + 21;

    const fn hi(icmp: bool) -> [u8; 64] {
        let mut t = [O; 64];
        // Output byte i is FlowRecord byte 32 + i.
        // src bytes 8..16: 0, 0, ff, ff, address.
        t[2] = FF;
        t[3] = FF;
        let mut i = 0;
        while i < 4 {
            t[4 + i] = i as u8; // source address
            t[20 + i] = 4 + i as u8; // destination address (dst bytes 12..16)
            i += 1;
        }
        t[18] = FF; // dst bytes 10, 11
        t[19] = FF;
        let mut i = 0;
        while i < 16 {
            t[24 + i] = EXPORTER + i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 4 {
            t[40 + i] = SAMPLING + i as u8;
            i += 1;
        }
        t[44] = 13; // in_if, little-endian from a big-endian u16
        t[45] = 12;
        t[48] = 15; // out_if
        t[49] = 14;
        if icmp {
            t[59] = 34; // ICMP type and code from the destination port
            t[60] = 35;
        } else {
            t[52] = 33; // ports
            t[53] = 32;
            t[54] = 35;
            t[55] = 34;
        }
        t[56] = 38; // protocol
        t[57] = 37; // TCP flags

        // 58 (ttl) and 61 (flags) stay 0; 62..64, the duration, is stored after.
        t
    }

    /// FlowRecord bytes 32..96, for other protocols and for ICMP.
    pub const HI: [[u8; 64]; 2] = [hi(false), hi(true)];

    /// FlowRecord bytes 0..32 before the multiplication: packets and bytes
    /// zero-extended in u64 lanes 1 and 2 ([`LO_KEEP`]'s bytes; the others
    /// are cleared: the time is stored after, src bytes 0..8 are 0).
    pub const LO: [u8; 32] = {
        let mut t = [0; 32];
        let mut i = 0;
        while i < 4 {
            t[8 + i] = 19 - i as u8;
            t[16 + i] = 23 - i as u8;
            i += 1;
        }
        t
    };
    pub const LO_KEEP: u32 = 0x000f_0f00;
}

/// # Safety
/// The CPU must have AVX-512 F, BW, VL and VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn avx512(records: &[[u8; RECORD]], h: &Head, slots: &mut [MaybeUninit<FlowRecord>]) -> u64 {
    // The datagram's constants for `table::HI`, built in registers (bytes
    // stored apart and loaded as one vector would wait on the stores).
    // SAFETY (all loads here): 16, 64 or 32 readable bytes.
    let exporter = unsafe { _mm_loadu_si128(h.exporter.0.as_ptr().cast()) };
    let sampling = _mm_set_epi32(0, 0, 0xff, h.rate as i32);
    let k = _mm512_inserti32x4::<1>(_mm512_zextsi128_si512(exporter), sampling);
    let hi = unsafe {
        [
            _mm512_loadu_si512(table::HI[0].as_ptr().cast()),
            _mm512_loadu_si512(table::HI[1].as_ptr().cast()),
        ]
    };
    let lo = unsafe { _mm256_loadu_si256(table::LO.as_ptr().cast()) };
    let rate = _mm256_set1_epi64x(i64::from(h.rate));
    let mut skewed = 0;
    for (slot, rec) in slots.iter_mut().zip(records) {
        // SAFETY: the mask loads exactly the record's 48 bytes.
        let r = unsafe { _mm512_maskz_loadu_epi8((1 << RECORD) - 1, rec.as_ptr().cast()) };
        let (first, last) = first_last(rec);
        let (time, skew) = placed(h, last);
        skewed += u64::from(skew);
        let idx = hi[usize::from(rec[38] == proto::ICMP)];
        let top = _mm512_permutex2var_epi8(r, idx, k);
        let counts = _mm256_mul_epu32(
            _mm256_maskz_permutexvar_epi8(table::LO_KEEP, lo, _mm512_castsi512_si256(r)),
            rate,
        );
        let p = slot.as_mut_ptr().cast::<u8>();
        // SAFETY: every store is inside the slot's 96 bytes (offsets
        // checked above); together they write all of it, the scalar ones
        // last over the bytes the vectors left for them.
        unsafe {
            _mm256_storeu_si256(p.cast(), counts);
            _mm512_storeu_si512(p.add(32).cast(), top);
            p.cast::<u64>().write_unaligned(time);
            p.add(94)
                .cast::<u16>()
                .write_unaligned(duration(first, last));
        }
    }
    skewed
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;

    use proptest::prelude::*;

    use super::{Head, Kind, Path, RECORD};
    use crate::record::{Addr, FlowRecord};

    /// The records and skew count one path writes.
    fn run(path: Path, records: &[[u8; RECORD]], h: &Head) -> (Vec<FlowRecord>, u64) {
        // Slots start as garbage, so a byte a path forgot shows up.
        let mut slots = vec![MaybeUninit::new(garbage()); records.len()];
        let skewed = path.write(records, h, &mut slots);
        // SAFETY: `write` initialised every slot (and they started initialised).
        let out = slots.iter().map(|s| unsafe { s.assume_init() }).collect();
        (out, skewed)
    }

    fn garbage() -> FlowRecord {
        FlowRecord {
            time_ms: u64::MAX,
            packets: u64::MAX,
            bytes: u64::MAX,
            src: Addr([0xa5; 16]),
            dst: Addr([0xa5; 16]),
            exporter: Addr([0xa5; 16]),
            sampling: u32::MAX,
            in_if: u32::MAX,
            out_if: u32::MAX,
            src_port: u16::MAX,
            dst_port: u16::MAX,
            protocol: 0xa5,
            tcp_flags: 0xa5,
            ttl: 0xa5,
            icmp_type: 0xa5,
            icmp_code: 0xa5,
            flags: 0xa5,
            duration_s: u16::MAX,
        }
    }

    fn record() -> impl Strategy<Value = [u8; RECORD]> {
        // Arbitrary bytes, with ICMP, TCP and UDP protocols common and
        // `Last` sometimes near the uptime (plausible ages).
        (
            proptest::array::uniform32(any::<u8>()),
            proptest::array::uniform16(any::<u8>()),
            prop_oneof![Just(1u8), Just(6), Just(17), any::<u8>()],
        )
            .prop_map(|(a, b, protocol)| {
                let mut r = [0; RECORD];
                r[..32].copy_from_slice(&a);
                r[32..].copy_from_slice(&b);
                r[38] = protocol;
                r
            })
    }

    proptest! {
        /// Every vector path this CPU runs writes exactly the records and
        /// skew count of the portable path.
        #[test]
        fn every_path_writes_the_portable_records(
            records in proptest::collection::vec(record(), 0..31),
            uptime in prop_oneof![any::<u32>(), 0..5_000u32],
            age_near in any::<bool>(),
            now in prop_oneof![any::<u64>(), 0..10_000u64],
            rate in prop_oneof![Just(1u32), 1..0x4000u32],
            exporter in any::<[u8; 16]>(),
        ) {
            let mut records = records;
            if age_near {
                for r in &mut records {
                    let last = uptime.wrapping_sub(u32::from(r[29]) * 1000);
                    r[28..32].copy_from_slice(&last.to_be_bytes());
                }
            }
            let h = Head { uptime, rate, exporter: Addr(exporter), now };
            let want = run(Path(Kind::Portable), &records, &h);
            for path in Path::available() {
                prop_assert_eq!(&run(path, &records, &h), &want, "{:?}", path);
            }
        }
    }

    #[test]
    fn this_cpu_runs_its_best_path() {
        assert!(Path::available().contains(&Path::best()));
    }
}
