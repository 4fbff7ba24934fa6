//! A typed, position-keeping walk over a parsed TOML document.
//!
//! This module owns how configuration values are read out of TOML: every value
//! is taken with the span it came from, every problem becomes a [`Diag`] at
//! that span, and reading goes on after an error so one `check-config` run
//! reports everything that is wrong, not only the first thing.
//!
//! Unknown keys need no separate schema: a [`TableReader`] remembers which keys
//! the loader asked for, and [`TableReader::finish`] reports the rest, with a
//! "did you mean" drawn from the keys that were asked for.
//!
//! It never decides what a value means; the loader in `config/mod.rs` does.

use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in the file, at a byte range of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub span: Range<usize>,
    pub message: String,
}

/// Collects diagnostics while a document is read.
#[derive(Debug, Default)]
pub struct Diags {
    list: Vec<Diag>,
}

impl Diags {
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.list.push(Diag {
            span,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The diagnostics in source order (the order an editor shows them).
    pub fn into_sorted(mut self) -> Vec<Diag> {
        self.list.sort_by_key(|d| (d.span.start, d.span.end));
        self.list.dedup();
        self.list
    }
}

/// The best-matching known key for a misspelt one, if any is close enough.
pub fn did_you_mean<'a>(
    unknown: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (unknown.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The TOML type name used in messages ("expected a string, found an integer").
fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Reads the keys of one TOML table. `name` is how messages refer to the
/// table: `[web]`, `[[hostgroup]] "customers"`, or the empty string for the
/// top level.
pub struct TableReader<'t, 'i> {
    table: &'t DeTable<'i>,
    name: String,
    asked: Vec<&'static str>,
}

impl<'t, 'i> TableReader<'t, 'i> {
    pub fn new(table: &'t DeTable<'i>, name: impl Into<String>) -> Self {
        Self {
            table,
            name: name.into(),
            asked: Vec::new(),
        }
    }

    /// Where a key lives, for messages: "`pps` in [hostgroup.thresholds]".
    pub fn describe(&self, key: &str) -> String {
        if self.name.is_empty() {
            format!("`{key}`")
        } else {
            format!("`{key}` in {}", self.name)
        }
    }

    /// The raw value of `key`, marking the key as known.
    pub fn value(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.asked.push(key);
        self.table.get(key)
    }

    /// The span of `key` itself (not its value), when present.
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table
            .keys()
            .find(|k| k.get_ref() == key)
            .map(|k| k.span())
    }

    fn wrong_type(&self, d: &mut Diags, key: &str, v: &Spanned<DeValue<'_>>, want: &str) {
        d.error(
            v.span(),
            format!(
                "{} must be {want}, found {}",
                self.describe(key),
                type_name(v.get_ref())
            ),
        );
    }

    pub fn string(&mut self, d: &mut Diags, key: &'static str) -> Option<Spanned<String>> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Spanned::new(v.span(), s.to_string())),
            _ => {
                self.wrong_type(d, key, v, "a string");
                None
            }
        }
    }

    /// One of a few words (`"keep"` or `"withdraw"`), as its value; any
    /// other string is an error naming them.
    pub fn choice<T: Copy>(
        &mut self,
        d: &mut Diags,
        key: &'static str,
        words: &[(&str, T)],
    ) -> Option<T> {
        let s = self.string(d, key)?;
        if let Some((_, v)) = words.iter().find(|(w, _)| *w == s.get_ref().as_str()) {
            return Some(*v);
        }
        let named: Vec<String> = words.iter().map(|(w, _)| format!("{w:?}")).collect();
        d.error(
            s.span(),
            format!(
                "{} is {}, not {:?}",
                self.describe(key),
                named.join(" or "),
                s.get_ref()
            ),
        );
        None
    }

    pub fn bool(&mut self, d: &mut Diags, key: &'static str) -> Option<bool> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(d, key, v, "true or false");
                None
            }
        }
    }

    /// A strictly positive integer: thresholds, limits, sizes.
    pub fn positive(&mut self, d: &mut Diags, key: &'static str) -> Option<Spanned<u64>> {
        let v = self.value(key)?;
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(d, key, v, "a positive integer");
            return None;
        };
        match i128::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if n > 0 && n <= i128::from(u64::MAX) => Some(Spanned::new(v.span(), n as u64)),
            Ok(n) => {
                d.error(
                    v.span(),
                    format!("{} must be a positive integer, got {n}", self.describe(key)),
                );
                None
            }
            Err(_) => {
                d.error(v.span(), format!("{} is out of range", self.describe(key)));
                None
            }
        }
    }

    /// A number (integer or decimal) greater than zero.
    pub fn positive_number(&mut self, d: &mut Diags, key: &'static str) -> Option<f64> {
        let v = self.value(key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            _ => {
                self.wrong_type(d, key, v, "a positive number");
                return None;
            }
        };
        match n {
            Some(n) if n > 0.0 && n.is_finite() => Some(n),
            _ => {
                d.error(
                    v.span(),
                    format!("{} must be a positive number", self.describe(key)),
                );
                None
            }
        }
    }

    /// A humantime duration ("30s", "5m", "1h 30m") that is longer than zero.
    pub fn duration(&mut self, d: &mut Diags, key: &'static str) -> Option<Spanned<Duration>> {
        let s = self.string(d, key)?;
        match humantime::parse_duration(s.get_ref()) {
            Ok(dur) if !dur.is_zero() => Some(Spanned::new(s.span(), dur)),
            Ok(_) => {
                d.error(
                    s.span(),
                    format!("{} must be longer than zero", self.describe(key)),
                );
                None
            }
            Err(e) => {
                d.error(
                    s.span(),
                    format!(
                        "{} is not a duration (`{}`: {e}); write e.g. \"30s\", \"5m\", \"1h\"",
                        self.describe(key),
                        s.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// An array of strings, each with its own span.
    pub fn strings(&mut self, d: &mut Diags, key: &'static str) -> Option<Vec<Spanned<String>>> {
        let v = self.value(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(d, key, v, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                other => d.error(
                    item.span(),
                    format!(
                        "{} must hold strings, found {}",
                        self.describe(key),
                        type_name(other)
                    ),
                ),
            }
        }
        Some(out)
    }

    /// A sub-table (`[web]` under the top level, `[hostgroup.thresholds]`
    /// under a hostgroup). `child_name` is how messages name it.
    pub fn table(
        &mut self,
        d: &mut Diags,
        key: &'static str,
        child_name: &str,
    ) -> Option<TableReader<'t, 'i>> {
        let v = self.value(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(TableReader::new(t, child_name)),
            _ => {
                self.wrong_type(d, key, v, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[hostgroup]]`).
    pub fn tables(
        &mut self,
        d: &mut Diags,
        key: &'static str,
    ) -> Vec<(Range<usize>, &'t DeTable<'i>)> {
        let Some(v) = self.value(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(d, key, v, &format!("an array of tables ([[{key}]])"));
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push((item.span(), t)),
                other => d.error(
                    item.span(),
                    format!(
                        "{} must hold tables, found {}",
                        self.describe(key),
                        type_name(other)
                    ),
                ),
            }
        }
        out
    }

    /// Reports every key that was never asked for as unknown.
    pub fn finish(self, d: &mut Diags) {
        for key in self.table.keys() {
            let k = key.get_ref().as_ref();
            if self.asked.contains(&k) {
                continue;
            }
            let mut msg = format!("unknown key {}", self.describe(k));
            if let Some(best) = did_you_mean(k, self.asked.iter().copied()) {
                msg.push_str(&format!("; did you mean `{best}`?"));
            }
            d.error(key.span(), msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_or_absent() {
        let known = ["pps", "bps", "flows", "listen"];
        assert_eq!(did_you_mean("ppss", known), Some("pps"));
        assert_eq!(did_you_mean("lisen", known), Some("listen"));
        assert_eq!(did_you_mean("colour", known), None);
    }
}
