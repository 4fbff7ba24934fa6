//! The `levee` command line: parses arguments, calls into the library, and
//! turns outcomes into exit codes. Errors are printed here and only here
//! (`levee: <error>: <cause>`), so the library never writes to stderr itself.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use levee::audit::{self, Format};
use levee::config;
use levee::store::Store;

#[derive(Parser)]
#[command(name = "levee", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LEVEE_GIT_COMMIT"), ")"))]
#[command(about = "Flow collector appliance: DDoS detection and mitigation for border routers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(long, env = "LEVEE_CONFIG", default_value = config::DEFAULT_PATH, value_name = "PATH")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the appliance in the foreground (systemd runs it so).
    Run(ConfigArg),
    /// Check a configuration file; print PATH:LINE:COL: message per error.
    CheckConfig(ConfigArg),
    /// Run detection over recorded traffic (pcap of packets or of flow
    /// export), offline: JSON lines of incidents on stdout.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "json")]
        format: levee::replay::Format,
        /// End with a summary line (records, datagrams, errors, per-host totals).
        #[arg(long)]
        summary: bool,
        /// Capture files, replayed in order.
        #[arg(required = true, value_name = "INPUT.pcap")]
        inputs: Vec<PathBuf>,
    },
    /// Export or verify the hash-chained audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Make, list and revoke API keys (works whether levee runs or not).
    Apikey {
        #[command(subcommand)]
        cmd: ApikeyCmd,
    },
    /// Watch levee and withdraw its routes from gobgpd when it has been down
    /// for `[mitigation] dead_man` (run it as a service beside levee).
    Deadman(ConfigArg),
    /// List, announce and withdraw mitigations (through the running levee).
    Mitigation {
        #[command(subcommand)]
        cmd: MitigationCmd,
    },
    /// Whether levee runs, and what its store holds (read-only; exit 3 when
    /// levee does not answer).
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of lines of text.
        #[arg(long)]
        json: bool,
    },
    /// Check or repair the store.
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Read every entry of the store, verifying checksums, and the audit
    /// chain (read-only; works while levee runs). Exit 1 on damage.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Rebuild a damaged store from the files that are intact, keeping a
    /// copy of it first (levee must be stopped).
    Repair {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum MitigationCmd {
    /// The mitigations in force and the newest log entries.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Log entries to show.
        #[arg(long, default_value_t = 20)]
        log: usize,
        /// Print the JSON the API returns.
        #[arg(long)]
        json: bool,
    },
    /// Announce a mitigation by hand (guards apply).
    Announce {
        #[command(flatten)]
        config: ConfigArg,
        /// The host to protect.
        host: std::net::IpAddr,
        /// flowspec, rtbh or scrubbing.
        #[arg(long)]
        level: String,
        /// How long before it is withdrawn by itself.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// FlowSpec: IP protocol numbers to match.
        #[arg(long = "protocol")]
        protocols: Vec<u8>,
        /// FlowSpec: source ports to match.
        #[arg(long = "src-port")]
        src_ports: Vec<u16>,
        /// FlowSpec: destination ports to match.
        #[arg(long = "dst-port")]
        dst_ports: Vec<u16>,
        /// FlowSpec: rate-limit to so many bytes/s instead of discarding.
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// Withdraw a mitigation by its id.
    Withdraw {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
}

#[derive(Subcommand)]
enum ApikeyCmd {
    /// Make a key; its token is printed once, on stdout.
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// What the key is for (shown in lists and the audit log).
        name: String,
        #[arg(long, value_enum, default_value = "read")]
        scope: levee::apikeys::Scope,
    },
    /// List keys (never their tokens).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a key by its id.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Write the audit log (read-only; works while levee runs).
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check an exported audit log offline; needs no database.
    Verify {
        /// An export in JSON lines or CSV.
        file: PathBuf,
        /// The head hash the chain must end at (from export or /metrics).
        #[arg(long, value_name = "SHA256")]
        head: Option<String>,
    },
}

fn main() -> ExitCode {
    // Whatever levee creates — the store's files, the spool, the heartbeat,
    // an export — is its user's alone, whatever umask it was started with
    // (the data dir's existing files are made so when the store is opened
    // for writing).
    // SAFETY: umask(2) only sets this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (`levee audit export | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("levee: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Run(c) => levee::app::run(&c.config),
        Cmd::CheckConfig(c) => Ok(check_config(&c.config)),
        Cmd::Audit {
            cmd:
                AuditCmd::Export {
                    config,
                    format,
                    output,
                },
        } => audit_export(&config.config, format, output),
        Cmd::Audit {
            cmd: AuditCmd::Verify { file, head },
        } => audit_verify(&file, head.as_deref()),
        Cmd::Apikey { cmd } => apikey(cmd),
        Cmd::Mitigation { cmd } => mitigation(cmd),
        Cmd::Deadman(c) => deadman(&c.config),
        Cmd::Status { config, json } => status(&config.config, json),
        Cmd::Store {
            cmd: StoreCmd::Check { config },
        } => store_check(&config.config),
        Cmd::Store {
            cmd: StoreCmd::Repair { config },
        } => store_repair(&config.config),
        Cmd::Replay {
            config,
            format,
            summary,
            inputs,
        } => replay(&config.config, format, summary, &inputs),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(l) => {
            println!(
                "{}: ok ({} hostgroup(s), sha256 {})",
                path.display(),
                l.config.hostgroups.len(),
                l.sha256
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

fn audit_export(
    path: &std::path::Path,
    format: Format,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    let store = Store::open_read_only(&loaded.config.data_dir).context("opening the store")?;
    let (n, seq, hash) = match &output {
        Some(file) => {
            // Write beside the target and rename, so a failed export never
            // leaves a half file under the requested name.
            let tmp = file.with_extension("partial");
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?,
            );
            let r = audit::export(&store, format, &mut w)?;
            w.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, file)
                .with_context(|| format!("renaming to {}", file.display()))?;
            r
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let r = audit::export(&store, format, &mut w)?;
            w.flush()?;
            r
        }
    };
    eprintln!("exported {n} entries; head seq {seq} sha256 {hash}");
    Ok(ExitCode::SUCCESS)
}

fn replay(
    path: &std::path::Path,
    format: levee::replay::Format,
    summary: bool,
    inputs: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    // Replay writes nothing: the data dir need not exist or be writable here.
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
    let loaded = match text.map(|t| config::parse(path, &t)) {
        Ok(Ok(l)) => l,
        Ok(Err(errors)) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("{}:1:1: cannot read the config file: {e:#}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    levee::replay::replay(&loaded.config, inputs, format, summary, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// The config at `path`, or its errors printed (the caller exits 2).
fn load_or_report(path: &std::path::Path) -> Option<config::Loaded> {
    match config::load(path) {
        Ok(l) => Some(l),
        Err(errors) => {
            eprintln!("{errors}");
            None
        }
    }
}

fn apikey(cmd: ApikeyCmd) -> anyhow::Result<ExitCode> {
    let path = match &cmd {
        ApikeyCmd::Add { config, .. }
        | ApikeyCmd::List { config }
        | ApikeyCmd::Revoke { config, .. } => config.config.clone(),
    };
    let Some(loaded) = load_or_report(&path) else {
        return Ok(ExitCode::from(2));
    };
    let admin = levee::cli_backend::Admin::connect(&loaded.config.data_dir)?;
    match cmd {
        ApikeyCmd::Add { name, scope, .. } => {
            let k = admin.create_key(&name, scope)?;
            eprintln!(
                "made API key {} ({:?}, \"{}\"); the token below is shown only now",
                k.key.id, k.key.scope, k.key.name
            );
            println!("{}", k.token);
        }
        ApikeyCmd::List { .. } => {
            for k in admin.list_keys()? {
                let state = k
                    .revoked
                    .map_or("active".to_owned(), |r| format!("revoked {r}"));
                // Names are printable ASCII now; one made before that is
                // shown escaped, never as raw control or bidi characters.
                println!(
                    "{}\t{:?}\t{}\t{}\t{}",
                    k.id,
                    k.scope,
                    k.created,
                    state,
                    k.name.escape_default()
                );
            }
        }
        ApikeyCmd::Revoke { id, .. } => {
            let k = admin.revoke_key(&id)?;
            eprintln!("revoked API key {} (\"{}\")", k.id, k.name.escape_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn deadman(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_or_report(path) else {
        return Ok(ExitCode::from(2));
    };
    let _log = levee::logging::init(&loaded.config.log.level);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        levee::mitigation::deadman::run(&loaded.config, stop).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn mitigation(cmd: MitigationCmd) -> anyhow::Result<ExitCode> {
    let path = match &cmd {
        MitigationCmd::List { config, .. }
        | MitigationCmd::Announce { config, .. }
        | MitigationCmd::Withdraw { config, .. } => config.config.clone(),
    };
    let Some(loaded) = load_or_report(&path) else {
        return Ok(ExitCode::from(2));
    };
    let admin = levee::cli_backend::Admin::connect(&loaded.config.data_dir)?;
    match cmd {
        MitigationCmd::List { log, json, .. } => {
            let v = admin.mitigations(log)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let empty = Vec::new();
            for m in v["active"].as_array().unwrap_or(&empty) {
                let shadow = if m["shadow"] == true { " (shadow)" } else { "" };
                println!(
                    "{}\t{}\t{}\t{}\tuntil {}{shadow}\t{}",
                    m["id"].as_str().unwrap_or(""),
                    m["level"].as_str().unwrap_or(""),
                    m["prefix"].as_str().or(m["host"].as_str()).unwrap_or(""),
                    m["decided_by"].as_str().unwrap_or(""),
                    levee::report::rfc3339_ms(m["expires_ms"].as_u64().unwrap_or(0)),
                    m["text"].as_str().unwrap_or(""),
                );
            }
            for e in v["log"].as_array().unwrap_or(&empty).iter().rev() {
                eprintln!(
                    "{} {} {} {} {}{}",
                    e["time"].as_str().unwrap_or(""),
                    e["action"].as_str().unwrap_or(""),
                    e["level"].as_str().unwrap_or(""),
                    e["prefix"].as_str().or(e["host"].as_str()).unwrap_or(""),
                    e["reason"].as_str().unwrap_or(""),
                    e["error"]
                        .as_str()
                        .map(|x| format!(" (error: {x})"))
                        .unwrap_or_default(),
                );
            }
        }
        MitigationCmd::Announce {
            host,
            level,
            ttl,
            protocols,
            src_ports,
            dst_ports,
            rate_limit,
            ..
        } => {
            let made = admin.announce(&serde_json::json!({
                "host": host,
                "level": level,
                "ttl": ttl,
                "protocols": protocols,
                "src_ports": src_ports,
                "dst_ports": dst_ports,
                "rate_limit": rate_limit,
            }))?;
            for m in made.as_array().into_iter().flatten() {
                let shadow = if m["shadow"] == true {
                    " (dry run: not sent)"
                } else {
                    ""
                };
                println!("{}", m["id"].as_str().unwrap_or(""));
                match serde_json::from_value::<levee_bgp::Route>(m["route"].clone()) {
                    Ok(r) => eprintln!("announced {r}{shadow}"),
                    Err(_) => eprintln!("announced {}{shadow}", m["route"]),
                }
            }
        }
        MitigationCmd::Withdraw { id, .. } => {
            admin.withdraw(&id)?;
            eprintln!("withdrawn {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `levee status`: exit 0 when levee answers on its admin socket, 3 when
/// it does not (as LSB init scripts' `status` does).
fn status(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_or_report(path) else {
        return Ok(ExitCode::from(2));
    };
    let data_dir = &loaded.config.data_dir;
    let admin = levee::cli_backend::Admin::connect(data_dir)?;
    let live = admin.get("/api/v1/mitigations?log=0")?;
    let holder = levee::store::lock_holder(data_dir);
    let levee_state = match (&live, holder.pid, holder.role) {
        (Some(_), Some(pid), _) => format!("running (pid {pid})"),
        (Some(_), None, _) => "running".to_owned(),
        (None, Some(pid), levee::store::Role::Levee) => {
            format!("not answering: pid {pid} holds the store (starting, or hung)")
        }
        (None, Some(_), _) => format!("not running; the store is in use by {holder}"),
        (None, None, _) => "not running".to_owned(),
    };
    let mut out = serde_json::json!({
        "levee": levee_state,
        "running": live.is_some(),
        "data_dir": data_dir,
    });
    let stored = || -> anyhow::Result<serde_json::Value> {
        let store = Store::open_read_only(data_dir)?;
        let (seq, hash) = match store.audit_last()? {
            Some((seq, bytes)) => (
                seq,
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["hash"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ),
            None => (0, audit::GENESIS.to_owned()),
        };
        Ok(serde_json::json!({
            "schema": store.schema_version()?,
            "bytes": store.size_bytes(),
            "intents": store.intents()?.len(),
            "audit_head_seq": seq,
            "audit_head_sha256": hash,
        }))
    };
    out["store"] = stored().unwrap_or_else(|e| serde_json::json!({ "error": format!("{e:#}") }));
    if let Some(m) = &live {
        out["bgp_up"] = m["bgp_up"].clone();
        out["mitigations_in_force"] = serde_json::json!(m["active"].as_array().map_or(0, Vec::len));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("levee: {}", out["levee"].as_str().unwrap_or(""));
        println!("data dir: {}", data_dir.display());
        let st = &out["store"];
        match st["error"].as_str() {
            Some(e) => println!("store: cannot be read: {e}"),
            None => {
                println!(
                    "store: schema {}, {} bytes, {} intent(s) stored",
                    st["schema"], st["bytes"], st["intents"]
                );
                println!(
                    "audit: head seq {} sha256 {}",
                    st["audit_head_seq"],
                    st["audit_head_sha256"].as_str().unwrap_or("")
                );
            }
        }
        if live.is_some() {
            println!(
                "mitigations: {} in force; gobgpd {}",
                out["mitigations_in_force"],
                if out["bgp_up"] == true {
                    "connected"
                } else {
                    "not connected"
                }
            );
        }
    }
    Ok(if live.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `levee store check`: every column family read through, checksums
/// verified, and the audit chain checked; exit 1 on damage.
fn store_check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_or_report(path) else {
        return Ok(ExitCode::from(2));
    };
    let store = Store::open_read_only(&loaded.config.data_dir).context("opening the store")?;
    Ok(report_check(&store))
}

/// Prints what [`Store::check`] and the audit chain check found.
fn report_check(store: &Store) -> ExitCode {
    let mut damaged = false;
    println!(
        "store {}: schema {}, {} bytes",
        store.data_dir().join("db").display(),
        store
            .schema_version()
            .map_or_else(|e| e.to_string(), |v| v.to_string()),
        store.size_bytes()
    );
    for c in store.check() {
        match &c.error {
            None => println!("  {:<12} {:>10} entries  ok", c.name, c.entries),
            Some(e) => {
                damaged = true;
                println!("  {:<12} {:>10} entries  DAMAGED: {e}", c.name, c.entries);
            }
        }
    }
    match audit::verify_stored(store) {
        Ok(v) => println!(
            "audit chain: ok {} entries, head seq {} sha256 {}",
            v.entries, v.head_seq, v.head_hash
        ),
        Err(audit::StoredChainError::Empty) => println!("audit chain: empty"),
        Err(e) => {
            damaged = true;
            println!("audit chain: BROKEN: {e}");
        }
    }
    if damaged {
        println!("DAMAGED");
        ExitCode::FAILURE
    } else {
        println!("ok");
        ExitCode::SUCCESS
    }
}

/// `levee store repair`: refuses while anything holds the store.
fn store_repair(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_or_report(path) else {
        return Ok(ExitCode::from(2));
    };
    let data_dir = &loaded.config.data_dir;
    let copy = levee::store::repair(data_dir).context("repairing the store")?;
    eprintln!(
        "repaired; the store as it was is kept in {} (remove it once you are content)",
        copy.display()
    );
    let store = Store::open_read_only(data_dir).context("opening the repaired store")?;
    Ok(report_check(&store))
}

fn audit_verify(file: &std::path::Path, head: Option<&str>) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    match audit::verify(BufReader::new(f), head) {
        Ok(v) => {
            println!("ok {} entries", v.entries);
            if head.is_none() {
                // An intact chain says nothing of entries cut off its end.
                println!("{}", audit::UNANCHORED);
            }
            if v.unverified_names > 0 {
                println!(
                    "unverified: actor_name of {} entries (the name behind a pseudonym at export time) is not covered by the hash",
                    v.unverified_names
                );
            }
            eprintln!("head seq {} sha256 {}", v.head_seq, v.head_hash);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("FAILED: {}: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
