//! Dynamic baselines (DET-2): for each host, an exponentially weighted mean
//! and deviation of its inbound pps and bps, one sample per second.
//!
//! Seconds without traffic count as zeros (decayed in closed form when the
//! host reappears), so a quiet host's baseline falls. A baseline may trigger
//! once it has `learning` seconds of history; attack seconds never enter it
//! (the detector only feeds seconds with no incident). It is small and
//! `Copy` so it can be saved and restored (a restart does not relearn).

use serde::{Deserialize, Serialize};

/// EWMA mean and variance of one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    pub mean: f64,
    pub var: f64,
}

impl Ewma {
    #[inline]
    fn update(&mut self, x: f64, alpha: f64) {
        // West's incremental form: the variance follows the mean.
        let d = x - self.mean;
        let incr = alpha * d;
        self.mean += incr;
        self.var = (1.0 - alpha) * (self.var + d * incr);
    }

    /// `n` seconds of zero traffic at once.
    fn decay(&mut self, n: u64, alpha: f64) {
        if n == 0 {
            return;
        }
        if n <= 64 {
            for _ in 0..n {
                self.update(0.0, alpha);
            }
        } else {
            let k = (1.0 - alpha).powf(n as f64);
            self.mean *= k;
            self.var *= k;
        }
    }

    pub fn dev(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// One host's baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub pps: Ewma,
    pub bps: Ewma,
    /// Seconds of history.
    pub seconds: u64,
    /// The last second fed.
    pub last: u64,
}

/// How baselines learn and trigger.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub alpha: f64,
    pub learning_s: u64,
    pub sigma: f64,
    pub floor_pps: f64,
    pub floor_bps: f64,
}

impl Baseline {
    /// Feeds second `s` (seconds since `last` without traffic were zeros).
    pub fn feed(&mut self, s: u64, pps: f64, bps: f64, p: &Params) {
        if self.seconds > 0 && s > self.last + 1 {
            let gap = s - self.last - 1;
            self.pps.decay(gap, p.alpha);
            self.bps.decay(gap, p.alpha);
            self.seconds += gap;
        }
        if self.seconds == 0 {
            // Start from the first observation, not from zero.
            self.pps.mean = pps;
            self.bps.mean = bps;
        }
        self.pps.update(pps, p.alpha);
        self.bps.update(bps, p.alpha);
        self.seconds += 1;
        self.last = s;
    }

    /// The dynamic thresholds (pps, bps), once learnt.
    pub fn limits(&self, p: &Params) -> Option<(f64, f64)> {
        (self.seconds >= p.learning_s).then(|| {
            (
                (self.pps.mean + p.sigma * self.pps.dev()).max(p.floor_pps),
                (self.bps.mean + p.sigma * self.bps.dev()).max(p.floor_bps),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        alpha: 1.0 / 60.0,
        learning_s: 60,
        sigma: 4.0,
        floor_pps: 1000.0,
        floor_bps: 1e6,
    };

    #[test]
    fn a_steady_host_learns_its_level() {
        let mut b = Baseline::default();
        for s in 0..600 {
            let noise = ((s * 37) % 11) as f64 * 100.0;
            b.feed(s, 40_000.0 + noise, 4e8, &P);
        }
        let (pps, _) = b.limits(&P).unwrap();
        assert!(pps > 41_000.0 && pps < 45_000.0, "{pps}");
        assert!((b.pps.mean - 40_500.0).abs() < 300.0);
    }

    #[test]
    fn no_verdict_before_learning_and_floors_hold() {
        let mut b = Baseline::default();
        for s in 0..59 {
            b.feed(s, 10.0, 1e3, &P);
        }
        assert!(b.limits(&P).is_none());
        b.feed(59, 10.0, 1e3, &P);
        assert_eq!(b.limits(&P), Some((1000.0, 1e6)));
    }

    #[test]
    fn quiet_seconds_lower_the_baseline() {
        let mut b = Baseline::default();
        for s in 0..100 {
            b.feed(s, 5_000.0, 1e7, &P);
        }
        b.feed(1_000, 5_000.0, 1e7, &P);
        assert!(b.pps.mean < 500.0, "{}", b.pps.mean);
        assert_eq!(b.seconds, 1_001);
    }
}
