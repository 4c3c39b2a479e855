//! The DNS surface with real clients: `dig` (Debian's dnsutils) for every name form, the size
//! rules (512 bytes without EDNS, 1,232 with it, everything over TCP, TC and nothing partial),
//! and freshness (a registration and a deregistration visible to the next query).

use crate::support::{Berth, data_dir};
use berth_client::Registration;
use futures::StreamExt;
use serde_json::json;
use std::process::Command;

/// One `dig` answer: its status, its header flags and its answer and additional records.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<String>,
    additionals: Vec<String>,
    authority: Vec<String>,
}

impl Dig {
    /// The data of each answer record (its last fields).
    fn data(&self) -> Vec<String> {
        let mut data: Vec<String> = self
            .answers
            .iter()
            .map(|line| {
                line.split_whitespace()
                    .skip(4)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        data.sort();
        data
    }
}

fn dig(berth: &Berth, name: &str, kind: &str, options: &[&str]) -> Dig {
    let address = berth
        .surface_address("dns")
        .expect("berth logs its DNS address");
    let (host, port) = address.rsplit_once(':').unwrap();
    let output = Command::new("dig")
        .arg(format!("@{host}"))
        .args(["-p", port, name, kind, "+tries=1", "+time=2"])
        .args(options)
        .output()
        .expect("dig runs (scripts/install-test-deps installs dnsutils)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let mut dig = Dig {
        status: String::new(),
        flags: Vec::new(),
        answers: Vec::new(),
        additionals: Vec::new(),
        authority: Vec::new(),
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or_default().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest
                .split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.is_empty() || line.starts_with(';') {
            if line.is_empty() {
                section = "";
            }
        } else {
            match section {
                "answer" => dig.answers.push(line.to_string()),
                "additional" => dig.additionals.push(line.to_string()),
                "authority" => dig.authority.push(line.to_string()),
                _ => {}
            }
        }
    }
    assert!(!dig.status.is_empty(), "dig gave no answer:\n{text}");
    dig
}

fn instance(id: &str, address: &str, port: u16) -> Registration {
    Registration {
        id: Some(id.into()),
        address: address.into(),
        port,
        ..Registration::default()
    }
}

async fn post(berth: &Berth, path: &str, body: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", berth.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_gets_every_name_form() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let mut a = instance("a", "10.0.0.1", 8080);
    a.tags = vec!["primary".into()];
    a.zone = Some("eu-1a".into());
    a.weight = Some(5);
    a.meta = [("owner".to_string(), "payments".to_string())].into();
    let mut b = instance("b", "10.0.0.2", 8081);
    b.tags = vec!["udp".into()];
    client.register("web", &a).await.unwrap();
    client.register("web", &b).await.unwrap();
    client
        .register("web", &instance("c", "fd00::3", 8082))
        .await
        .unwrap();
    // flow's example: an application family's block, one port per kind.
    post(
        &berth,
        "/applications",
        json!({"id": "splashpage", "service": "play"}),
    )
    .await;
    post(
        &berth,
        "/applications",
        json!({"id": "splashpage-postgresql", "service": "postgresql"}),
    )
    .await;

    let web = dig(&berth, "web.service.berth", "A", &[]);
    assert_eq!(web.status, "NOERROR");
    assert!(web.flags.contains(&"aa".to_string()), "{web:?}");
    assert_eq!(web.data(), vec!["10.0.0.1", "10.0.0.2"]);
    assert!(
        web.answers
            .iter()
            .all(|line| line.split_whitespace().nth(1) == Some("0"))
    );
    assert_eq!(
        dig(&berth, "web.service.berth", "AAAA", &[]).data(),
        vec!["fd00::3"]
    );

    let srv = dig(&berth, "web.service.berth", "SRV", &[]);
    assert_eq!(
        srv.data(),
        vec![
            "1 1 8081 0a000002.addr.berth.",
            "1 1 8082 fd000000000000000000000000000003.addr.berth.",
            "1 5 8080 0a000001.addr.berth.",
        ]
    );
    assert_eq!(srv.additionals.len(), 3, "{srv:?}");
    assert_eq!(
        dig(&berth, "0a000001.addr.berth", "A", &[]).data(),
        vec!["10.0.0.1"]
    );

    assert_eq!(
        dig(&berth, "primary.web.service.berth", "A", &[]).data(),
        vec!["10.0.0.1"]
    );
    assert_eq!(
        dig(&berth, "web.service.eu-1a.zone.berth", "A", &[]).data(),
        vec!["10.0.0.1"]
    );
    // RFC 2782: `_udp` and `_tcp` are protocols, any other label a tag.
    assert_eq!(
        dig(&berth, "_web._udp.service.berth", "SRV", &[]).data(),
        vec!["1 1 8081 0a000002.addr.berth."]
    );
    assert_eq!(
        dig(&berth, "_web._tcp.service.berth", "SRV", &[])
            .data()
            .len(),
        2
    );
    assert_eq!(
        dig(&berth, "_web._primary.service.berth", "SRV", &[]).data(),
        vec!["1 5 8080 0a000001.addr.berth."]
    );

    let one = dig(&berth, "a.web.instance.berth", "TXT", &[]);
    assert_eq!(
        one.data(),
        vec!["\"owner=payments\" \"tag=primary\" \"port=8080\""]
    );
    assert_eq!(
        dig(&berth, "a.web.instance.berth", "A", &[]).data(),
        vec!["10.0.0.1"]
    );

    // ★ The port catalog.
    let play = dig(&berth, "_play._tcp.splashpage.app.berth", "SRV", &[]);
    assert_eq!(play.data(), vec!["0 0 6011 splashpage.service.berth."]);
    assert!(
        play.answers[0].split_whitespace().nth(1) == Some("60"),
        "{play:?}"
    );
    assert_eq!(
        dig(
            &berth,
            "_postgresql._tcp.splashpage-postgresql.app.berth",
            "SRV",
            &[]
        )
        .data(),
        vec!["0 0 6019 splashpage-postgresql.service.berth."]
    );
    assert_eq!(
        dig(&berth, "splashpage.app.berth", "TXT", &[]).data(),
        vec!["\"play=6011\""]
    );

    // Unknown names, no data, the zone's SOA, and no recursion for other names.
    let unknown = dig(&berth, "nobody.service.berth", "A", &[]);
    assert_eq!(unknown.status, "NXDOMAIN");
    assert!(unknown.authority[0].contains("SOA"), "{unknown:?}");
    assert_eq!(
        dig(&berth, "_nodejs._tcp.splashpage.app.berth", "SRV", &[]).status,
        "NXDOMAIN"
    );
    assert_eq!(dig(&berth, "nonsense.berth", "A", &[]).status, "NXDOMAIN");
    // A known name without records of the type asked: NOERROR, nothing, the SOA.
    let nodata = dig(&berth, "web.service.berth", "MX", &[]);
    assert_eq!(
        (nodata.status.as_str(), nodata.answers.len()),
        ("NOERROR", 0)
    );
    // An application not running is known: NODATA, not NXDOMAIN.
    assert_eq!(
        dig(&berth, "splashpage.service.berth", "A", &[]).status,
        "NOERROR"
    );
    let soa = dig(&berth, "berth", "SOA", &[]);
    let revision = client.instances("web", &[]).await.unwrap().index;
    let serial: i64 = soa.answers[0]
        .split_whitespace()
        .nth(6)
        .unwrap()
        .parse()
        .unwrap();
    assert!(serial >= revision, "serial {serial} < {revision}");
    let elsewhere = dig(&berth, "example.com", "A", &["+rec"]);
    assert_eq!(elsewhere.status, "REFUSED");
    assert!(!elsewhere.flags.contains(&"ra".to_string()));
}

/// A service of 200 instances: over UDP its A answer (about 3.3 KB) fits neither 512 bytes
/// nor 1,232, so both answers set TC and carry nothing; over TCP all 200 come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_answer_sets_tc_on_udp_and_comes_whole_over_tcp() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    for i in 0..200 {
        client
            .register(
                "big",
                &instance(
                    &format!("n{i}"),
                    &format!("10.1.{}.{}", i / 250, i % 250 + 1),
                    80,
                ),
            )
            .await
            .unwrap();
    }
    for options in [
        &["+noedns", "+ignore"][..],
        &["+bufsize=1232", "+ignore"][..],
    ] {
        let udp = dig(&berth, "big.service.berth", "A", options);
        assert!(
            udp.flags.contains(&"tc".to_string()),
            "{options:?}: {udp:?}"
        );
        assert!(udp.answers.is_empty(), "{options:?}: a cut answer {udp:?}");
    }
    let tcp = dig(&berth, "big.service.berth", "A", &["+tcp"]);
    assert!(!tcp.flags.contains(&"tc".to_string()));
    assert_eq!(tcp.answers.len(), 200);
    let srv = dig(&berth, "big.service.berth", "SRV", &["+tcp"]);
    assert_eq!((srv.answers.len(), srv.additionals.len()), (200, 200));
    // dig without +ignore retries over TCP on its own, as resolvers do.
    assert_eq!(
        dig(&berth, "big.service.berth", "A", &["+noedns"])
            .answers
            .len(),
        200
    );

    // A small answer still fits in 512 bytes, in shuffled order.
    for i in 0..8 {
        client
            .register(
                "small",
                &instance(&format!("s{i}"), &format!("10.2.0.{}", i + 1), 80),
            )
            .await
            .unwrap();
    }
    let mut orders = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let small = dig(&berth, "small.service.berth", "A", &["+noedns"]);
        assert!(!small.flags.contains(&"tc".to_string()));
        assert_eq!(small.answers.len(), 8);
        orders.insert(small.answers.join("|"));
    }
    assert!(orders.len() > 1, "the order never changed");
}

/// Answers come from the registry's view: what was acknowledged is in the next answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_and_an_expiry_are_in_the_next_answer() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let mut short = instance("a", "10.3.0.1", 80);
    short.ttl_ms = Some(1_000);
    let started = std::time::Instant::now();
    client.register("fresh", &short).await.unwrap();
    assert_eq!(
        dig(&berth, "fresh.service.berth", "A", &[]).data(),
        vec!["10.3.0.1"]
    );
    eprintln!("registration to a DNS answer: {:?}", started.elapsed());
    // The expiry's offline event, then the next question finds nothing.
    let mut events = client.events(Some("fresh"), None).await.unwrap();
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
            .await
            .expect("an expiry within 10 s")
            .expect("an event")
            .unwrap();
        if event.kind == "offline" {
            break;
        }
    }
    let expired = std::time::Instant::now();
    assert_eq!(
        dig(&berth, "fresh.service.berth", "A", &[]).status,
        "NXDOMAIN"
    );
    eprintln!("expiry event to a DNS answer: {:?}", expired.elapsed());
    assert!(expired.elapsed() < std::time::Duration::from_millis(100));
}

/// A tiny HTTP server on loopback that answers every request with its name.
fn named_http_server(name: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let mut read = Vec::new();
            while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read.extend_from_slice(&buffer[..n]),
                }
            }
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                )
                .as_bytes(),
            );
        }
    });
    port
}

/// Asks through HAProxy until `wanted` holds for the names answering 30 requests in a row,
/// for at most 15 s; returns the last set seen.
async fn through_haproxy(
    port: u16,
    wanted: impl Fn(&std::collections::BTreeSet<String>) -> bool,
) -> std::collections::BTreeSet<String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            match client
                .get(format!("http://127.0.0.1:{port}/"))
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {
                    seen.insert(response.text().await.unwrap_or_default());
                }
                _ => {
                    seen.insert("(no server)".to_string());
                }
            }
        }
        if wanted(&seen) || std::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// HAProxy (Debian's) with `server-template` and a `resolvers` section pointing at berth:
/// traffic reaches the registered instances, follows a new one and a removed one, and a
/// bender-style backend (the app at one version) is addressable by its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_instances_through_dns() {
    let (keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let dns = berth.surface_address("dns").unwrap();
    let register = |name: &'static str, version: &'static str| {
        let client = client.clone();
        async move {
            let mut registration = instance(name, "127.0.0.1", named_http_server(name));
            registration.version = Some(version.into());
            client.register("web", &registration).await.unwrap();
        }
    };
    register("a", "1.0").await;
    register("b", "1.0").await;
    post(
        &berth,
        "/v1/backends",
        json!({"name": "web-v1", "app": "web", "version": "1.0"}),
    )
    .await;

    let (all_port, v1_port) = (berth_testkit::free_port(), berth_testkit::free_port());
    let config = keep.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 100\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             resolvers berth\n  nameserver berth {dns}\n  accepted_payload_size 1232\n\
             \x20 resolve_retries 3\n  timeout resolve 100ms\n  timeout retry 100ms\n\
             \x20 hold valid 100ms\n  hold nx 100ms\n  hold other 100ms\n  hold obsolete 0s\n\
             frontend all\n  bind 127.0.0.1:{all_port}\n  default_backend web\n\
             frontend v1\n  bind 127.0.0.1:{v1_port}\n  default_backend web_v1\n\
             backend web\n  balance roundrobin\n\
             \x20 server-template web 10 _web._tcp.service.berth resolvers berth init-addr none\n\
             backend web_v1\n  balance roundrobin\n\
             \x20 server-template v1 10 _web-v1._tcp.backend.berth resolvers berth init-addr none\n"
        ),
    )
    .unwrap();
    let _haproxy = berth_testkit::ChildGuard::spawn(
        std::process::Command::new("haproxy")
            .args(["-db", "-q", "-f"])
            .arg(&config)
            .stdout(std::process::Stdio::null()),
    )
    .expect("haproxy runs (scripts/install-test-deps installs it)");

    let names = |list: &[&str]| -> std::collections::BTreeSet<String> {
        list.iter().map(|n| n.to_string()).collect()
    };
    let seen = through_haproxy(all_port, |seen| *seen == names(&["a", "b"])).await;
    assert_eq!(seen, names(&["a", "b"]));

    // A new instance (another version) joins the service, not the v1 backend.
    register("c", "2.0").await;
    let seen = through_haproxy(all_port, |seen| *seen == names(&["a", "b", "c"])).await;
    assert_eq!(seen, names(&["a", "b", "c"]));
    let seen = through_haproxy(v1_port, |seen| *seen == names(&["a", "b"])).await;
    assert_eq!(seen, names(&["a", "b"]));

    // A removed one leaves both.
    client.deregister("web", "a").await.unwrap();
    let seen = through_haproxy(all_port, |seen| *seen == names(&["b", "c"])).await;
    assert_eq!(seen, names(&["b", "c"]));
    let seen = through_haproxy(v1_port, |seen| *seen == names(&["b"])).await;
    assert_eq!(seen, names(&["b"]));
}

/// DNS carries no credentials: with auth on it answers what an anonymous caller may read
/// (the one auth check), and refuses the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_dns_answers_only_what_anonymous_callers_may_read() {
    const SECRET: &str = "berth_dns_test_bootstrap_secret_0123456789";
    let (keep, dir) = data_dir();
    let file = keep.path().join("bootstrap");
    std::fs::write(&file, SECRET).unwrap();
    let bootstrap = format!("--bootstrap-token-file={}", file.display());
    let closed = Berth::embedded_with_env(&dir, &["--auth", &bootstrap], &[]);
    let admin = closed.client().with_token(SECRET);
    admin
        .register("web", &instance("a", "10.4.0.1", 80))
        .await
        .unwrap();
    assert_eq!(
        dig(&closed, "web.service.berth", "A", &[]).status,
        "REFUSED"
    );
    assert_eq!(
        dig(&closed, "a.web.instance.berth", "A", &[]).status,
        "REFUSED"
    );
    assert_eq!(dig(&closed, "berth", "SOA", &[]).status, "NOERROR");
    drop(closed);

    let readable = Berth::embedded_with_env(&dir, &["--auth", &bootstrap, "--anonymous=read"], &[]);
    assert_eq!(
        dig(&readable, "web.service.berth", "A", &[]).data(),
        vec!["10.4.0.1"]
    );
}
