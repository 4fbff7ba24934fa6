//! Prometheus text exposition (format 0.0.4): the writer every subsystem
//! describes its own metrics with (`write_metrics` of the data plane, the
//! collectors and the mitigation task); `web::metrics` puts the page
//! together.

use std::fmt::{Display, Write as _};

/// Writes metric families and samples with escaped label values.
pub struct Prom {
    out: String,
}

impl Prom {
    /// An empty page.
    pub fn new() -> Prom {
        Prom {
            out: String::with_capacity(4096),
        }
    }

    /// The page written.
    pub fn finish(self) -> String {
        self.out
    }

    /// A family's `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample, label values escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A summary from an HDR histogram of `units` per second (quantiles
    /// 0.5, 0.9, 0.99 and the count), with `decimals` places of seconds.
    pub fn summary(
        &mut self,
        name: &str,
        help: &str,
        h: &std::sync::Mutex<Option<hdrhistogram::Histogram<u64>>>,
        units: f64,
        decimals: usize,
    ) {
        self.family(name, "summary", help);
        let h = h.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = h.as_ref() {
            for q in [0.5, 0.9, 0.99] {
                self.sample(
                    name,
                    &[("quantile", &q.to_string())],
                    format!("{:.decimals$}", h.value_at_quantile(q) as f64 / units),
                );
            }
            self.sample(&format!("{name}_count"), &[], h.len());
        }
    }
}

impl Default for Prom {
    fn default() -> Self {
        Prom::new()
    }
}
