//! Helpers the integration tests share: start a real `levee run` on a temp
//! data dir with its web server on a free loopback port, talk HTTP to it,
//! signal it, and run the other subcommands.

#![allow(dead_code)] // each test binary uses a different subset

pub mod bgp;
pub mod replay;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn levee_bin() -> &'static str {
    env!("CARGO_BIN_EXE_levee")
}

/// `levee ARGS…` to completion.
pub fn cli(args: &[&str]) -> Output {
    Command::new(levee_bin())
        .args(args)
        .env_remove("LEVEE_CONFIG")
        .env_remove("LEVEE_LOG")
        .output()
        .expect("levee runs")
}

/// Makes an API key with `levee apikey add` and returns its token.
pub fn api_key(config: &Path, name: &str, scope: &str) -> String {
    let out = cli(&[
        "apikey",
        "add",
        "--config",
        config.to_str().unwrap(),
        name,
        "--scope",
        scope,
    ]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A config for tests: data dir as given, every socket on a free port.
pub fn test_config(data_dir: &Path, extra: &str) -> String {
    format!(
        "data_dir = \"{}\"\n{extra}\n\
         [collector.sflow]\nlisten = [\"127.0.0.1:0\"]\n\
         [collector.netflow]\nlisten = [\"127.0.0.1:0\"]\n\
         [web]\nlisten = \"127.0.0.1:0\"\n",
        data_dir.display()
    )
}

/// A running `levee run`.
pub struct Levee {
    pub child: Child,
    pub web: SocketAddr,
    pub config: PathBuf,
    /// Collector sockets by kind (`sflow`, `netflow`), from the start-up log.
    pub collectors: Vec<(String, SocketAddr)>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Levee {
    /// Starts levee with the config file at `config` and waits until its web
    /// server listens.
    pub fn start(config: &Path) -> Levee {
        Levee::start_with(Command::new(levee_bin()), config)
    }

    /// Starts levee inside the network namespace `ns` (`ip netns exec`).
    pub fn start_in_netns(ns: &str, config: &Path) -> Levee {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, levee_bin()]);
        Levee::start_with(c, config)
    }

    /// Starts `command` (the levee binary, with whatever environment,
    /// limits or umask the test sets on it) as `levee run` with `config`.
    pub fn start_command(command: Command, config: &Path) -> Levee {
        Levee::start_with(command, config)
    }

    fn start_with(mut command: Command, config: &Path) -> Levee {
        let mut child = command
            .args(["run", "--config"])
            .arg(config)
            .env_remove("LEVEE_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("levee starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[levee] {line}");
                    let web = line
                        .contains("Web server listening")
                        .then(|| field(&line, "addr").parse::<SocketAddr>().unwrap());
                    lines.lock().unwrap().push(line);
                    if let Some(addr) = web {
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        let web = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("levee did not start: {:?}", lines.lock().unwrap());
            }
        };
        let collectors = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Collector listening"))
            .map(|l| {
                (
                    field(l, "kind").trim_matches('"').to_owned(),
                    field(l, "addr").parse().unwrap(),
                )
            })
            .collect();
        Levee {
            child,
            web,
            config: config.to_owned(),
            collectors,
            lines,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits for the process to end (it must, within a minute).
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "levee did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first collector socket of `kind`.
    pub fn collector(&self, kind: &str) -> SocketAddr {
        self.collectors
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {kind} collector in {:?}", self.collectors))
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// GET `path`; returns the status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.web, path)
    }

    /// The value of one sample line of `/metrics`, e.g. `levee_audit_head_seq`.
    pub fn metric(&self, series: &str) -> Option<String> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .map(|l| l[series.len() + 1..].to_owned())
    }

    /// Waits until `f` holds, polling; panics after 30 s.
    pub fn wait_for(&self, what: &str, mut f: impl FnMut(&Levee) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The audit head (seq, hash) as `/metrics` reports it.
    pub fn audit_head(&self) -> (u64, String) {
        let (_, body) = self.get("/metrics");
        let line = body
            .lines()
            .find(|l| l.starts_with("levee_audit_head_info{"))
            .expect("head info in /metrics");
        let seq = line
            .split("seq=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let hash = line
            .split("sha256=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        (seq.parse().unwrap(), hash.to_owned())
    }
}

/// The value of `key=value` in a log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(&format!(" {key}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

impl Drop for Levee {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = http(addr, "GET", path, None, None);
    (r.status, r.body)
}

/// An HTTP answer: status, head (status line and headers) and body
/// (de-chunked) — read by levee's own admin-socket client.
pub use levee::cli_backend::Answer;

/// One HTTP/1.1 request with an optional bearer token and JSON body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Answer {
    try_http(addr, method, path, bearer, body).expect("levee answers")
}

/// [`http`], `None` when levee is not there to answer (or the answer is
/// cut off).
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Option<Answer> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    try_exchange(
        s,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// `levee audit export` of the store behind `config`; returns stdout and the
/// head hash it reports on stderr.
pub fn export(config: &Path, format: &str) -> (String, String) {
    let out = cli(&[
        "audit",
        "export",
        "--config",
        config.to_str().unwrap(),
        "--format",
        format,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "export failed: {stderr}");
    let head = stderr
        .split("sha256 ")
        .nth(1)
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| panic!("no head in {stderr:?}"));
    (String::from_utf8(out.stdout).unwrap(), head)
}

/// A network namespace of the test's own, deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    /// A fresh namespace `<prefix>-<pid>` with its loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = format!("{prefix}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS…`; must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.0];
        full.extend_from_slice(args);
        run(&full);
    }

    /// `program` to run inside the namespace.
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs a command; it must succeed.
pub fn run(args: &[&str]) {
    let s = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(s.success(), "{args:?}");
}

/// A TCP connection to `to` from the loopback address `from` (tests that
/// play several clients use 127.0.0.0/8's many addresses).
pub fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) on
/// `s` and reads the answer; status 0 when none came.
pub fn exchange(s: impl Read + Write, request: &str) -> Answer {
    try_exchange(s, request).unwrap_or(Answer {
        status: 0,
        head: String::new(),
        body: String::new(),
    })
}

/// [`exchange`], `None` when no whole answer came.
pub fn try_exchange(mut s: impl Read + Write, request: &str) -> Option<Answer> {
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    Answer::read(&raw)
}

/// `GET path` over the admin socket of `data_dir`.
pub fn admin_get(data_dir: &Path, path: &str) -> Answer {
    let s = std::os::unix::net::UnixStream::connect(data_dir.join("levee.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    exchange(
        s,
        &format!("GET {path} HTTP/1.1\r\nHost: levee\r\nConnection: close\r\n\r\n"),
    )
}
