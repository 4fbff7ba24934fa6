//! Log output: plain `tracing` lines on stdout, which journald collects when
//! systemd runs levee. The filter comes from `[log] level` (or `LEVEE_LOG`,
//! which wins) and follows config reloads through [`LogHandle`].

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the log filter of the running process.
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    from_env: bool,
}

fn filter(level: &str) -> (EnvFilter, bool) {
    match std::env::var("LEVEE_LOG") {
        Ok(env) if !env.trim().is_empty() => (EnvFilter::new(env), true),
        _ => (
            EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
            false,
        ),
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
            let _ = self.handle.reload(f);
        }
    }
}
