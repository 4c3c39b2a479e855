//! Running the real `berth` binary in tests, on top of the testkit's `BerthServer`: start it on
//! a free port on either store, stop it gracefully or with SIGKILL, restart it on the same data
//! directory, run one-shot commands.

use berth_testkit::{BerthServer, EtcdServer};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A `berth serve` process (the testkit's, with the test binary's berth).
pub struct Berth(BerthServer);

impl std::ops::Deref for Berth {
    type Target = BerthServer;
    fn deref(&self) -> &BerthServer {
        &self.0
    }
}

impl std::ops::DerefMut for Berth {
    fn deref_mut(&mut self) -> &mut BerthServer {
        &mut self.0
    }
}

impl Berth {
    pub fn start(args: &[String]) -> Berth {
        match Self::try_start(args) {
            Ok(berth) => berth,
            Err(log) => panic!("berth did not start:\n{}", log.join("\n")),
        }
    }

    pub fn try_start(args: &[String]) -> Result<Berth, Vec<String>> {
        BerthServer::start(Path::new(BERTH), &[], args).map(Berth)
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

    pub fn restart(&self) -> Berth {
        match self.0.restart() {
            Ok(berth) => Berth(berth),
            Err(log) => panic!("berth did not restart:\n{}", log.join("\n")),
        }
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

/// Runs a berth command to completion, without the caller's `BERTH_*` variables: (exit code,
/// stdout, stderr).
pub fn run_berth(args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new(BERTH);
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("BERTH_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    let output = command.output().expect("run berth");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
