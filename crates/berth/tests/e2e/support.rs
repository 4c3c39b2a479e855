//! Running the real `berth` binary in tests: start it on a free port (`--listen 127.0.0.1:0`),
//! learn the port from its `listening` log line, stop it gracefully or kill it with SIGKILL,
//! restart it on the same data directory.

use berth_testkit::{ChildGuard, EtcdServer};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Environment variables a developer's shell might carry that would change what berth does.
const CLEARED_ENV: &[&str] = &[
    "BERTH_CONFIG",
    "BERTH_LISTEN",
    "BERTH_DATA_DIR",
    "BERTH_STORE",
    "BERTH_LOG_FORMAT",
    "BERTH_LOG_LEVEL",
    "BERTH_DEFAULT_TTL",
    "BERTH_HISTORY_REVISIONS",
    "BERTH_ADDR",
    "RUST_LOG",
];

pub fn berth_command(args: &[String]) -> Command {
    let mut command = Command::new(BERTH);
    command.args(args);
    for name in CLEARED_ENV {
        command.env_remove(name);
    }
    command
}

/// A `berth serve` process.
pub struct Berth {
    process: ChildGuard,
    pub base: String,
    args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Berth {
    /// `berth serve` with the given extra arguments, on a free loopback port, logging JSON.
    pub fn start(extra: &[String]) -> Berth {
        match Self::try_start(extra) {
            Ok(berth) => berth,
            Err(log) => panic!("berth did not start:\n{}", log.join("\n")),
        }
    }

    /// Starts berth; `Err` with its log when it exits (or never says `listening`).
    pub fn try_start(extra: &[String]) -> Result<Berth, Vec<String>> {
        let mut args = vec![
            "serve".to_string(),
            "--listen=127.0.0.1:0".to_string(),
            "--log-format=json".to_string(),
        ];
        args.extend_from_slice(extra);
        let mut command = berth_command(&args);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut process = ChildGuard::spawn(&mut command).expect("spawn berth");
        let stderr = process.child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_sender, address_receiver) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                        && event["message"] == "listening"
                        && let Some(address) = event["address"].as_str()
                    {
                        let _ = address_sender.send(address.to_string());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(address) = address_receiver.recv_timeout(Duration::from_millis(20)) {
                return Ok(Berth {
                    process,
                    base: format!("http://{address}"),
                    args: extra.to_vec(),
                    log,
                });
            }
            if let Ok(Some(_)) = process.child.try_wait() {
                // Let the reader thread drain what is left.
                std::thread::sleep(Duration::from_millis(50));
                return Err(log.lock().unwrap().clone());
            }
            if Instant::now() > deadline {
                return Err(log.lock().unwrap().clone());
            }
        }
    }

    pub fn embedded(data_dir: &Path) -> Berth {
        Berth::start(&[format!("--data-dir={}", data_dir.display())])
    }

    pub fn on_etcd(etcd: &EtcdServer) -> Berth {
        Berth::start(&[format!("--store={}", etcd.store_url())])
    }

    pub fn client(&self) -> berth_client::Client {
        berth_client::Client::new(&self.base).unwrap()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// SIGTERM, then waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.process.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "berth did not stop within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_hard(&mut self) {
        self.process.kill_hard();
    }

    /// The same arguments again (after a stop or a kill).
    pub fn restart(&self) -> Berth {
        Berth::start(&self.args)
    }
}

/// The current store revision, from `/health`.
pub async fn health_revision(base: &str) -> i64 {
    let health: serde_json::Value = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["revision"].as_i64().expect("revision in /health")
}

/// A temporary data directory path.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    (dir, path)
}

/// Runs a berth command to completion: (exit code, stdout, stderr).
pub fn run_berth(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = berth_command(&args).output().expect("run berth");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
