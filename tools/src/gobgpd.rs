//! Real gobgpd peers for tests: levee's speaker and a second gobgpd that
//! plays the border router, peered over BGP on loopback addresses of their
//! own (so tests running at once do not meet), with the unicast and
//! FlowSpec families for IPv4 and IPv6.
//!
//! The `gobgp` CLI reads the router's RIB, so a test checks what really
//! arrived over BGP, not what levee believes it sent.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The BGP port both daemons listen on (each on its own address).
pub const BGP_PORT: u16 = 11179;
/// The gRPC port (each daemon on its own address).
pub const GRPC_PORT: u16 = 50051;

/// levee's AS in tests, and the router's.
pub const SPEAKER_AS: u32 = 65001;
pub const ROUTER_AS: u32 = 65000;

/// One running gobgpd, killed when dropped.
#[derive(Debug)]
pub struct Gobgpd {
    child: Option<Child>,
    /// The address it speaks BGP and gRPC on.
    pub addr: Ipv4Addr,
    config: PathBuf,
    log: PathBuf,
    /// The network namespace it runs in (its CLI too), if not this one.
    netns: Option<String>,
}

/// Two fresh loopback addresses (speaker, router) no other test in this
/// process, or in another test process started at another pid, uses.
pub fn loopback_pair() -> (Ipv4Addr, Ipv4Addr) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let b = 100 + (std::process::id() % 100) as u8;
    let c = (n % 250) as u8 + 1;
    (Ipv4Addr::new(127, b, c, 2), Ipv4Addr::new(127, b, c, 3))
}

fn config(me: Ipv4Addr, my_as: u32, peer: Ipv4Addr, peer_as: u32) -> String {
    let mut s = format!(
        "[global.config]\n  as = {my_as}\n  router-id = \"{me}\"\n  port = {BGP_PORT}\n  \
         local-address-list = [\"{me}\"]\n\n\
         [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{peer}\"\n    peer-as = {peer_as}\n  \
         [neighbors.transport.config]\n    local-address = \"{me}\"\n    remote-port = {BGP_PORT}\n  \
         [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 9\n    keepalive-interval = 3\n"
    );
    for family in [
        "ipv4-unicast",
        "ipv6-unicast",
        "ipv4-flowspec",
        "ipv6-flowspec",
    ] {
        s += &format!(
            "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n"
        );
    }
    s
}

impl Gobgpd {
    /// Starts levee's speaker (AS 65001 at `me`) peered with the router at
    /// `router`.
    pub fn speaker(dir: &Path, me: Ipv4Addr, router: Ipv4Addr) -> Result<Gobgpd> {
        Gobgpd::start(
            dir,
            "speaker",
            &config(me, SPEAKER_AS, router, ROUTER_AS),
            me,
            None,
        )
    }

    /// Starts the border router (AS 65000 at `me`) peered with the speaker.
    pub fn router(dir: &Path, me: Ipv4Addr, speaker: Ipv4Addr) -> Result<Gobgpd> {
        Gobgpd::start(
            dir,
            "router",
            &config(me, ROUTER_AS, speaker, SPEAKER_AS),
            me,
            None,
        )
    }

    /// The speaker, inside the network namespace `ns` (its loopback up).
    pub fn speaker_in(ns: &str, dir: &Path, me: Ipv4Addr, router: Ipv4Addr) -> Result<Gobgpd> {
        Gobgpd::start(
            dir,
            "speaker",
            &config(me, SPEAKER_AS, router, ROUTER_AS),
            me,
            Some(ns),
        )
    }

    /// The router, inside the network namespace `ns`.
    pub fn router_in(ns: &str, dir: &Path, me: Ipv4Addr, speaker: Ipv4Addr) -> Result<Gobgpd> {
        Gobgpd::start(
            dir,
            "router",
            &config(me, ROUTER_AS, speaker, SPEAKER_AS),
            me,
            Some(ns),
        )
    }

    fn start(
        dir: &Path,
        name: &str,
        conf: &str,
        addr: Ipv4Addr,
        netns: Option<&str>,
    ) -> Result<Gobgpd> {
        let config = dir.join(format!("{name}.toml"));
        fs::write(&config, conf)?;
        let mut g = Gobgpd {
            child: None,
            addr,
            config,
            log: dir.join(format!("{name}.log")),
            netns: netns.map(str::to_owned),
        };
        g.spawn()?;
        Ok(g)
    }

    /// `program`, run in this daemon's network namespace.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .command("gobgpd")
            .arg("-f")
            .arg(&self.config)
            .arg("--api-hosts")
            .arg(self.grpc().to_string())
            .args(["-p", "--pprof-disable", "-l", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting gobgpd (scripts/install-deps installs it)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = |g: &Gobgpd| match &g.netns {
            None => TcpStream::connect_timeout(&g.grpc(), Duration::from_millis(200)).is_ok(),
            Some(_) => g.cli(&["global"]).is_ok(),
        };
        while !listening(self) {
            if Instant::now() > deadline {
                bail!(
                    "gobgpd at {} did not open its API; log:\n{}",
                    self.addr,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Its gRPC API.
    pub fn grpc(&self) -> SocketAddr {
        SocketAddr::from((self.addr, GRPC_PORT))
    }

    /// Kills it (SIGKILL: no goodbye to its peers beyond the TCP reset).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts it again with the same configuration: every route
    /// added over the API is gone.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the `gobgp` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command("gobgp")
            .args(["-u", &self.addr.to_string(), "-p", &GRPC_PORT.to_string()])
            .args(args)
            .output()
            .context("running gobgp")?;
        if !out.status.success() {
            bail!(
                "gobgp {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The global RIB of one family (`ipv4`, `ipv6`, `ipv4-flowspec`,
    /// `ipv6-flowspec`) as the CLI prints it.
    pub fn rib(&self, family: &str) -> Result<String> {
        self.cli(&["global", "rib", "-a", family])
    }

    /// The global RIB of one family as JSON.
    pub fn rib_json(&self, family: &str) -> Result<serde_json::Value> {
        let text = self.cli(&["global", "rib", "-a", family, "-j"])?;
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(serde_json::Value::Object(Default::default()));
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Whether its session with its one neighbour is established.
    pub fn established(&self) -> bool {
        self.cli(&["neighbor"])
            .map(|t| t.contains("Establ"))
            .unwrap_or(false)
    }

    /// Waits until the session is established.
    pub fn wait_established(&self, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        while !self.established() {
            if start.elapsed() > within {
                bail!(
                    "BGP session of {} not established within {within:?}; log:\n{}",
                    self.addr,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(start.elapsed())
    }

    /// Waits until `check` holds for the RIB text of `family`, returning how
    /// long that took.
    pub fn wait_rib(
        &self,
        family: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let rib = self.rib(family)?;
            if check(&rib) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                bail!("{family} RIB of {} never matched; it is:\n{rib}", self.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One route change the router saw, as `gobgp monitor` printed it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Wall clock, Unix ms, when the line was read.
    pub at_ms: u64,
    /// The family of the monitor that saw it (`ipv4`, `ipv6`,
    /// `ipv4-flowspec`, `ipv6-flowspec`).
    pub family: String,
    pub withdrawal: bool,
    /// The path's NLRI (gobgp's JSON).
    pub nlri: serde_json::Value,
}

/// Every route change of a router, from the moment the watch starts: the
/// routes that came and went between two looks at the RIB are here too.
#[derive(Debug)]
pub struct Watch {
    children: Vec<Child>,
    changes: std::sync::Arc<std::sync::Mutex<Vec<Change>>>,
}

impl Watch {
    /// The changes so far, in the order they were seen.
    pub fn changes(&self) -> Vec<Change> {
        self.changes.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Change {
    /// Whether the route is a FlowSpec rule (its NLRI a list of
    /// components), not a unicast prefix. (`gobgp monitor -a` does not
    /// keep to its family: tell them apart by what they are.)
    pub fn is_flowspec(&self) -> bool {
        self.nlri["value"].is_array()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Gobgpd {
    /// Starts watching the router's RIB of these families (`gobgp monitor
    /// global rib -j`), and returns once the monitors are running.
    pub fn watch(&self, families: &[&str]) -> Result<Watch> {
        use std::io::{BufRead, BufReader};
        let changes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut children = Vec::new();
        for family in families {
            let mut child = self
                .command("gobgp")
                .args(["-u", &self.addr.to_string(), "-p", &GRPC_PORT.to_string()])
                .args(["monitor", "global", "rib", "-a", family, "-j"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("running gobgp monitor")?;
            let out = child.stdout.take().context("monitor stdout")?;
            let (changes, family) = (changes.clone(), (*family).to_owned());
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let at_ms = levee_collectors::clock::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    let Ok(serde_json::Value::Array(paths)) = serde_json::from_str(&line) else {
                        continue;
                    };
                    let mut c = changes.lock().unwrap_or_else(|e| e.into_inner());
                    for p in paths {
                        c.push(Change {
                            at_ms,
                            family: family.clone(),
                            withdrawal: p["withdrawal"].as_bool().unwrap_or(false),
                            nlri: p["nlri"].clone(),
                        });
                    }
                }
            });
            children.push(child);
        }
        // The monitor subscribes on start; give it a moment to do so.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Watch { children, changes })
    }
}

impl Drop for Gobgpd {
    fn drop(&mut self) {
        self.kill();
    }
}
