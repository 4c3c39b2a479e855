//! `berth agent` against the real Docker engine: containers of a local busybox-static image
//! are started, stopped, killed, paused, made unhealthy and churned, and berth (or etcd, in
//! service-registrar's layout) must follow. Each test labels its containers and runs its agent
//! with `--only-label`, so tests running side by side on one engine do not see each other's
//! containers; every container, network and image is removed at the end.

use crate::instances::next_event;
use crate::process::assert_one_clear_error;
use crate::support::{BERTH, Berth, data_dir, run_berth};
use berth_client::{Client, Instance};
use berth_testkit::docker::{DockerScope, IDLE, docker};
use berth_testkit::{BerthAgent, EtcdServer, free_port};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// The issue's bound: a container change shows in berth within 2 s.
const PROMPT: Duration = Duration::from_secs(2);

fn start_agent(scope: &DockerScope, target: &str, host_id: &str, extra: &[&str]) -> BerthAgent {
    let mut args = vec![
        format!("--target={target}"),
        format!("--host-id={host_id}"),
        format!("--only-label={}", scope.label),
        "--advertise=10.1.2.3".to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    BerthAgent::start(Path::new(BERTH), &args)
        .unwrap_or_else(|log| panic!("the agent did not start:\n{}", log.join("\n")))
}

fn berth_target(berth: &Berth) -> String {
    format!("berth://{}", berth.address)
}

/// Polls `check` every 20 ms until it gives a value, for at most `timeout`.
async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn instances(client: &Client, service: &str) -> Vec<Instance> {
    client.instances(service, &[]).await.unwrap().instances
}

/// Waits until `service` has exactly `count` instances; returns them and how long it took.
async fn settle(
    client: &Client,
    service: &str,
    count: usize,
    within: Duration,
) -> (Vec<Instance>, Duration) {
    let started = Instant::now();
    let found = until(
        &format!("{service} with {count} instances"),
        within,
        || async {
            let found = instances(client, service).await;
            (found.len() == count).then_some(found)
        },
    )
    .await;
    (found, started.elapsed())
}

/// The host port Docker published `port` (e.g. `8080/tcp`) on.
fn host_port(container: &str, port: &str) -> u16 {
    let mapping = docker(&["port", container, port]);
    let first = mapping.lines().next().unwrap_or_default();
    first.rsplit(':').next().unwrap().parse().unwrap()
}

fn name(scope: &DockerScope, what: &str) -> String {
    format!("b{}-{what}", scope.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_appear_and_vanish_with_their_containers() {
    let scope = DockerScope::new();
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let agent = start_agent(
        &scope,
        &berth_target(&berth),
        "host-a",
        &["--metrics-listen=127.0.0.1:0", "--tags=docker"],
    );

    let web = scope.image("web:1.2.3");
    let web_name = name(&scope, "web");
    let env = [
        "-e",
        "SERVICE_TAGS=blue,green",
        "-e",
        "ENVIRONMENT=prod",
        "-e",
        "SERVICE_REGION=eu",
    ];
    let mut args: Vec<&str> = vec!["--name", &web_name, "-p", "127.0.0.1::8080"];
    args.extend(env);
    scope.run(&args, &web, IDLE);
    let (found, took) = settle(&client, "web", 1, PROMPT).await;
    let instance = &found[0];
    assert_eq!(instance.id, format!("host-a:{web_name}:8080"));
    assert_eq!(
        instance.address, "127.0.0.1",
        "the port is bound to loopback only"
    );
    assert_eq!(instance.port, host_port(&web_name, "8080/tcp"));
    assert_eq!(instance.version.as_deref(), Some("1.2.3"));
    assert_eq!(instance.tags, vec!["blue", "docker", "green", "prod"]);
    assert_eq!(instance.meta["region"], "eu");
    assert_eq!(instance.meta["berth.agent.host"], "host-a");
    assert_eq!(instance.meta["berth.agent.container"], web_name);
    assert_eq!(instance.ttl_ms, 15_000, "ttl mode's default TTL");
    eprintln!("registered {took:?} after docker run returned");

    // Two ports (one UDP, published on every address): one named per port, one suffixed.
    let multi = scope.image("multi:2");
    let multi_name = name(&scope, "multi");
    scope.run(
        &[
            "--name",
            &multi_name,
            "-p",
            "127.0.0.1::8080",
            "-p",
            "9090/udp",
            "-e",
            "SERVICE_8080_NAME=api",
        ],
        &multi,
        IDLE,
    );
    // An ignored container, then one named by NAME: once the latter shows, the former was
    // looked at too (the agent takes containers in order).
    let hidden = scope.image("hidden:1");
    scope.run(
        &["-p", "127.0.0.1::80", "-e", "SERVICE_IGNORE=true"],
        &hidden,
        IDLE,
    );
    let etc_name = name(&scope, "etc");
    scope.run(
        &[
            "--name",
            &etc_name,
            "-p",
            "127.0.0.1::4001",
            "-e",
            "NAME=etc",
        ],
        &scope.image("etcd:3"),
        IDLE,
    );
    settle(&client, "api", 1, PROMPT).await;
    let (udp, _) = settle(&client, "multi-9090", 1, PROMPT).await;
    assert_eq!(udp[0].id, format!("host-a:{multi_name}:9090:udp"));
    assert_eq!(
        udp[0].address, "10.1.2.3",
        "published on every address: the advertised one"
    );
    assert_eq!(udp[0].port, host_port(&multi_name, "9090/udp"));
    settle(&client, "etc", 1, PROMPT).await;
    assert!(instances(&client, "hidden").await.is_empty());

    // Paused: out; unpaused: back.
    docker(&["pause", &etc_name]);
    settle(&client, "etc", 0, PROMPT).await;
    docker(&["unpause", &etc_name]);
    settle(&client, "etc", 1, PROMPT).await;

    // Stop, kill, remove: each gone within 2 s.
    let mut events = client.events(Some("web"), None).await.unwrap();
    docker(&["stop", &web_name]);
    let (_, took) = settle(&client, "web", 0, PROMPT).await;
    eprintln!("deregistered {took:?} after docker stop returned");
    let offline = next_event(&mut events).await;
    assert_eq!(
        (offline.kind.as_str(), &offline.data["reason"]),
        ("offline", &serde_json::json!("deregistered"))
    );
    docker(&["kill", &multi_name]);
    settle(&client, "api", 0, PROMPT).await;
    settle(&client, "multi-9090", 0, PROMPT).await;
    docker(&["rm", "-f", &etc_name]);
    settle(&client, "etc", 0, PROMPT).await;

    // The agent's metrics counted it all.
    let metrics_address = agent
        .log()
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["message"] == "metrics at /metrics")
        .and_then(|event| event["address"].as_str().map(String::from))
        .expect("the metrics address in the log");
    let text = crate::support::scrape(&format!("http://{metrics_address}")).await;
    let counter = |name: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(counter("berth_agent_registrations_total") >= 5.0, "{text}");
    assert!(
        counter("berth_agent_deregistrations_total") >= 5.0,
        "{text}"
    );
    assert!(
        text.contains("berth_agent_resync_duration_seconds"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_leaves_records_that_expire_and_a_restart_resyncs_without_flapping() {
    let scope = DockerScope::new();
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let mut agent = start_agent(&scope, &berth_target(&berth), "host-b", &["--ttl=2s"]);
    let image = scope.image("svc:1");
    let first = name(&scope, "first");
    scope.run(&["--name", &first, "-p", "127.0.0.1::80"], &image, IDLE);
    settle(&client, "svc", 1, PROMPT).await;

    let mut events = client.events(Some("svc"), None).await.unwrap();
    agent.kill_hard();
    let killed_at = Instant::now();
    // Started while no agent runs: the next agent picks it up.
    let second = name(&scope, "second");
    scope.run(&["--name", &second, "-p", "127.0.0.1::80"], &image, IDLE);
    let mut agent = agent
        .restart()
        .unwrap_or_else(|log| panic!("{}", log.join("\n")));
    let (found, _) = settle(&client, "svc", 2, PROMPT).await;
    let ids: BTreeSet<String> = found.iter().map(|i| i.id.clone()).collect();
    assert_eq!(
        ids,
        BTreeSet::from([format!("host-b:{first}:80"), format!("host-b:{second}:80")])
    );
    // No flapping: past the first agent's TTL, the only event is the new container's online.
    let mut seen = Vec::new();
    let quiet_until = killed_at + Duration::from_millis(3_500);
    while let Ok(Some(Ok(event))) = tokio::time::timeout(
        quiet_until.saturating_duration_since(Instant::now()),
        futures::StreamExt::next(&mut events),
    )
    .await
    {
        seen.push((
            event.kind,
            event.data["instance"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    assert_eq!(
        seen,
        vec![("online".to_string(), format!("host-b:{second}:80"))]
    );
    assert_eq!(instances(&client, "svc").await.len(), 2);

    // SIGKILL in ttl mode: nobody deregisters, the records expire at their TTL.
    agent.kill_hard();
    let killed_at = Instant::now();
    for _ in 0..2 {
        let offline = next_event(&mut events).await;
        assert_eq!(
            (offline.kind.as_str(), &offline.data["reason"]),
            ("offline", &serde_json::json!("expired"))
        );
    }
    let lived = killed_at.elapsed();
    assert!(
        lived >= Duration::from_millis(1_000) && lived < Duration::from_millis(3_500),
        "{lived:?}"
    );
    assert!(instances(&client, "svc").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_mode_registers_container_addresses_on_a_user_network() {
    let mut scope = DockerScope::new();
    let network = scope.network();
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let _agent = start_agent(
        &scope,
        &berth_target(&berth),
        "host-c",
        &["--internal", &format!("--internal-network={network}")],
    );
    let container = name(&scope, "inside");
    // Exposed, not published: only reachable on the network.
    scope.run(
        &[
            "--name",
            &container,
            "--network",
            &network,
            "--expose",
            "8080",
        ],
        &scope.image("inside:1"),
        IDLE,
    );
    let (found, _) = settle(&client, "inside", 1, PROMPT).await;
    let address = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        &container,
    ]);
    assert_eq!(
        (found[0].address.as_str(), found[0].port),
        (address.as_str(), 8080)
    );
    docker(&["stop", &container]);
    settle(&client, "inside", 0, PROMPT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_with_a_healthcheck_are_registered_only_while_healthy() {
    let scope = DockerScope::new();
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let _agent = start_agent(&scope, &berth_target(&berth), "host-d", &[]);
    let container = name(&scope, "checked");
    scope.run(
        &[
            "--name",
            &container,
            "-p",
            "127.0.0.1::80",
            "--health-cmd",
            "test -f /tmp/healthy",
            "--health-interval",
            "300ms",
            "--health-retries",
            "1",
        ],
        &scope.image("checked:1"),
        &[
            "/bin/sh",
            "-c",
            "touch /tmp/healthy; trap 'exit 0' TERM; sleep 3600 & wait",
        ],
    );
    let health = || docker(&["inspect", "-f", "{{.State.Health.Status}}", &container]);
    settle(&client, "checked", 1, Duration::from_secs(5)).await;
    assert_eq!(health(), "healthy");
    // The check fails: out, while the container keeps running.
    docker(&["exec", &container, "rm", "/tmp/healthy"]);
    settle(&client, "checked", 0, Duration::from_secs(5)).await;
    assert_eq!(health(), "unhealthy");
    docker(&["exec", &container, "touch", "/tmp/healthy"]);
    settle(&client, "checked", 1, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_mode_on_etcd_writes_service_registrars_keys_and_documents() {
    let scope = DockerScope::new();
    let etcd = EtcdServer::start();
    let mut kv = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    // Another host's document and a key that is not JSON: never touched.
    let foreign = r#"{"host":"other-host","id":"x"}"#;
    kv.put("/services/prod/other/1/2/x", foreign, None)
        .await
        .unwrap();
    kv.put("/services/junk", "not json", None).await.unwrap();
    let target = format!("etcd://{}", etcd.endpoint());
    let mut agent = start_agent(
        &scope,
        &target,
        "host-e",
        &["--mode=prune", "--resync=1s", "--publish-env"],
    );
    let container = name(&scope, "etc");
    scope.run(
        &[
            "--name",
            &container,
            "--hostname",
            "cafe12345678",
            "-p",
            "127.0.0.1::4001",
            "-e",
            "ENVIRONMENT=prod",
            "-e",
            "NAME=etc",
            "-e",
            "A=b=c",
        ],
        &scope.image("etcd:3"),
        IDLE,
    );
    let port = host_port(&container, "4001/tcp");
    let key = format!("/services/prod/etc/4001/{port}/cafe12345678");
    let read = |key: String| {
        let mut kv = kv.clone();
        async move {
            let answer = kv.get(key, None).await.unwrap();
            answer
                .kvs()
                .first()
                .map(|kv| (kv.value_str().unwrap().to_string(), kv.lease()))
        }
    };
    let (document, lease) = until("the legacy key", PROMPT, || read(key.clone())).await;
    assert_eq!(lease, 0, "prune mode: no expiry");
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    let id = docker(&["inspect", "-f", "{{.Id}}", &container]);
    assert_eq!(document["id"], id.as_str());
    assert_eq!(document["host"], "host-e");
    assert_eq!(document["ipaddress"], "127.0.0.1");
    assert_eq!(document["env"]["ENVIRONMENT"], "prod");
    assert_eq!(document["env"]["A"], "b=c");
    assert_eq!(document["tags"], serde_json::json!(["prod"]));
    assert_eq!(document["name"], format!("/{container}"));
    assert!(document["image"].as_str().unwrap().ends_with("/etcd:3"));
    assert_eq!(document["hostname"], "cafe12345678");
    assert_eq!(document["host_port"], port.to_string());
    assert_eq!(
        (&document["proto"], &document["port"]),
        (&serde_json::json!("tcp"), &serde_json::json!("4001"))
    );
    assert_eq!(document["path"], key.as_str());

    // The container stops while no agent runs; the next agent's resync prunes its key and
    // nothing else.
    agent.kill_hard();
    docker(&["stop", &container]);
    assert!(
        read(key.clone()).await.is_some(),
        "prune mode: the key outlives the agent"
    );
    let _agent = agent
        .restart()
        .unwrap_or_else(|log| panic!("{}", log.join("\n")));
    until("the key pruned", Duration::from_secs(5), || async {
        read(key.clone()).await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        read("/services/prod/other/1/2/x".into()).await.unwrap().0,
        foreign
    );
    assert_eq!(read("/services/junk".into()).await.unwrap().0, "not json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_mode_on_etcd_puts_keys_on_a_lease_that_dies_with_the_agent() {
    let scope = DockerScope::new();
    let etcd = EtcdServer::start();
    let kv = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let target = format!("etcd://{}", etcd.endpoint());
    let mut agent = start_agent(
        &scope,
        &target,
        "host-i",
        &[
            "--ttl=2s",
            "--etcd-path=string:dc1,environment:NAME,service:HOSTNAME",
        ],
    );
    let container = name(&scope, "leased");
    scope.run(
        &[
            "--name",
            &container,
            "--hostname",
            "beef",
            "-p",
            "127.0.0.1::80",
            "-e",
            "NAME=leased",
        ],
        &scope.image("leased:1"),
        IDLE,
    );
    let key = "/services/dc1/leased/beef".to_string();
    let read = || {
        let mut kv = kv.clone();
        let key = key.clone();
        async move {
            kv.get(key, None)
                .await
                .unwrap()
                .kvs()
                .first()
                .map(|kv| kv.lease())
        }
    };
    let lease = until("the key", PROMPT, || async { read().await }).await;
    assert_ne!(lease, 0, "ttl mode: the key is on the agent's lease");
    // Renewed while the agent runs (over two TTLs), gone one TTL after it is killed.
    let kept_until = Instant::now() + Duration::from_millis(4_500);
    while Instant::now() < kept_until {
        assert!(
            read().await.is_some(),
            "the key expired while the agent ran"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    agent.kill_hard();
    let killed_at = Instant::now();
    until("the key expired", Duration::from_secs(5), || async {
        read().await.is_none().then_some(())
    })
    .await;
    assert!(
        killed_at.elapsed() >= Duration::from_millis(500),
        "{:?}",
        killed_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_containers_churned_in_parallel_end_with_berth_matching_docker_ps() {
    let scope = DockerScope::new();
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let _agent = start_agent(&scope, &berth_target(&berth), "host-f", &[]);
    let image = scope.image("churn:1");
    let label = scope.label.clone();
    // Ten workers, five containers each: run every one; stop a third, remove a third, keep
    // the rest.
    let workers: Vec<_> = (0..10)
        .map(|worker| {
            let (image, label) = (image.clone(), label.clone());
            std::thread::spawn(move || {
                for index in 0..5 {
                    let n = worker * 5 + index;
                    let id = docker(&[
                        "run",
                        "-d",
                        "--label",
                        &label,
                        "-p",
                        "127.0.0.1::80",
                        &image,
                        IDLE[0],
                        IDLE[1],
                        IDLE[2],
                    ]);
                    match n % 3 {
                        0 => drop(docker(&["stop", "-t", "1", &id])),
                        1 => drop(docker(&["rm", "-f", &id])),
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a churn worker");
    }
    let running = scope.running();
    assert_eq!(running.len(), 16);
    let short = |ids: &[String]| {
        ids.iter()
            .map(|id| id[..12].to_string())
            .collect::<BTreeSet<_>>()
    };
    let registered = |found: &[Instance]| {
        found
            .iter()
            .map(|i| i.meta["berth.agent.container_id"].clone())
            .collect::<BTreeSet<_>>()
    };
    let expected = short(&running);
    until(
        "berth matching docker ps",
        Duration::from_secs(10),
        || async {
            let found = instances(&client, "churn").await;
            (registered(&found) == expected && found.len() == expected.len()).then_some(())
        },
    )
    .await;
    // And all stopped at once: berth empties.
    let stoppers: Vec<_> = running
        .into_iter()
        .map(|id| std::thread::spawn(move || docker(&["stop", "-t", "1", &id])))
        .collect();
    for stopper in stoppers {
        stopper.join().expect("a stopper");
    }
    settle(&client, "churn", 0, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_loses_nothing_and_the_next_server_takes_over() {
    let scope = DockerScope::new();
    let (_keep, dir) = data_dir();
    let port = free_port();
    let mut berth = Berth::start(&[
        format!("--data-dir={}", dir.display()),
        format!("--listen=127.0.0.1:{port}"),
    ]);
    let client = berth.client();
    // The first server never answers: every call fails over to the second.
    let target = format!("berth://127.0.0.1:{},127.0.0.1:{port}", free_port());
    let agent = start_agent(&scope, &target, "host-g", &[]);
    let image = scope.image("steady:1");
    let before = name(&scope, "before");
    scope.run(&["--name", &before, "-p", "127.0.0.1::80"], &image, IDLE);
    settle(&client, "steady", 1, PROMPT).await;

    // berth goes down; meanwhile one container stops and another starts.
    assert!(berth.terminate(Duration::from_secs(30)).success());
    docker(&["stop", &before]);
    let during = name(&scope, "during");
    scope.run(&["--name", &during, "-p", "127.0.0.1::80"], &image, IDLE);
    // Down until the agent has seen it (its client tries every server three rounds first).
    until(
        "the agent sees the outage",
        Duration::from_secs(15),
        || async {
            agent
                .log()
                .iter()
                .any(|line| line.contains("the target cannot be reached"))
                .then_some(())
        },
    )
    .await;
    let berth = berth.restart();
    let back = Instant::now();
    // The stopped container's record survived the restart (its lease did); the agent's
    // resync removes it and puts the new one.
    let wanted = vec![format!("host-g:{during}:80")];
    until(
        "berth in sync with Docker",
        Duration::from_secs(15),
        || async {
            let ids: Vec<String> = instances(&client, "steady")
                .await
                .into_iter()
                .map(|i| i.id)
                .collect();
            (ids == wanted).then_some(())
        },
    )
    .await;
    eprintln!("in sync {:?} after berth came back", back.elapsed());
    assert!(
        agent
            .log()
            .iter()
            .any(|line| line.contains("the target answers again")),
        "the agent noticed the outage and the recovery"
    );
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deregisters_what_the_agent_owns_unless_told_to_keep_it() {
    let scope = DockerScope::new();
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    // Someone else's instance of the same service: never touched.
    client
        .register(
            "kept",
            &crate::instances::registration("10.9.9.9", 80, 60_000),
        )
        .await
        .unwrap();
    let mut agent = start_agent(&scope, &berth_target(&berth), "host-h", &[]);
    scope.run(&["-p", "127.0.0.1::80"], &scope.image("kept:1"), IDLE);
    settle(&client, "kept", 2, PROMPT).await;
    assert!(agent.terminate(Duration::from_secs(10)).success());
    let (left, _) = settle(&client, "kept", 1, PROMPT).await;
    assert_eq!(left[0].id, "10.9.9.9:80");

    let mut agent = start_agent(&scope, &berth_target(&berth), "host-h", &["--keep-on-exit"]);
    settle(&client, "kept", 2, PROMPT).await;
    assert!(agent.terminate(Duration::from_secs(10)).success());
    assert_eq!(
        instances(&client, "kept").await.len(),
        2,
        "--keep-on-exit leaves them"
    );
}

#[test]
fn bad_settings_exit_2_naming_the_flag_and_an_unreachable_engine_exits_1() {
    let refused = [
        (
            vec!["--target=consul://x:1"],
            "--target: \"consul://x:1\" is neither",
        ),
        (vec!["--ttl=100ms"], "--ttl: 100ms is outside 1s to 24h"),
        (vec!["--resync=10ms"], "--resync: 10ms is shorter than 1s"),
        (
            vec!["--host-id=a/b"],
            "--host-id: \"a/b\" must be non-empty",
        ),
        (
            vec!["--etcd-path=service:PORT,bad"],
            "--etcd-path: path element \"bad\"",
        ),
        (
            vec!["--etcd-path=container:HOSTNAME"],
            "unknown type \"container\"",
        ),
        (
            vec![
                "--target=etcd://127.0.0.1:1",
                "--target=berth://127.0.0.1:2",
            ],
            "an etcd target is one URL",
        ),
    ];
    for (flags, expected) in refused {
        let mut args = vec!["agent", "--docker=unix:///nonexistent/docker.sock"];
        args.extend(flags.iter().copied());
        let (code, _, stderr) = run_berth(&args);
        assert_eq!(code, Some(2), "{flags:?}: {stderr}");
        assert_one_clear_error(&stderr, expected);
    }

    let (code, _, stderr) = run_berth(&[
        "agent",
        "--docker=unix:///nonexistent/docker.sock",
        "--log-format=text",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_clear_error(
        &stderr,
        "cannot reach the Docker engine at unix:///nonexistent/docker.sock",
    );
}

/// With auth on, the agent sends the token of its file: what it registers belongs to the
/// token's team.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_registers_with_its_token_file_as_its_team() {
    let scope = DockerScope::new();
    let (keep, dir) = data_dir();
    let mut args = vec![format!("--data-dir={}", dir.display())];
    args.extend(crate::auth::auth_args(keep.path()));
    let berth = Berth::start(&args);
    let admin = crate::auth::admin(&berth);
    let made = admin
        .create_token("platform", &["write:*".into(), "read:*".into()], "agent")
        .await
        .unwrap();
    let token_file = keep.path().join("agent-token");
    std::fs::write(&token_file, made.secret.unwrap()).unwrap();
    let _agent = start_agent(
        &scope,
        &berth_target(&berth),
        "host-t",
        &[&format!("--token-file={}", token_file.display())],
    );
    let container = name(&scope, "owned");
    scope.run(
        &["--name", &container, "-p", "127.0.0.1::8080"],
        &scope.image("owned:1"),
        IDLE,
    );
    let (found, _) = settle(&admin, "owned", 1, PROMPT).await;
    assert_eq!(found[0].owner.as_deref(), Some("platform"));
    docker(&["stop", &container]);
    settle(&admin, "owned", 0, PROMPT).await;
}

/// The etcd target over TLS with a client certificate and a user (service-registrar's layout
/// on a secured etcd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_target_reaches_an_etcd_with_tls_and_authentication() {
    use berth_testkit::pki::Authority;
    let scope = DockerScope::new();
    let (keep, _) = data_dir();
    let dir = keep.path();
    let authority = Authority::new("etcd CA");
    let ca = authority.write_certificate(&dir.join("etcd-ca.pem"));
    let peer = authority.issue(dir, "etcd", "etcd", &["localhost", "127.0.0.1"]);
    let client = authority.issue(dir, "agent", "agent", &[]);
    let etcd = EtcdServer::start_with_tls(&berth_testkit::EtcdTls {
        ca_file: ca.clone(),
        cert_file: peer.cert_file.clone(),
        key_file: peer.key_file.clone(),
    });
    let kv = crate::tls::enable_etcd_auth(&etcd, &ca, &client, "agent-pw").await;
    let password_file = dir.join("password");
    std::fs::write(&password_file, "agent-pw").unwrap();
    let _agent = start_agent(
        &scope,
        &format!("etcd://{}", etcd.endpoint()),
        "host-s",
        &[
            "--mode=prune",
            &format!("--etcd-ca-file={}", ca.display()),
            &format!("--etcd-cert-file={}", client.cert_file.display()),
            &format!("--etcd-key-file={}", client.key_file.display()),
            "--etcd-user=root",
            &format!("--etcd-password-file={}", password_file.display()),
        ],
    );
    let container = name(&scope, "sec");
    scope.run(
        &[
            "--name",
            &container,
            "-p",
            "127.0.0.1::4001",
            "-e",
            "NAME=sec",
        ],
        &scope.image("sec:1"),
        IDLE,
    );
    let answer = until("the key in the secured etcd", PROMPT, || {
        let mut kv = kv.clone();
        async move {
            let answer = kv
                .get(
                    "/services/sec/",
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .unwrap();
            (!answer.kvs().is_empty()).then_some(answer)
        }
    })
    .await;
    assert_eq!(answer.kvs().len(), 1);
    let document: serde_json::Value =
        serde_json::from_str(answer.kvs()[0].value_str().unwrap()).unwrap();
    assert!(
        document.get("env").is_none(),
        "without --publish-env the container's environment stays out of etcd: {document}"
    );
}

/// F8, with the FAKE engine (`fake_docker.rs`): a container the engine cannot describe is
/// skipped and counted, never holds up the others; its records are not renewed while it stays
/// undescribed (so in ttl mode they lapse); events keep being handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_the_engine_cannot_describe_is_skipped_and_not_renewed() {
    use crate::fake_docker::{Fake, FakeDocker};
    let (fake, docker_url) = FakeDocker::start().await;
    fake.set(
        "aaaaaaaaaaaa",
        Fake::Running {
            name: "alpha".into(),
            host_port: 31001,
        },
    );
    fake.set("bbbbbbbbbbbb", Fake::Broken);
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let agent = BerthAgent::start(
        Path::new(BERTH),
        &[
            format!("--docker={docker_url}"),
            berth_target(&berth).replace("berth://", "--target=berth://"),
            "--host-id=fake-host".into(),
            "--advertise=10.1.2.3".into(),
            "--ttl=2s".into(),
            "--resync=1s".into(),
            "--metrics-listen=127.0.0.1:0".into(),
        ],
    )
    .unwrap_or_else(|log| panic!("the agent did not start:\n{}", log.join("\n")));
    settle(&client, "alpha", 1, PROMPT).await;
    assert!(
        agent
            .log()
            .iter()
            .any(|l| l.contains("could not describe a container")),
        "the broken container is reported"
    );

    // bravo becomes describable and is registered; then the engine fails on it again.
    fake.set(
        "bbbbbbbbbbbb",
        Fake::Running {
            name: "bravo".into(),
            host_port: 31002,
        },
    );
    settle(&client, "bravo", 1, PROMPT).await;
    fake.set("bbbbbbbbbbbb", Fake::Broken);
    // Not confirmed running: not renewed, so its 2 s record lapses; alpha's is renewed.
    let (_, took) = settle(&client, "bravo", 0, Duration::from_secs(8)).await;
    eprintln!("an undescribed container's record lapsed after {took:?}");
    assert_eq!(instances(&client, "alpha").await.len(), 1);
    // Events are still handled: alpha stops.
    fake.set(
        "aaaaaaaaaaaa",
        Fake::Stopped {
            name: "alpha".into(),
        },
    );
    settle(&client, "alpha", 0, PROMPT).await;
}

/// The agent from the `berth` image, run the way docs/cluster.md says (service-registrar's
/// way): the engine's socket mounted in, the image's unprivileged user joining the socket's
/// group, `--server` naming berth. Host networking lets it reach the berth on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_in_a_container_registers_containers_through_the_socket() {
    crate::chaos::build_images();
    let scope = DockerScope::new();
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let socket_group = std::fs::metadata("/var/run/docker.sock")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m).to_string())
        .expect("the engine's socket");
    let server = format!("--server=http://{}", berth.address);
    let only = format!("--only-label={}", scope.label);
    scope.run(
        &[
            "--network",
            "host",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "--group-add",
            &socket_group,
        ],
        "berth",
        &["agent", &server, "--host-id=boxed", &only],
    );

    let container = name(&scope, "boxed");
    scope.run(
        &["--name", &container, "-p", "127.0.0.1::8080"],
        &scope.image("boxed:3"),
        IDLE,
    );
    let (found, _) = settle(&client, "boxed", 1, Duration::from_secs(10)).await;
    assert_eq!(found[0].meta["berth.agent.host"], "boxed");
    assert_eq!(found[0].port, host_port(&container, "8080/tcp"));
    docker(&["stop", &container]);
    settle(&client, "boxed", 0, PROMPT).await;
}
