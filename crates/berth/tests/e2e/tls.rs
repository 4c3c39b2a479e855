//! TLS end to end, with certificates made by the test: HTTPS that curl and the CLI trust with
//! the CA and refuse without it; mutual TLS, where a client certificate is required and may
//! stand in for a token; certificates re-read on SIGHUP without dropping an open stream; berth
//! and the agent on an etcd with client certificates and authentication on.

use crate::auth::{BOOTSTRAP, auth_args};
use crate::support::{Berth, data_dir, run_berth};
use berth_client::{Client, ClientOptions, Registration};
use berth_testkit::pki::{Authority, Issued};
use berth_testkit::{EtcdServer, EtcdTls};
use futures::StreamExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// curl's answer: its exit code, and the status and HTTP version it got.
fn curl(args: &[&str]) -> (i32, String) {
    let output = Command::new("curl")
        .args(["--silent", "--max-time", "5", "--output", "/dev/null"])
        .args(["--write-out", "%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/install-test-deps)");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn server_certificate(authority: &Authority, dir: &Path, stem: &str) -> Issued {
    authority.issue(dir, stem, "berth", &["localhost", "127.0.0.1"])
}

fn tls_args(dir: &Path, server: &Issued) -> Vec<String> {
    vec![
        format!("--data-dir={}", dir.join("data").display()),
        format!("--tls-cert-file={}", server.cert_file.display()),
        format!("--tls-key-file={}", server.key_file.display()),
    ]
}

fn https(berth: &Berth) -> String {
    format!("https://{}", berth.address)
}

fn client_trusting(base: &str, ca: &Path) -> Client {
    Client::with_options(
        base,
        &ClientOptions {
            ca_pem: Some(std::fs::read(ca).unwrap()),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_trusted_with_the_ca_and_refused_without_it() {
    let (keep, _) = data_dir();
    let dir = keep.path();
    let authority = Authority::new("berth test CA");
    let ca = authority.write_certificate(&dir.join("ca.pem"));
    let server = server_certificate(&authority, dir, "server");
    let berth = Berth::start(&tls_args(dir, &server));
    let base = https(&berth);
    let ca_flag = ca.display().to_string();
    let health = format!("{base}/health");
    assert_eq!(
        curl(&["--http1.1", "--cacert", &ca_flag, &health]),
        (0, "200 1.1".into())
    );
    // ALPN: HTTP/2 when the client offers it.
    assert_eq!(
        curl(&["--http2", "--cacert", &ca_flag, &health]),
        (0, "200 2".into())
    );
    let (code, _) = curl(&[&health]);
    assert_eq!(
        code, 60,
        "curl must not trust berth's certificate without the CA"
    );
    // Plain HTTP on the TLS port gets nothing.
    let (code, _) = curl(&[&format!("http://{}/health", berth.address)]);
    assert_ne!(code, 0);

    let (code, stdout, stderr) = run_berth(&[
        "services",
        "--json",
        "--server",
        &base,
        "--ca-file",
        &ca_flag,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("services"), "{stdout}");
    let (code, _, stderr) = run_berth(&["services", "--server", &base]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&base),
        "the error names the server: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_that_can_stand_in_for_a_token() {
    let (keep, _) = data_dir();
    let dir = keep.path();
    let authority = Authority::new("berth test CA");
    let ca = authority.write_certificate(&dir.join("ca.pem"));
    let server = server_certificate(&authority, dir, "server");
    let client = authority.issue(dir, "payments", "payments", &[]);
    let stranger_authority = Authority::new("another CA");
    let stranger = stranger_authority.issue(dir, "stranger", "payments", &[]);
    let mut args = tls_args(dir, &server);
    args.push(format!("--tls-client-ca-file={}", ca.display()));
    args.push("--tls-client-cert-grants=read:*,write:payments-*".into());
    args.extend(auth_args(dir));
    let berth = Berth::start(&args);
    let base = https(&berth);
    let ca_flag = ca.display().to_string();
    let cert = client.cert_file.display().to_string();
    let key = client.key_file.display().to_string();
    let services = format!("{base}/v1/services");

    let (code, _) = curl(&["--cacert", &ca_flag, &services]);
    assert_ne!(code, 0, "no client certificate: no connection");
    let (code, _) = curl(&[
        "--cacert",
        &ca_flag,
        "--cert",
        &stranger.cert_file.display().to_string(),
        "--key",
        &stranger.key_file.display().to_string(),
        &services,
    ]);
    assert_ne!(code, 0, "a certificate of another authority: no connection");
    assert_eq!(
        curl(&[
            "--cacert", &ca_flag, "--cert", &cert, "--key", &key, &services
        ]),
        (0, "200 2".into()),
        "the certificate's grants read without a token"
    );
    // The certificate's grants write its team's services, owned by its subject.
    let (code, stdout, stderr) = run_berth(&[
        "register",
        "payments-api",
        "--address",
        "10.0.0.1",
        "--port",
        "80",
        "--json",
        "--server",
        &base,
        "--ca-file",
        &ca_flag,
        "--cert-file",
        &cert,
        "--key-file",
        &key,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let registered: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(registered["owner"], "payments");
    let (code, _, stderr) = run_berth(&[
        "register",
        "search-api",
        "--address",
        "10.0.0.1",
        "--port",
        "80",
        "--server",
        &base,
        "--ca-file",
        &ca_flag,
        "--cert-file",
        &cert,
        "--key-file",
        &key,
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("does not grant"), "{stderr}");
    // A token sent along wins over the certificate.
    let admin = format!("Authorization: Bearer {BOOTSTRAP}");
    assert_eq!(
        curl(&[
            "--cacert",
            &ca_flag,
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            &admin,
            &format!("{base}/v1/tokens"),
        ]),
        (0, "200 2".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_open_streams_stay() {
    let (keep, _) = data_dir();
    let dir = keep.path();
    let first_authority = Authority::new("first CA");
    let first_ca = first_authority.write_certificate(&dir.join("first-ca.pem"));
    let second_authority = Authority::new("second CA");
    let second_ca = second_authority.write_certificate(&dir.join("second-ca.pem"));
    let server = server_certificate(&first_authority, dir, "server");
    let berth = Berth::start(&tls_args(dir, &server));
    let base = https(&berth);
    let old = client_trusting(&base, &first_ca);
    let mut stream = old.events(Some("web"), None).await.unwrap();

    // The same files, now signed by the second authority.
    server_certificate(&second_authority, dir, "server");
    berth.signal(rustix::process::Signal::HUP);
    let reloaded = berth_testkit::wait_until(Duration::from_secs(5), || {
        berth
            .log()
            .iter()
            .any(|line| line.contains("TLS certificates reloaded"))
    });
    assert!(
        reloaded,
        "no reload in the log:\n{}",
        berth.log().join("\n")
    );

    let new = client_trusting(&base, &second_ca);
    new.register(
        "web",
        &Registration {
            address: "10.0.0.1".into(),
            port: 80,
            ..Registration::default()
        },
    )
    .await
    .expect("a new connection gets the new certificate");
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream opened before the reload still delivers")
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, "online");
    let refused = client_trusting(&base, &first_ca).services().await;
    assert!(refused.is_err(), "the old certificate is no longer served");

    // A file that does not load leaves the working certificate in place.
    std::fs::write(&server.cert_file, "not a certificate").unwrap();
    berth.signal(rustix::process::Signal::HUP);
    let kept = berth_testkit::wait_until(Duration::from_secs(5), || {
        berth
            .log()
            .iter()
            .any(|line| line.contains("keeping the old ones"))
    });
    assert!(kept);
    new.services()
        .await
        .expect("still served with the second certificate");
}

/// etcd with `--client-cert-auth` and `auth enable`: berth's store and the agent's etcd target
/// reach it with the CA, a client certificate and a user; without them, berth refuses to start
/// with a message that names etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_on_an_etcd_with_client_certificates_and_authentication() {
    let (keep, _) = data_dir();
    let dir = keep.path();
    let authority = Authority::new("etcd CA");
    let ca = authority.write_certificate(&dir.join("etcd-ca.pem"));
    let peer = authority.issue(dir, "etcd", "etcd", &["localhost", "127.0.0.1"]);
    let client = authority.issue(dir, "berth", "berth", &[]);
    let etcd = EtcdServer::start_with_tls(&EtcdTls {
        ca_file: ca.clone(),
        cert_file: peer.cert_file.clone(),
        key_file: peer.key_file.clone(),
    });
    let password_file = dir.join("etcd-password");
    std::fs::write(&password_file, "s3cret-root\n").unwrap();
    let _root = enable_etcd_auth(&etcd, &ca, &client, "s3cret-root").await;

    let store = format!("--store={}", etcd.store_url());
    let secured = vec![
        store.clone(),
        format!("--etcd-ca-file={}", ca.display()),
        format!("--etcd-cert-file={}", client.cert_file.display()),
        format!("--etcd-key-file={}", client.key_file.display()),
        "--etcd-user=root".into(),
        format!("--etcd-password-file={}", password_file.display()),
    ];
    let berth = Berth::start(&secured);
    let registered = berth
        .client()
        .register(
            "web",
            &Registration {
                address: "10.0.0.1".into(),
                port: 80,
                ..Registration::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(registered.0.service, "web");
    // The write is in etcd: a second node sees it.
    let second = Berth::start(&secured);
    assert_eq!(
        second
            .client()
            .instances("web", &[])
            .await
            .unwrap()
            .instances
            .len(),
        1
    );

    let without_user: Vec<String> = secured[..4].to_vec();
    let refused = Berth::try_start(&without_user)
        .err()
        .expect("no user: no start");
    assert!(
        refused.iter().any(|line| line.contains("etcd")),
        "{}",
        refused.join("\n")
    );
    let refused = Berth::try_start(&[store]).err().expect("no TLS: no start");
    assert!(refused.iter().any(|line| line.contains("etcd")));
}

/// Adds the user `root` with `password` to an etcd with client certificates, turns auth on,
/// and returns a client logged in as root.
pub async fn enable_etcd_auth(
    etcd: &EtcdServer,
    ca: &Path,
    client: &Issued,
    password: &str,
) -> etcd_client::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(
            std::fs::read(ca).unwrap(),
        ))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(&client.cert_file).unwrap(),
            std::fs::read(&client.key_file).unwrap(),
        ));
    let options = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(2));
    let mut admin = None;
    for _ in 0..50 {
        if let Ok(mut connected) =
            etcd_client::Client::connect([etcd.endpoint()], Some(options.clone())).await
            && connected.status().await.is_ok()
        {
            admin = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut admin = admin.expect("etcd over TLS answers");
    admin.user_add("root", password, None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    etcd_client::Client::connect([etcd.endpoint()], Some(options.with_user("root", password)))
        .await
        .unwrap()
}
