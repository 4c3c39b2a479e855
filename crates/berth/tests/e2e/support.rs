//! Running the real `berth` binary in tests, on top of the testkit's `BerthServer`: start it on
//! a free port on either store, stop it gracefully or with SIGKILL, restart it on the same data
//! directory, run one-shot commands.

use berth_testkit::{BerthServer, EtcdServer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

    /// An embedded berth with extra environment variables.
    pub fn embedded_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Berth {
        let mut all = vec![format!("--data-dir={}", data_dir.display())];
        all.extend(args.iter().map(|a| a.to_string()));
        match BerthServer::start_with_env(Path::new(BERTH), &[], &all, env) {
            Ok(berth) => Berth(berth),
            Err(log) => panic!("berth did not start:\n{}", log.join("\n")),
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

    pub fn restart(&self) -> Berth {
        match self.0.restart() {
            Ok(berth) => Berth(berth),
            Err(log) => panic!("berth did not restart:\n{}", log.join("\n")),
        }
    }
}

/// An HTTP client for raw requests (with the process's TLS provider installed, as reqwest
/// needs one).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The current store revision, from `/health`.
pub async fn health_revision(base: &str) -> i64 {
    let health: serde_json::Value = crate::support::http()
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["revision"].as_i64().expect("revision in /health")
}

/// What `/metrics` answers.
pub async fn scrape(base: &str) -> String {
    crate::support::http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A metric's value from `/metrics` (a gauge or counter without labels); 0 when absent.
pub async fn metric(base: &str, name: &str) -> f64 {
    scrape(base)
        .await
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Waits until the metric `name` is at least `at_least` (for example until a blocking query
/// or an event stream the test opened is in flight on the server).
pub async fn wait_for_metric(base: &str, name: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(base, name).await < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    // Servers run side by side: DNS on a free port, never the default one.
    command.env("BERTH_DNS_LISTEN", "127.0.0.1:0");
    command.env("BERTH_XDS_LISTEN", "127.0.0.1:0");
    let output = command.output().expect("run berth");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A request body for the legacy APIs' tests.
pub enum Body<'a> {
    Empty,
    Json(serde_json::Value),
    Form(&'a [(&'a str, &'a str)]),
}

/// An answer, whatever its status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one raw request (with optional extra headers) and returns the answer as it is.
pub async fn send(
    base: &str,
    method: &str,
    path: &str,
    body: Body<'_>,
    headers: &[(&str, &str)],
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = crate::support::http().request(method, format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request = match body {
        Body::Empty => request,
        Body::Json(value) => request.json(&value),
        Body::Form(fields) => request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                fields
                    .iter()
                    .map(|(k, v)| {
                        format!("{}={}", berth_client::segment(k), berth_client::segment(v))
                    })
                    .collect::<Vec<_>>()
                    .join("&"),
            ),
    };
    let response = request.send().await.unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// Sends a 2 MiB body (above every API's 1 MiB limit) and returns the answer.
pub async fn send_oversized(base: &str, method: &str, path: &str, content_type: &str) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = crate::support::http()
        .request(method, format!("{base}{path}"))
        .header("content-type", content_type)
        .body(vec![b'a'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// Runs each of the given `async fn(&Berth)` tests twice: on the embedded store (a temporary
/// data directory) and on a real etcd started for the test.
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (_keep, dir) = $crate::support::data_dir();
                    let berth = $crate::support::Berth::embedded(&dir);
                    super::$test(&berth).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let etcd = berth_testkit::EtcdServer::start();
                    let berth = $crate::support::Berth::on_etcd(&etcd);
                    super::$test(&berth).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_stores;
