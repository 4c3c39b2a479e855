//! Test harness shared by berth's tests: a real etcd on loopback ports with a temporary data
//! directory, free ports, and child processes that cannot outlive the test that started them.
#![allow(unsafe_code)] // one pre_exec hook, see `die_with_parent`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

    /// Kills with SIGKILL and waits for the process to be gone.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

impl EtcdServer {
    /// Starts etcd and waits until it answers `/health`. Call it from the test's own thread,
    /// not from a short-lived helper thread (see `die_with_parent`).
    pub fn start() -> EtcdServer {
        for _ in 0..5 {
            if let Some(server) = Self::try_start() {
                return server;
            }
        }
        panic!("etcd did not start after 5 attempts");
    }

    fn try_start() -> Option<EtcdServer> {
        let data = tempfile::tempdir().expect("temporary directory for etcd");
        let client_port = free_port();
        let peer_port = free_port();
        let client = format!("http://127.0.0.1:{client_port}");
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
        let mut process = ChildGuard::spawn(&mut command).expect("start etcd");
        let healthy = wait_until(Duration::from_secs(10), || {
            if let Ok(Some(_)) = process.child.try_wait() {
                return true; // exited (port taken): retried below
            }
            health_ok(client_port)
        });
        if !healthy || !health_ok(client_port) {
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
