//! Dynamic baselines (DET-2): for each host, an exponentially weighted mean
//! and deviation of its inbound pps and bps, one sample per second.
//!
//! Seconds without traffic count as zeros (decayed in closed form when the
//! host reappears), so a quiet host's baseline falls. A baseline may trigger
//! once it has `learning` seconds of history; attack seconds never enter it
//! (the detector only feeds seconds with no incident). It is small and
//! `Copy` so it can be saved and restored (a restart does not relearn).
//!
//! An attacker who knows the baseline can try to pump it — bursts just
//! under the limit, or a slow ramp the mean follows. So each second is fed
//! to the window's average clipped to its mean plus half the trigger
//! distance (or a quarter above its mean, so a quiet host can grow); the
//! variance may grow at most fourfold (the deviation twofold) per window;
//! and the limits never rise above a ceiling from a far longer average
//! (`ceiling_window`, a day by default) — bias-corrected moments, so a
//! young one is the plain average of what it has seen — fed each second
//! clipped to its own mean plus half its trigger distance. A ramp the
//! window follows meets the ceiling, which rises only about two of its
//! deviations per ceiling window (measured: a tenfold ramp over 48 hours
//! on a host learnt for a day crosses at +28 %, 89 minutes in; with the
//! ceiling fed what the window is fed, it never did). Its price: a
//! legitimate step up stays over the ceiling longer — and a baseline
//! incident on it does not end while the step lasts, as seconds of an
//! incident are never learnt; the
//! static thresholds are the backstop both ways.

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

/// A long-term average kept as bias-corrected moments: EWMAs of x and x²
/// started from zero and divided by the share of the window their
/// seconds have filled, so a young one is the plain average of what it
/// has seen (an EWMA started from its first observation would hold that
/// one second for most of a window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub m1: f64,
    pub m2: f64,
    /// Seconds fed (zeros of a gap included).
    pub seconds: u64,
}

impl Moments {
    fn update(&mut self, x: f64, alpha: f64) {
        self.m1 += alpha * (x - self.m1);
        self.m2 += alpha * (x * x - self.m2);
        self.seconds += 1;
    }

    fn decay(&mut self, n: u64, alpha: f64) {
        let k = (1.0 - alpha).powf(n as f64);
        self.m1 *= k;
        self.m2 *= k;
        self.seconds += n;
    }

    fn seen(&self, alpha: f64) -> f64 {
        (1.0 - (1.0 - alpha).powf(self.seconds as f64)).max(1e-12)
    }

    pub fn mean(&self, alpha: f64) -> f64 {
        self.m1 / self.seen(alpha)
    }

    pub fn dev(&self, alpha: f64) -> f64 {
        let m = self.mean(alpha);
        (self.m2 / self.seen(alpha) - m * m).max(0.0).sqrt()
    }
}

/// One host's baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub pps: Ewma,
    pub bps: Ewma,
    /// The long-term averages the limits never rise above (a baseline
    /// saved before they existed learns them afresh).
    #[serde(default)]
    pub ceiling_pps: Moments,
    #[serde(default)]
    pub ceiling_bps: Moments,
    /// Seconds of history.
    pub seconds: u64,
    /// The last second fed.
    pub last: u64,
}

/// How baselines learn and trigger.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub alpha: f64,
    /// The long-term average's weight per second.
    pub long_alpha: f64,
    pub learning_s: u64,
    pub sigma: f64,
    pub floor_pps: f64,
    pub floor_bps: f64,
}

/// `x` clipped for feeding the window's average: at most the mean plus
/// half the trigger distance, or a quarter above the mean (so a host with
/// next to no deviation can grow), and at least the floor (so a quiet
/// start can learn).
fn clipped(e: &Ewma, x: f64, sigma: f64, floor: f64) -> f64 {
    x.min(
        (e.mean + sigma / 2.0 * e.dev())
            .max(1.25 * e.mean)
            .max(floor),
    )
}

/// `x` clipped for feeding a ceiling: once it has `learning_s` of
/// history, at most its mean plus half its trigger distance (at least the
/// floor); until then as the window's average is fed (`early`).
fn clipped_ceiling(c: &Moments, x: f64, early: f64, p: &Params, floor: f64) -> f64 {
    if c.seconds < p.learning_s {
        return early;
    }
    x.min((c.mean(p.long_alpha) + p.sigma / 2.0 * c.dev(p.long_alpha)).max(floor))
}

/// The ceiling a limit never rises above: the long-term mean plus twice
/// the trigger distance, once it has `learning_s` of history.
fn ceiling(c: &Moments, p: &Params) -> f64 {
    if c.seconds < p.learning_s {
        return f64::INFINITY;
    }
    c.mean(p.long_alpha) + 2.0 * p.sigma * c.dev(p.long_alpha)
}

/// Feeds `e` with `x`; once learnt, its variance grows at most fourfold
/// per window.
fn bounded_update(e: &mut Ewma, x: f64, alpha: f64, learnt: bool) {
    let before = e.var;
    e.update(x, alpha);
    if learnt && before > 0.0 {
        // (1 + 1.4α)^(1/α) ≈ e^1.4 ≈ 4 per window.
        e.var = e.var.min(before * (1.0 + 1.4 * alpha));
    }
}

impl Baseline {
    /// Feeds second `s` (seconds since `last` without traffic were zeros).
    pub fn feed(&mut self, s: u64, pps: f64, bps: f64, p: &Params) {
        if self.seconds > 0 && s > self.last + 1 {
            let gap = s - self.last - 1;
            self.pps.decay(gap, p.alpha);
            self.bps.decay(gap, p.alpha);
            self.ceiling_pps.decay(gap, p.long_alpha);
            self.ceiling_bps.decay(gap, p.long_alpha);
            self.seconds += gap;
        }
        if self.seconds == 0 {
            // Start from the first observation, not from zero.
            self.pps.mean = pps;
            self.bps.mean = bps;
        }
        let (cp, cb) = (
            clipped(&self.pps, pps, p.sigma, p.floor_pps),
            clipped(&self.bps, bps, p.sigma, p.floor_bps),
        );
        let learnt = self.seconds >= p.learning_s;
        let lp = clipped_ceiling(&self.ceiling_pps, pps, cp, p, p.floor_pps);
        let lb = clipped_ceiling(&self.ceiling_bps, bps, cb, p, p.floor_bps);
        bounded_update(&mut self.pps, cp, p.alpha, learnt);
        bounded_update(&mut self.bps, cb, p.alpha, learnt);
        self.ceiling_pps.update(lp, p.long_alpha);
        self.ceiling_bps.update(lb, p.long_alpha);
        self.seconds += 1;
        self.last = s;
    }

    /// The dynamic thresholds (pps, bps), once learnt: mean + sigma ×
    /// deviation, never above the long-term ceiling, never below the floors.
    pub fn limits(&self, p: &Params) -> Option<(f64, f64)> {
        let limit = |short: &Ewma, c: &Moments, floor: f64| {
            (short.mean + p.sigma * short.dev())
                .min(ceiling(c, p))
                .max(floor)
        };
        (self.seconds >= p.learning_s).then(|| {
            (
                limit(&self.pps, &self.ceiling_pps, p.floor_pps),
                limit(&self.bps, &self.ceiling_bps, p.floor_bps),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        alpha: 1.0 / 60.0,
        long_alpha: 1.0 / 86_400.0,
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

    /// An hour's window, a day's ceiling, as configured by default.
    const HOUR: Params = Params {
        alpha: 1.0 / 3600.0,
        long_alpha: 1.0 / 86_400.0,
        learning_s: 3600,
        sigma: 4.0,
        floor_pps: 5000.0,
        floor_bps: 5e7,
    };

    /// A host at 20 kpps (±1 k) for a day.
    fn steady_day() -> Baseline {
        let mut b = Baseline::default();
        for s in 0..86_400 {
            let noise = ((s * 37) % 21) as f64 * 100.0 - 1000.0;
            b.feed(s, 20_000.0 + noise, 1e8, &HOUR);
        }
        b
    }

    #[test]
    fn bursts_just_under_the_limit_do_not_pump_the_baseline() {
        let mut b = steady_day();
        let (start, _) = b.limits(&HOUR).unwrap();
        let dev = b.pps.dev();
        // An hour of bursts at 99 % of the limit every tenth second.
        for s in 86_400..90_000u64 {
            let (limit, _) = b.limits(&HOUR).unwrap();
            let pps = if s % 10 == 0 { 0.99 * limit } else { 20_000.0 };
            b.feed(s, pps, 1e8, &HOUR);
        }
        assert!(b.pps.dev() <= 2.0 * dev + 1.0, "{} → {}", dev, b.pps.dev());
        let (end, _) = b.limits(&HOUR).unwrap();
        assert!(end < 1.5 * start, "{start} → {end}");
    }

    /// The rate at which a ramp from 20 kpps to 200 kpps over `seconds`,
    /// after [`steady_day`], first passes the limit.
    fn ramp_crossing(seconds: u64) -> Option<f64> {
        let mut b = steady_day();
        for i in 0..seconds {
            let pps = 20_000.0 + 180_000.0 * i as f64 / seconds as f64;
            let (limit, _) = b.limits(&HOUR).unwrap();
            if pps > limit {
                return Some(pps);
            }
            b.feed(86_400 + i, pps, 1e8, &HOUR);
        }
        None
    }

    #[test]
    fn a_slow_ramp_crosses_the_ceiling() {
        // Over four hours: the hour-long mean follows, the day-long
        // ceiling does not.
        let at = ramp_crossing(4 * 3600).expect("the ramp crossed the limit");
        assert!(at < 100_000.0, "crossed at {at} pps");
    }

    /// A ramp slow enough for the window's average to follow it: tenfold
    /// over two days, on a host learnt for a day. Only the ceiling can see
    /// it, and only if the ramp does not feed the ceiling as well.
    #[test]
    fn a_ramp_the_window_follows_meets_the_ceiling() {
        let at = ramp_crossing(48 * 3600).expect("the ramp crossed the limit");
        assert!(at < 30_000.0, "crossed at {at} pps");
    }
}
