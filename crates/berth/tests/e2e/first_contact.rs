//! What a new CLI user meets: completions bash can load, man pages, `berth status`, an error
//! that names the server it could not reach, and progress of a catalog import and export on a
//! terminal (a pseudo-terminal from util-linux's `script`) that is absent when piped.

use crate::support::{BERTH, Berth, data_dir, run_berth};
use std::process::Command;

#[test]
fn completions_for_three_shells_and_bash_loads_its_own() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, stderr) = run_berth(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        assert!(
            stdout.contains("berth") && stdout.contains("catalog") && stdout.len() > 1000,
            "{shell}: {stdout}"
        );
    }
    let loaded = Command::new("bash")
        .args([
            "--norc",
            "-c",
            &format!("source <('{BERTH}' completions bash) && complete -p berth"),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success() && said.contains("berth"),
        "{said}{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
}

#[test]
fn man_pages_from_the_same_definitions() {
    let (code, stdout, stderr) = run_berth(&["man"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with(".ie") || stdout.contains(".TH berth"),
        "{stdout}"
    );
    assert!(stdout.contains("serve"), "{stdout}");
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("man1");
    let (code, _, stderr) = run_berth(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    for page in ["berth.1", "berth-serve.1", "berth-catalog-import.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_server_at_a_glance() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let registration = berth_client::Registration {
        id: Some("a".into()),
        address: "10.0.0.1".into(),
        port: 80,
        ..Default::default()
    };
    berth.client().register("web", &registration).await.unwrap();
    let (code, stdout, stderr) = run_berth(&["status", "--server", &berth.base]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("health      ok"), "{stdout}");
    assert!(
        stdout.contains("store       embedded at revision"),
        "{stdout}"
    );
    assert!(stdout.contains("instances   1 live"), "{stdout}");
    let (_, stdout, _) = run_berth(&["status", "--server", &berth.base, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["instances"], 1);
    assert_eq!(status["services"], 1);
    assert_eq!(status["health"]["status"], "ok");
}

#[test]
fn an_unreachable_server_is_named_with_what_to_do() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let (code, _, stderr) = run_berth(&["services", "--server", &server]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach berth at {server}: Connection refused"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("is `berth serve` running at {server}?")),
        "{stderr}"
    );
    assert!(!stderr.contains("error sending request"), "{stderr}");
}

/// Runs `berth args…` on a pseudo-terminal; everything it wrote (stdout and stderr).
fn on_a_terminal(args: &[&str]) -> String {
    let line = std::iter::once(BERTH)
        .chain(args.iter().copied())
        .map(|arg| format!("'{arg}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script.args(["--quiet", "--return", "--command", &line, "/dev/null"]);
    for (name, _) in std::env::vars() {
        if name.starts_with("BERTH_") {
            script.env_remove(name);
        }
    }
    let output = script.output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{said}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_import_and_export_show_progress_on_a_terminal_only() {
    let (_keep, dir) = data_dir();
    let source = Berth::embedded(&dir);
    let http = reqwest::Client::new();
    for index in 0..300 {
        let created = http
            .post(format!("{}/v1/apps", source.base))
            .json(&serde_json::json!({"id": format!("app-{index}"), "kind": "play"}))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success());
    }

    let exported = on_a_terminal(&["catalog", "export", "--server", &source.base]);
    assert!(exported.contains("exporting the catalog: "), "{exported}");
    assert!(
        exported.contains("\r\x1b[2K"),
        "the line is erased: {exported}"
    );
    assert!(exported.contains("app-299"), "{exported}");

    let (code, export, stderr) = run_berth(&["catalog", "export", "--server", &source.base]);
    assert_eq!(code, Some(0));
    assert!(stderr.is_empty(), "piped: no progress: {stderr}");
    let file = dir.parent().unwrap().join("catalog.json");
    std::fs::write(&file, &export).unwrap();

    let (_keep_target, target_dir) = data_dir();
    let target = Berth::embedded(&target_dir);
    let file_text = file.to_str().unwrap();
    let imported = on_a_terminal(&["catalog", "import", file_text, "--server", &target.base]);
    assert!(
        imported.contains(&format!("importing {file_text}: ")),
        "{imported}"
    );
    assert!(imported.contains("300 applications"), "{imported}");

    let (_keep_quiet, quiet_dir) = data_dir();
    let quiet = Berth::embedded(&quiet_dir);
    let (code, stdout, stderr) =
        run_berth(&["catalog", "import", file_text, "--server", &quiet.base]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "piped: no progress: {stderr}");
    assert!(stdout.contains("300 applications"), "{stdout}");

    let (_keep_json, json_dir) = data_dir();
    let json_target = Berth::embedded(&json_dir);
    let json = on_a_terminal(&[
        "catalog",
        "import",
        file_text,
        "--server",
        &json_target.base,
        "--json",
    ]);
    assert!(!json.contains("importing "), "--json: no progress: {json}");
    assert!(json.contains("\"applications\": 300"), "{json}");
}
