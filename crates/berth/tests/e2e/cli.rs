//! The client commands against a real server: register (once, and in the foreground with
//! heartbeats until Ctrl-C), instances and services as tables and as JSON, watch, deregister;
//! and the precedence of flags over `BERTH_*` variables over the config file.

use crate::instances::next_event;
use crate::support::{BERTH, Berth, data_dir, run_berth, wait_for_metric};
use berth_testkit::ChildGuard;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn cli(berth: &Berth, args: &[&str]) -> (Option<i32>, String, String) {
    let mut full = args.to_vec();
    full.extend(["--server", &berth.base]);
    run_berth(&full)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_list_and_deregister_from_the_command_line() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);

    let (code, stdout, stderr) = cli(
        &berth,
        &[
            "register",
            "web",
            "--address",
            "10.3.0.1",
            "--port",
            "8080",
            "--ttl",
            "60s",
            "--tag",
            "blue",
            "--zone",
            "a",
            "--meta",
            "owner=team-1",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("registered 10.3.0.1:8080 of web"),
        "{stdout}"
    );

    let (code, stdout, _) = cli(&berth, &["instances", "web"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{stdout}");
    assert!(
        lines[1].contains("10.3.0.1:8080") && lines[1].contains("blue"),
        "{stdout}"
    );

    let (_, stdout, _) = cli(&berth, &["instances", "web", "--zone", "b", "--json"]);
    let empty: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(empty["instances"].as_array().unwrap().len(), 0);
    let (_, stdout, _) = cli(&berth, &["instances", "web", "--tag", "blue", "--json"]);
    let found: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(found["instances"][0]["meta"]["owner"], "team-1");

    let (_, stdout, _) = cli(&berth, &["services", "--json"]);
    let services: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(services["services"][0]["name"], "web");
    assert_eq!(services["services"][0]["zones"][0], "a");

    let (code, stdout, _) = cli(&berth, &["deregister", "web", "10.3.0.1:8080"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("deregistered"));
    let (code, _, stderr) = cli(&berth, &["deregister", "web", "10.3.0.1:8080"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not registered"), "{stderr}");

    // A bad input is the server's error, printed on one line.
    let (code, _, stderr) = cli(
        &berth,
        &["register", "Web!", "--address", "x", "--port", "1"],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("service"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_heartbeat_keeps_the_instance_until_ctrl_c_then_deregisters() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let mut events = client.events(Some("fg"), None).await.unwrap();

    let mut command = Command::new(BERTH);
    command
        .args([
            "register",
            "fg",
            "--address",
            "10.3.1.1",
            "--port",
            "9000",
            "--ttl",
            "1s",
        ])
        .args(["--heartbeat", "--server", &berth.base])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut foreground = ChildGuard::spawn(&mut command).unwrap();
    let stdout = foreground.child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::task::spawn_blocking(move || lines.next())
        .await
        .unwrap();
    assert!(first.unwrap().unwrap().contains("registered"));
    assert_eq!(next_event(&mut events).await.kind, "online");

    // Three TTLs later it is still there: the command renews it every TTL/3.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        client.instances("fg", &[]).await.unwrap().instances.len(),
        1
    );

    foreground.signal(rustix::process::Signal::INT);
    let status = tokio::task::spawn_blocking(move || foreground.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let offline = next_event(&mut events).await;
    assert_eq!(offline.kind, "offline");
    assert_eq!(offline.data["reason"], "deregistered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_line_per_event() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let mut command = Command::new(BERTH);
    command
        .args(["watch", "streamed", "--server", &berth.base])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watcher = ChildGuard::spawn(&mut command).unwrap();
    let stdout = watcher.child.stdout.take().unwrap();
    // The watch is connected once berth counts a second store watcher (the first is its own
    // view); then register and deregister.
    wait_for_metric(&berth.base, "berth_http_event_streams", 1.0).await;
    let client = berth.client();
    client
        .register(
            "streamed",
            &crate::instances::registration("10.3.2.1", 80, 60_000),
        )
        .await
        .unwrap();
    client.deregister("streamed", "10.3.2.1:80").await.unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(10), lines)
        .await
        .expect("two lines in time")
        .unwrap();
    assert!(
        lines[0].contains("online streamed 10.3.2.1:80"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("offline (deregistered) streamed 10.3.2.1:80"),
        "{lines:?}"
    );
    watcher.kill_hard();
}

#[test]
fn flags_win_over_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "store = \"embedded\"\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let data = dir.path().join("data");

    // The environment overrides the file: its bad store value is what berth complains about.
    let output = Command::new(BERTH)
        .args(["serve", "--config", config.to_str().unwrap()])
        .arg(format!("--data-dir={}", data.display()))
        .env("BERTH_STORE", "redis://from-the-environment:1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("redis://from-the-environment:1"));

    // A flag overrides the environment: berth starts on the embedded store.
    let mut command = Command::new(BERTH);
    command
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--store",
            "embedded",
        ])
        .arg(format!("--data-dir={}", data.display()))
        .args(["--log-format", "json"])
        .env("BERTH_STORE", "redis://from-the-environment:1")
        .env("BERTH_DNS_LISTEN", "127.0.0.1:0")
        .env("BERTH_XDS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut server = ChildGuard::spawn(&mut command).unwrap();
    let stderr = server.child.stderr.take().unwrap();
    let started = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("\"started\""))
        .expect("berth started");
    assert!(started.contains("\"store\":\"embedded\""), "{started}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_commands() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let ok = |args: &[&str]| {
        let (code, stdout, stderr) = cli(&berth, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        stdout
    };
    assert!(ok(&["kinds", "ls"]).contains("postgresql"));
    ok(&["kinds", "create", "redis", "--default-port", "6379"]);
    assert!(ok(&["apps", "create", "shop", "--kind", "play"]).contains("play:6011->9000"));
    assert!(
        ok(&["apps", "create", "shop-db", "--kind", "postgresql"])
            .contains("postgresql:6019->5432")
    );
    assert!(ok(&["apps", "add-kind", "shop", "redis", "--external", "7777"]).contains("7777"));
    ok(&["deps", "add", "shop", "shop-db"]);
    assert_eq!(ok(&["deps", "ls", "shop"]).trim(), "shop-db");
    assert_eq!(ok(&["start-order"]).trim(), "1: shop-db\n2: shop");
    assert_eq!(ok(&["start-order", "shop"]).trim(), "shop-db shop");
    let listing = ok(&["apps", "ls", "--prefix", "shop", "--sort", "-port"]);
    let first_app = listing.lines().nth(1).unwrap();
    assert!(
        first_app.starts_with("shop-db "),
        "highest lowest port first: {listing}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["apps", "show", "shop", "--json"])).unwrap();
    assert_eq!(shown["dependencies"], serde_json::json!(["shop-db"]));

    // Export to a file, import into another berth.
    let export = dir.parent().unwrap().join("catalog.yaml");
    std::fs::write(&export, ok(&["catalog", "export", "--format", "yaml"])).unwrap();
    let (_other_keep, other_dir) = data_dir();
    let other = Berth::embedded(&other_dir);
    let (code, stdout, stderr) = run_berth(&[
        "catalog",
        "import",
        export.to_str().unwrap(),
        "--server",
        &other.base,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("2 applications"), "{stdout}");

    ok(&[
        "backends",
        "create",
        "hw",
        "--app",
        "shop",
        "--version",
        "1",
        "--field",
        "port=80",
    ]);
    let backend: serde_json::Value =
        serde_json::from_str(&ok(&["backends", "show", "hw"])).unwrap();
    assert_eq!(backend["port"], 80);
    let (code, _, stderr) = cli(&berth, &["apps", "rm", "shop-db"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("shop-db is a dependency of shop"),
        "{stderr}"
    );
}
