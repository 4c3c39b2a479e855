//! Test harness shared by berth's tests and benchmarks: a real etcd on loopback ports with a
//! temporary data directory, a real `berth serve` on a free port, and child processes that
//! cannot outlive the test that started them.
#![allow(
    clippy::disallowed_methods,
    reason = "the harness times real processes and finds etcd on PATH"
)]
#![allow(unsafe_code)] // one pre_exec hook, see `die_with_parent`

pub mod docker;
pub mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bind to port 0 wherever the code allows it instead).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Makes the child receive SIGKILL when the thread that spawned it ends, so a test that is
/// killed or panics leaves no etcd or berth running behind it.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY: the hook only makes one async-signal-safe system call (prctl).
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        })
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; true when it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    pub fn spawn(command: &mut Command) -> std::io::Result<ChildGuard> {
        Ok(ChildGuard {
            child: die_with_parent(command).spawn()?,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (e.g. TERM for a graceful stop).
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid()) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// SIGTERM, then waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not stop within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills with SIGKILL and waits for the process to be gone.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Where etcd is: `ETCD_BIN`, else `etcd` on PATH, else Debian's `/usr/bin/etcd`.
fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(path);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("etcd");
        if candidate.is_file() {
            return candidate;
        }
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    assert!(
        debian.is_file(),
        "etcd is not installed; run ./scripts/install-test-deps (Debian package etcd-server)"
    );
    debian
}

/// A real single-member etcd on loopback ports with its own temporary data directory, killed
/// when dropped. Elections are tuned short (10 ms heartbeat, 100 ms election) so it is ready
/// in about 100 ms and its minimum lease TTL is 1 s.
pub struct EtcdServer {
    process: ChildGuard,
    client_port: u16,
    _data: tempfile::TempDir,
}

/// PEM files for an etcd that serves TLS and requires client certificates.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers `/health`. Call it from the test's own thread,
    /// not from a short-lived helper thread (see `die_with_parent`).
    pub fn start() -> EtcdServer {
        Self::start_with(None)
    }

    /// An etcd with `--client-cert-auth`: TLS on its client port, every client with a
    /// certificate signed by `tls.ca_file`.
    pub fn start_with_tls(tls: &EtcdTls) -> EtcdServer {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&EtcdTls>) -> EtcdServer {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(tls) {
                return server;
            }
        }
        panic!("etcd did not start after 5 attempts");
    }

    fn try_start(tls: Option<&EtcdTls>) -> Option<EtcdServer> {
        let data = tempfile::tempdir().expect("temporary directory for etcd");
        let client_port = free_port();
        let peer_port = free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut command = Command::new(etcd_binary());
        command
            .arg("--name=default")
            .arg(format!("--data-dir={}", data.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(tls) = tls {
            command
                .arg(format!("--cert-file={}", tls.cert_file.display()))
                .arg(format!("--key-file={}", tls.key_file.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca_file.display()))
                .arg("--client-cert-auth");
        }
        let mut process = ChildGuard::spawn(&mut command).expect("start etcd");
        // Over TLS the health check would need a client certificate: an open port is enough,
        // and the test's first call retries until etcd serves.
        let ready = |port: u16| {
            if tls.is_some() {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                health_ok(port)
            }
        };
        let healthy = wait_until(Duration::from_secs(10), || {
            if let Ok(Some(_)) = process.child.try_wait() {
                return true; // exited (port taken): retried below
            }
            ready(client_port)
        });
        if !healthy || !ready(client_port) {
            process.kill_hard();
            return None;
        }
        Some(EtcdServer {
            process,
            client_port,
            _data: data,
        })
    }

    /// `127.0.0.1:PORT`, for `etcd-client`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT`, for `berth --store`.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn pid(&self) -> i32 {
        self.process.pid()
    }
}

fn health_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

/// The lines a process logged, shared with the thread that reads them.
pub type Log = Arc<Mutex<Vec<String>>>;

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Spawns `command[0] command[1..]` (without the caller's `BERTH_*` variables, plus `env`),
/// keeps every line it writes to stderr, and waits until `ready` finds what it needs in one
/// JSON log line. `Err` holds the log when the process exits or never gets there (30 s).
fn spawn_logged(
    command: &[String],
    env: &[(&str, &str)],
    ready: impl Fn(&serde_json::Value) -> Option<String> + Send + 'static,
) -> Result<(ChildGuard, Log, String), Vec<String>> {
    let mut spawn = Command::new(&command[0]);
    spawn
        .args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("BERTH_") || name == "RUST_LOG" {
            spawn.env_remove(name);
        }
    }
    spawn.envs(env.iter().copied());
    let mut process = ChildGuard::spawn(&mut spawn).expect("spawn the process");
    let stderr = process.child.stderr.take().expect("stderr");
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let (ready_sender, ready_receiver) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(found) = ready(&event)
                {
                    let _ = ready_sender.send(found);
                }
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(found) = ready_receiver.recv_timeout(Duration::from_millis(20)) {
            return Ok((process, log, found));
        }
        if let Ok(Some(_)) = process.child.try_wait() {
            std::thread::sleep(Duration::from_millis(50)); // let the reader drain
            return Err(lines(&log));
        }
        if Instant::now() > deadline {
            return Err(lines(&log));
        }
    }
}

/// A `berth agent` process (JSON logs kept for assertions), started once it logged
/// `agent started`.
pub struct BerthAgent {
    process: ChildGuard,
    binary: PathBuf,
    args: Vec<String>,
    log: Log,
}

impl BerthAgent {
    /// Runs `binary agent --log-format=json args…`.
    pub fn start(binary: &Path, args: &[String]) -> Result<BerthAgent, Vec<String>> {
        let mut full = vec![binary.display().to_string()];
        full.extend(["agent", "--log-format=json"].map(String::from));
        full.extend_from_slice(args);
        let (process, log, _) = spawn_logged(&full, &[], |event| {
            (event["message"] == "agent started").then(String::new)
        })?;
        Ok(BerthAgent {
            process,
            binary: binary.to_path_buf(),
            args: args.to_vec(),
            log,
        })
    }

    pub fn log(&self) -> Vec<String> {
        lines(&self.log)
    }

    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.process.terminate(within)
    }

    pub fn kill_hard(&mut self) {
        self.process.kill_hard();
    }

    pub fn restart(&self) -> Result<BerthAgent, Vec<String>> {
        BerthAgent::start(&self.binary, &self.args)
    }
}

/// A `berth serve` process on a free loopback port. It logs JSON to stderr; the `listening`
/// line gives the address it bound, and the whole log is kept for assertions.
pub struct BerthServer {
    process: ChildGuard,
    pub base: String,
    pub address: String,
    binary: PathBuf,
    prefix: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: Log,
}

impl BerthServer {
    /// Runs `prefix… binary serve --log-format=json args…`, on `--listen=127.0.0.1:0` unless
    /// `args` say where (`prefix` is
    /// e.g. `taskset -c 0`), with the caller's `BERTH_*` variables removed, and waits for the
    /// `listening` line. `Err` holds the log when berth exits or never gets there.
    pub fn start(
        binary: &Path,
        prefix: &[String],
        args: &[String],
    ) -> Result<BerthServer, Vec<String>> {
        Self::start_with_env(binary, prefix, args, &[])
    }

    /// Like [`BerthServer::start`], with extra environment variables (lyft's `HOST_TTL`…).
    pub fn start_with_env(
        binary: &Path,
        prefix: &[String],
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<BerthServer, Vec<String>> {
        let mut full = prefix.to_vec();
        full.push(binary.display().to_string());
        full.extend(["serve", "--log-format=json"].map(String::from));
        if !args.iter().any(|a| a.starts_with("--listen")) {
            full.push("--listen=127.0.0.1:0".into());
        }
        // Many servers run at once: DNS on a free port unless the test says where.
        if !args.iter().any(|a| a.starts_with("--dns-listen")) {
            full.push("--dns-listen=127.0.0.1:0".into());
        }
        if !args.iter().any(|a| a.starts_with("--xds-listen")) {
            full.push("--xds-listen=127.0.0.1:0".into());
        }
        full.extend_from_slice(args);
        let (process, log, address) = spawn_logged(&full, env, |event| {
            (event["message"] == "listening" && event["surface"] == "http")
                .then(|| event["address"].as_str().map(String::from))
                .flatten()
        })?;
        Ok(BerthServer {
            process,
            base: format!("http://{address}"),
            address,
            binary: binary.to_path_buf(),
            prefix: prefix.to_vec(),
            args: args.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log,
        })
    }

    pub fn log(&self) -> Vec<String> {
        lines(&self.log)
    }

    /// The address a surface (`http`, `dns`) listens on, from its `listening` line.
    pub fn surface_address(&self, surface: &str) -> Option<String> {
        self.log().iter().find_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            (event["message"] == "listening" && event["surface"] == surface)
                .then(|| event["address"].as_str().map(String::from))
                .flatten()
        })
    }

    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// Sends `signal` (SIGHUP: re-read the TLS certificates).
    pub fn signal(&self, signal: rustix::process::Signal) {
        self.process.signal(signal);
    }

    /// How the process ended, if it has (without stopping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// SIGTERM, then waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.process.terminate(within)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_hard(&mut self) {
        self.process.kill_hard();
    }

    /// The same command again (after a stop or a kill).
    pub fn restart(&self) -> Result<BerthServer, Vec<String>> {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        BerthServer::start_with_env(&self.binary, &self.prefix, &self.args, &env)
    }

    /// The process's resident memory in bytes (Linux `/proc`).
    pub fn resident_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    }
}
