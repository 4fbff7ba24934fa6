//! Log output: plain `tracing` lines on stdout, which journald collects when
//! systemd runs levee. The filter comes from `[log] level` (or `LEVEE_LOG`,
//! which wins) and follows config reloads through [`LogHandle`]. Whatever
//! it says, the audit head (target [`AUDIT_HEAD`]) is always logged: it is
//! the copy of the chain's head outside the store that `levee audit verify
//! --head` checks an export against.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the log filter of the running process.
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    from_env: bool,
}

/// The target the audit head is logged under.
pub const AUDIT_HEAD: &str = "levee::audit_head";

fn filter(level: &str) -> (EnvFilter, bool) {
    let (f, from_env) = match std::env::var("LEVEE_LOG") {
        Ok(env) if !env.trim().is_empty() => (EnvFilter::new(env), true),
        _ => (parse(level), false),
    };
    (with_audit_head(f), from_env)
}

fn parse(level: &str) -> EnvFilter {
    EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// `f`, and the audit head at `info` whatever `f` says.
fn with_audit_head(f: EnvFilter) -> EnvFilter {
    match format!("{AUDIT_HEAD}=info").parse() {
        Ok(d) => f.add_directive(d),
        Err(_) => f,
    }
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(level: &str) -> LogHandle {
    let (f, from_env) = filter(level);
    let (layer, handle) = reload::Layer::new(f);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .with_target(true);
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init();
    LogHandle { handle, from_env }
}

impl LogHandle {
    /// Applies a new `[log] level` unless `LEVEE_LOG` pins the filter.
    pub fn set_level(&self, level: &str) {
        if self.from_env {
            return;
        }
        if let Ok(f) = EnvFilter::try_new(level) {
            let _ = self.handle.reload(with_audit_head(f));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_audit_head_is_logged_whatever_the_level() {
        let out = Lines::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::registry()
            .with(with_audit_head(parse("warn")))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || w.clone())
                    .with_ansi(false),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "levee::audit_head", seq = 3, "Audit head");
            tracing::info!("an ordinary info line");
            tracing::warn!("a warning");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("Audit head seq=3"), "{text}");
        assert!(text.contains("a warning"), "{text}");
        assert!(!text.contains("ordinary"), "{text}");
    }
}
