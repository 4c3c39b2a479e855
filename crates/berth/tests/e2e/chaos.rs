//! The highly available shape on a real cluster: deploy/compose.yaml (three etcd members, three
//! berth nodes, auth on) from images built from local files, broken in rounds under a workload
//! sent to every node — kill -9 of a node, an etcd member stopped (the leader every other round),
//! a node cut off the network, an etcd member partitioned from the others, a rolling restart —
//! while a checker records every acknowledged operation and verifies, after each round and on
//! every node, that none was lost. The suite runs two short rounds per fault;
//! `scripts/chaos` runs the long version (`BERTH_CHAOS_ROUNDS`, `BERTH_CHAOS_CUT_SECONDS`) and
//! prints the table.

use crate::support::BERTH;
use berth_client::{Client, ClientError, ClientOptions, Method, Registration};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// How long the workload's instances live without a heartbeat.
const TTL: Duration = Duration::from_secs(15);
/// Instances one worker keeps registered at most.
const INSTANCES_PER_WORKER: usize = 6;
const WORKERS: usize = 6;
/// Applications one worker creates per round at most.
const APPS_PER_WORKER: usize = 3;
const NODES: usize = 3;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the `berth` and `berth-etcd` images once per test process, from this test's binary.
pub fn build_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let output = std::process::Command::new(repository().join("scripts/build-image"))
            .args(["--berth-binary", BERTH])
            .output()
            .expect("scripts/build-image runs");
        assert!(
            output.status.success(),
            "scripts/build-image failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

async fn run(program: &str, args: &[&str], dir: Option<&Path>) -> (bool, String) {
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    output_of(command).await
}

/// Runs `command` to its end: whether it succeeded, and its stdout then stderr.
async fn output_of(mut command: tokio::process::Command) -> (bool, String) {
    match command.kill_on_drop(true).output().await {
        Ok(output) => (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ),
        Err(error) => (false, error.to_string()),
    }
}

async fn docker(args: &[&str]) -> String {
    let (ok, output) = run("docker", args, None).await;
    assert!(ok, "docker {} failed: {output}", args.join(" "));
    output
}

/// deploy/compose.yaml brought up under a project name of its own, in a folder holding a copy
/// of the file and its secret; `docker-compose down -v` when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub project: String,
    pub ports: [u16; NODES],
    pub token: String,
}

impl Cluster {
    /// The compose folder without starting anything: the secret is written by `with_token`.
    pub fn prepare() -> Cluster {
        build_images();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            repository().join("deploy/compose.yaml"),
            dir.path().join("compose.yaml"),
        )
        .unwrap();
        static CLUSTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let project = format!(
            "berthchaos{}x{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Cluster {
            dir,
            project,
            ports: std::array::from_fn(|_| berth_testkit::free_port()),
            token: String::new(),
        }
    }

    pub fn with_token(mut self) -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        let token: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let secrets = self.dir.path().join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        let file = secrets.join("admin.token");
        std::fs::write(&file, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        self.token = token;
        self
    }

    pub async fn compose(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec!["-p", &self.project, "-f", "compose.yaml"];
        all.extend_from_slice(args);
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let mut command = tokio::process::Command::new("docker-compose");
        command
            .args(&all)
            .current_dir(self.dir.path())
            .env("BERTH_PORT_1", &ports[0])
            .env("BERTH_PORT_2", &ports[1])
            .env("BERTH_PORT_3", &ports[2]);
        output_of(command).await
    }

    pub async fn up(&self) {
        let (ok, output) = self.compose(&["up", "-d"]).await;
        assert!(ok, "docker-compose up failed: {output}");
        for node in 0..NODES {
            self.wait_healthy(node, Duration::from_secs(60)).await;
        }
    }

    pub fn base(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[node])
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    pub fn network(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    /// A client of every node (failover), starting at `first`.
    pub fn client(&self, first: usize) -> Client {
        let servers: Vec<String> = (0..NODES)
            .map(|offset| self.base((first + offset) % NODES))
            .collect();
        self.client_of(&servers.join(","))
    }

    pub fn client_of(&self, servers: &str) -> Client {
        Client::with_options(
            servers,
            &ClientOptions {
                token: Some(self.token.clone()),
                ..ClientOptions::default()
            },
        )
        .unwrap()
    }

    pub async fn health(&self, node: usize) -> Option<serde_json::Value> {
        let response = crate::support::http()
            .get(format!("{}/health", self.base(node)))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    pub async fn wait_healthy(&self, node: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.health(node).await.is_none() {
            if Instant::now() > deadline {
                let (_, logs) = run(
                    "docker",
                    &[
                        "logs",
                        "--tail",
                        "30",
                        &self.container(&format!("berth-{}", node + 1)),
                    ],
                    None,
                )
                .await;
                panic!(
                    "berth-{} is not healthy after {within:?}:\n{logs}",
                    node + 1
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The etcd member that leads now, asked over etcd's JSON gateway from this host.
    async fn etcd_leader(&self) -> Option<usize> {
        for member in 0..NODES {
            let container = self.container(&format!("etcd-{}", member + 1));
            let format = format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.network("cluster")
            );
            let (ok, address) = run("docker", &["inspect", "-f", &format, &container], None).await;
            if !ok || address.trim().is_empty() {
                continue;
            }
            let status: Option<serde_json::Value> = async {
                crate::support::http()
                    .post(format!(
                        "http://{}:2379/v3/maintenance/status",
                        address.trim()
                    ))
                    .body("{}")
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
            if let Some(status) = status
                && status["leader"] == status["header"]["member_id"]
            {
                return Some(member);
            }
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let output = std::process::Command::new("docker-compose")
            .args([
                "-p",
                &self.project,
                "-f",
                "compose.yaml",
                "down",
                "-v",
                "-t",
                "1",
            ])
            .current_dir(self.dir.path())
            .output();
        if let Ok(output) = output
            && !output.status.success()
        {
            eprintln!(
                "docker-compose down failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// What the cluster acknowledged about one instance.
#[derive(Clone, Debug)]
enum InstanceFate {
    /// Registered or renewed: alive at least until `renewed_before + TTL`.
    Alive { renewed_before: Instant },
    /// Deregistered: must never be seen again.
    Deregistered,
    /// Gone by its TTL (a heartbeat found it gone after its time).
    Expired,
    /// An operation on it failed without an answer: either outcome is right.
    Unknown,
}

#[derive(Clone, Debug, PartialEq)]
enum EdgeFate {
    Present,
    Absent,
    Unknown,
}

/// Every acknowledged operation, and what broke.
#[derive(Default)]
struct Ledger {
    instances: HashMap<(String, String), InstanceFate>,
    /// Applications created, with the external port they were given (None: outcome unknown).
    apps: BTreeMap<String, Option<u16>>,
    edges: HashMap<(String, String), EdgeFate>,
    acknowledged: u64,
    unanswered: u64,
    /// Client operations that moved to another node, and how long they took, by fault.
    failovers: BTreeMap<&'static str, Vec<Duration>>,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

fn ledger(shared: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(error: &ClientError) -> bool {
    !matches!(error, ClientError::Api { status, .. } if *status < 500)
}

/// One worker: registrations, heartbeats, deregistrations, applications (port allocations) and
/// dependency edits, on instances and applications of its own, until `stop`.
async fn worker(
    worker: usize,
    round: String,
    client: Client,
    shared: Shared,
    fault: Arc<Mutex<&'static str>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut sequence = 0u64;
    let mut mine: Vec<(String, String)> = Vec::new();
    let mut apps: Vec<String> = Vec::new();
    let mut step = 0u64;
    while !stop.is_cancelled() {
        step += 1;
        let server_before = client.base().to_string();
        let started = Instant::now();
        let choice = (step * 7 + worker as u64) % 20;
        match choice {
            // Register.
            0..=4 if mine.len() < INSTANCES_PER_WORKER => {
                sequence += 1;
                let service = format!("chaos-{}", sequence % 3);
                let id = format!("{round}-w{worker}-{sequence}");
                let registration = Registration {
                    id: Some(id.clone()),
                    address: format!(
                        "10.{}.{}.{}",
                        worker + 1,
                        sequence / 250,
                        sequence % 250 + 1
                    ),
                    port: 8080,
                    ttl_ms: Some(TTL.as_millis() as u64),
                    ..Registration::default()
                };
                let outcome = client.register(&service, &registration).await;
                let mut ledger = ledger(&shared);
                let fate = match outcome {
                    Ok(_) => {
                        ledger.acknowledged += 1;
                        InstanceFate::Alive {
                            renewed_before: started,
                        }
                    }
                    Err(_) => {
                        ledger.unanswered += 1;
                        InstanceFate::Unknown
                    }
                };
                ledger.instances.insert((service.clone(), id.clone()), fate);
                mine.push((service, id));
            }
            // Deregister the oldest.
            5..=6 if !mine.is_empty() => {
                let key = mine.remove(0);
                let outcome = client.deregister(&key.0, &key.1).await;
                let mut ledger = ledger(&shared);
                let fate = match &outcome {
                    Ok(()) => {
                        ledger.acknowledged += 1;
                        InstanceFate::Deregistered
                    }
                    Err(error) if error.status() == Some(404) => {
                        ledger.acknowledged += 1;
                        gone_early(
                            &mut ledger,
                            &key,
                            started,
                            "a deregistration",
                            client.base(),
                        );
                        InstanceFate::Deregistered
                    }
                    Err(_) => {
                        ledger.unanswered += 1;
                        InstanceFate::Unknown
                    }
                };
                ledger.instances.insert(key, fate);
            }
            // A new application: a port allocation (a few per round, so that twenty rounds of
            // every fault stay within the port range).
            7 if apps.len() < APPS_PER_WORKER => {
                let id = format!("{round}-w{worker}-app{}", apps.len());
                let body = serde_json::json!({"id": id, "kind": "nodejs"});
                let outcome = client.call(Method::POST, "/v1/apps", Some(&body)).await;
                let mut ledger = ledger(&shared);
                match outcome {
                    Ok(app) => {
                        ledger.acknowledged += 1;
                        let port = app["ports"][0]["external"].as_u64().map(|p| p as u16);
                        ledger.apps.insert(id.clone(), port);
                        apps.push(id);
                    }
                    // An earlier attempt whose answer never came (504, or no answer) made it:
                    // it exists, with a port the ledger does not know.
                    Err(ClientError::Api {
                        status: 409,
                        field: Some(field),
                        ..
                    }) if field == "id" && ledger.apps.get(&id) == Some(&None) => {
                        ledger.acknowledged += 1;
                        apps.push(id);
                    }
                    Err(error) if !unavailable(&error) => {
                        ledger
                            .violations
                            .push(format!("creating {id} was refused: {error}"));
                    }
                    Err(_) => {
                        ledger.unanswered += 1;
                        ledger.apps.insert(id, None);
                    }
                }
            }
            // A dependency edit between two of its applications.
            8 if apps.len() >= 2 => {
                let from = &apps[(step as usize) % apps.len()];
                let to = &apps[(step as usize / 3) % apps.len()];
                if from == to {
                    continue;
                }
                let add = !step.is_multiple_of(3);
                let path = format!("/v1/apps/{from}/dependencies/{to}");
                let method = if add { Method::PUT } else { Method::DELETE };
                let outcome = client.call(method, &path, None).await;
                let mut ledger = ledger(&shared);
                let key = (from.clone(), to.clone());
                match outcome {
                    Ok(_) => {
                        ledger.acknowledged += 1;
                        let fate = if add {
                            EdgeFate::Present
                        } else {
                            EdgeFate::Absent
                        };
                        ledger.edges.insert(key, fate);
                    }
                    // A cycle the edge would close is refused: nothing changed.
                    Err(error) if !unavailable(&error) => ledger.acknowledged += 1,
                    Err(_) => {
                        ledger.unanswered += 1;
                        ledger.edges.insert(key, EdgeFate::Unknown);
                    }
                }
            }
            // Heartbeat the instance renewed longest ago.
            _ => {
                let Some(key) = oldest(&shared, &mine) else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let outcome = client.heartbeat(&key.0, &key.1).await;
                let mut ledger = ledger(&shared);
                match outcome {
                    Ok(_) => {
                        ledger.acknowledged += 1;
                        if let Some(InstanceFate::Alive { .. } | InstanceFate::Unknown) =
                            ledger.instances.get(&key)
                        {
                            ledger.instances.insert(
                                key,
                                InstanceFate::Alive {
                                    renewed_before: started,
                                },
                            );
                        }
                    }
                    Err(error) if error.status() == Some(404) => {
                        ledger.acknowledged += 1;
                        gone_early(&mut ledger, &key, started, "a heartbeat", client.base());
                        ledger.instances.insert(key.clone(), InstanceFate::Expired);
                        mine.retain(|k| *k != key);
                    }
                    Err(_) => ledger.unanswered += 1,
                }
            }
        }
        if client.base() != server_before {
            let fault = *fault.lock().unwrap_or_else(|e| e.into_inner());
            ledger(&shared)
                .failovers
                .entry(fault)
                .or_default()
                .push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// An instance the cluster says is gone at `asked_at`: a loss if its last acknowledged renewal
/// promised it longer.
fn gone_early(
    ledger: &mut Ledger,
    key: &(String, String),
    asked_at: Instant,
    how: &str,
    server: &str,
) {
    if let Some(InstanceFate::Alive { renewed_before }) = ledger.instances.get(key)
        && asked_at < *renewed_before + TTL
    {
        let early = (*renewed_before + TTL) - asked_at;
        ledger.violations.push(format!(
            "{}/{} was gone ({how} answered 404 by {server}) {early:?} before its TTL from its \
             last acknowledged renewal",
            key.0, key.1
        ));
    }
}

fn oldest(shared: &Shared, mine: &[(String, String)]) -> Option<(String, String)> {
    let ledger = ledger(shared);
    mine.iter()
        .min_by_key(|key| match ledger.instances.get(*key) {
            Some(InstanceFate::Alive { renewed_before }) => Some(*renewed_before),
            _ => None,
        })
        .cloned()
}

/// One node's event stream, resumed after every break from the last revision it delivered;
/// the instances it says are live.
#[derive(Default)]
struct Follower {
    live: BTreeSet<(String, String)>,
    last: Option<i64>,
    resumed: u64,
    resets: u64,
}

async fn follow(client: Client, state: Arc<Mutex<Follower>>) {
    loop {
        let after = state.lock().unwrap().last;
        if let Ok(mut events) = client.events(None, after).await {
            state.lock().unwrap().resumed += 1;
            while let Some(Ok(event)) = events.next().await {
                let mut state = state.lock().unwrap();
                let key = |value: &serde_json::Value| {
                    (
                        value["service"].as_str().unwrap_or_default().to_string(),
                        value["id"].as_str().unwrap_or_default().to_string(),
                    )
                };
                match event.kind.as_str() {
                    "online" | "updated" => {
                        state.live.insert(key(&event.data["instance"]));
                    }
                    "offline" => {
                        state.live.remove(&key(&event.data["instance"]));
                    }
                    "reset" => {
                        state.resets += 1;
                        state.live = event.data["instances"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(key)
                            .collect();
                    }
                    _ => {}
                }
                if let Some(id) = event.id.as_deref().and_then(|id| id.parse().ok()) {
                    state.last = Some(id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one node serves: its view revision, live instances and applications.
#[derive(Debug, PartialEq)]
struct NodeView {
    index: i64,
    instances: BTreeSet<(String, String)>,
    /// id → (external ports, dependencies)
    apps: BTreeMap<String, (Vec<u16>, Vec<String>)>,
}

async fn node_view(client: &Client) -> Result<NodeView, ClientError> {
    let found = client.find_instances(&[]).await?;
    let apps = client
        .call(Method::GET, "/v1/apps?limit=100000", None)
        .await?;
    let apps = apps["apps"]
        .as_array()
        .or_else(|| apps.as_array())
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|app| {
            let ports = app["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["external"].as_u64().map(|p| p as u16))
                .collect();
            let dependencies = app["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(String::from))
                .collect();
            (
                app["id"].as_str().unwrap_or_default().to_string(),
                (ports, dependencies),
            )
        })
        .collect();
    Ok(NodeView {
        index: found.index,
        instances: found
            .instances
            .iter()
            .map(|i| (i.service.clone(), i.id.clone()))
            .collect(),
        apps,
    })
}

/// After a round: every node healthy, their views equal, nothing acknowledged lost, no port
/// owned twice, no cycle, every event stream in step with its node. The problems found.
async fn check(
    cluster: &Cluster,
    shared: &Shared,
    followers: &[Arc<Mutex<Follower>>],
) -> Vec<String> {
    for node in 0..NODES {
        cluster.wait_healthy(node, Duration::from_secs(90)).await;
    }
    let clients: Vec<Client> = (0..NODES)
        .map(|n| cluster.client_of(&cluster.base(n)))
        .collect();
    let checked_at = Instant::now();
    // Instances expire while this runs: take the three views at one revision.
    let mut views = Vec::new();
    for _ in 0..100 {
        views.clear();
        for client in &clients {
            match node_view(client).await {
                Ok(view) => views.push(view),
                Err(error) => return vec![format!("reading {}: {error}", client.base())],
            }
        }
        if views.iter().all(|v| v.index == views[0].index) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut problems = Vec::new();
    if !views.iter().all(|v| v.index == views[0].index) {
        problems.push(format!(
            "the nodes never showed one revision: {:?}",
            views.iter().map(|v| v.index).collect::<Vec<_>>()
        ));
    } else if let Some(node) = (1..NODES).find(|&n| views[n] != views[0]) {
        problems.push(format!(
            "berth-{} and berth-1 differ at revision {}",
            node + 1,
            views[0].index
        ));
    }
    let view = &views[0];
    problems.extend(compare_with_ledger(view, &mut ledger(shared), checked_at));
    // Every event stream, resumed after each break, ends where its node is.
    for (node, follower) in followers.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let current = node_view(&clients[node]).await.map(|v| v.instances);
            let streamed = follower.lock().unwrap().live.clone();
            if current.as_ref().is_ok_and(|c| *c == streamed) {
                break;
            }
            if Instant::now() > deadline {
                let current = current.unwrap_or_default();
                problems.push(format!(
                    "berth-{}'s event stream disagrees with its view: {} streamed only, {} listed only",
                    node + 1,
                    streamed.difference(&current).count(),
                    current.difference(&streamed).count()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    problems
}

/// What the ledger says that `view` (every node's, once equal) contradicts.
fn compare_with_ledger(view: &NodeView, ledger: &mut Ledger, checked_at: Instant) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, fate) in &ledger.instances {
        match fate {
            InstanceFate::Alive { renewed_before }
                if checked_at + Duration::from_millis(500) < *renewed_before + TTL
                    && !view.instances.contains(key) =>
            {
                problems.push(format!(
                    "acknowledged {}/{} is missing {:?} after its last renewal",
                    key.0,
                    key.1,
                    checked_at - *renewed_before
                ));
            }
            InstanceFate::Deregistered | InstanceFate::Expired if view.instances.contains(key) => {
                problems.push(format!(
                    "{}/{} is alive after it was deregistered",
                    key.0, key.1
                ));
            }
            _ => {}
        }
    }
    for (id, port) in &ledger.apps {
        match (port, view.apps.get(id)) {
            (Some(port), Some((ports, _))) if !ports.contains(port) => {
                problems.push(format!("{id} lost its port {port}: {ports:?}"));
            }
            (Some(_), None) => problems.push(format!("acknowledged application {id} is missing")),
            _ => {}
        }
    }
    let mut owners: HashMap<u16, &str> = HashMap::new();
    for (id, (ports, _)) in &view.apps {
        for port in ports {
            if let Some(other) = owners.insert(*port, id) {
                problems.push(format!("port {port} is owned by {other} and {id}"));
            }
        }
    }
    for ((from, to), fate) in &ledger.edges {
        let present = view
            .apps
            .get(from)
            .is_some_and(|(_, deps)| deps.contains(to));
        match fate {
            EdgeFate::Present if !present => {
                problems.push(format!("acknowledged dependency {from} → {to} is missing"))
            }
            EdgeFate::Absent if present => {
                problems.push(format!("removed dependency {from} → {to} is back"))
            }
            _ => {}
        }
    }
    if let Some(cycle) = find_cycle(&view.apps) {
        problems.push(format!("dependency cycle: {}", cycle.join(" → ")));
    }
    problems.append(&mut ledger.violations);
    problems
}

fn find_cycle(apps: &BTreeMap<String, (Vec<u16>, Vec<String>)>) -> Option<Vec<String>> {
    fn visit(
        app: &str,
        apps: &BTreeMap<String, (Vec<u16>, Vec<String>)>,
        state: &mut HashMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(app) {
            Some(1) => {
                let start = path.iter().position(|a| a == app).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(app.to_string());
                return Some(cycle);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(app.to_string(), 1);
        path.push(app.to_string());
        for dependency in apps.get(app).map(|(_, d)| d.as_slice()).unwrap_or_default() {
            if let Some(cycle) = visit(dependency, apps, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(app.to_string(), 2);
        None
    }
    let mut state = HashMap::new();
    apps.keys()
        .find_map(|app| visit(app, apps, &mut state, &mut Vec::new()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillNode,
    StopEtcdMember,
    CutOffNode,
    PartitionEtcdMember,
    RollingRestart,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::KillNode,
        Fault::StopEtcdMember,
        Fault::CutOffNode,
        Fault::PartitionEtcdMember,
        Fault::RollingRestart,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::KillNode => "kill -9 of a berth node",
            Fault::StopEtcdMember => "etcd member stopped and restarted",
            Fault::CutOffNode => "berth node off the network",
            Fault::PartitionEtcdMember => "etcd minority partitioned",
            Fault::RollingRestart => "rolling restart of every node",
        }
    }
}

/// What the cut-off measurements saw: a node whose etcd member lost the quorum.
#[derive(Default)]
struct CutOff {
    stopped_acknowledging: Vec<Duration>,
    recovered: Vec<Duration>,
}

/// Heartbeats one instance through `node` alone every 50 ms from `from`: how long until the
/// node refuses (503), and, from `healed`, how long until it acknowledges again.
async fn probe_refusal(cluster: &Cluster, node: usize, since: Instant) -> Duration {
    let client = cluster.client_of(&cluster.base(node));
    loop {
        match client.heartbeat("chaos-probe", "probe").await {
            Err(error) if error.status() == Some(503) => return since.elapsed(),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "berth-{} kept acknowledging heartbeats 30 s after its etcd member lost the quorum",
            node + 1
        );
    }
}

async fn probe_recovery(cluster: &Cluster, node: usize, since: Instant) -> Duration {
    let client = cluster.client_of(&cluster.base(node));
    loop {
        if client.heartbeat("chaos-probe", "probe").await.is_ok() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "berth-{} did not acknowledge again within 60 s of the partition healing",
            node + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One round of `fault` on node (or member) `target`.
async fn inject(
    cluster: &Cluster,
    fault: Fault,
    round: usize,
    cut_for: Duration,
    cut_off: &mut CutOff,
) {
    let target = round % NODES;
    let berth = cluster.container(&format!("berth-{}", target + 1));
    match fault {
        Fault::KillNode => {
            docker(&["kill", "-s", "KILL", &berth]).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            docker(&["start", &berth]).await;
        }
        Fault::StopEtcdMember => {
            // Every other round the leader, so elections are part of it.
            let member = if round.is_multiple_of(2) {
                cluster.etcd_leader().await.unwrap_or(target)
            } else {
                target
            };
            let etcd = cluster.container(&format!("etcd-{}", member + 1));
            docker(&["stop", "-t", "1", &etcd]).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            docker(&["start", &etcd]).await;
        }
        Fault::CutOffNode => {
            let network = cluster.network("cluster");
            docker(&["network", "disconnect", &network, &berth]).await;
            tokio::time::sleep(cut_for).await;
            docker(&["network", "connect", &network, &berth]).await;
        }
        Fault::PartitionEtcdMember => {
            let network = cluster.network("peers");
            let etcd = cluster.container(&format!("etcd-{}", target + 1));
            let client = cluster.client_of(&cluster.base(target));
            let probe = Registration {
                id: Some("probe".into()),
                address: "10.99.0.1".into(),
                port: 1,
                ttl_ms: Some(120_000),
                ..Registration::default()
            };
            client.register("chaos-probe", &probe).await.unwrap();
            let cut = Instant::now();
            docker(&["network", "disconnect", &network, &etcd]).await;
            cut_off
                .stopped_acknowledging
                .push(probe_refusal(cluster, target, cut).await);
            // Reads still served, saying how stale they may be; /health says why.
            let response = crate::support::http()
                .get(format!("{}/v1/services", cluster.base(target)))
                .bearer_auth(&cluster.token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "reads go on without a quorum");
            assert_eq!(
                response.headers()["x-berth-known-quorum"],
                "false",
                "a read from a node without quorum says so"
            );
            let health = crate::support::http()
                .get(format!("{}/health", cluster.base(target)))
                .send()
                .await
                .unwrap();
            assert_eq!(health.status(), 503);
            let remaining = cut_for.saturating_sub(cut.elapsed());
            tokio::time::sleep(remaining).await;
            let healed = Instant::now();
            docker(&[
                "network",
                "connect",
                "--alias",
                &format!("etcd-{}-peer", target + 1),
                &network,
                &etcd,
            ])
            .await;
            cut_off
                .recovered
                .push(probe_recovery(cluster, target, healed).await);
        }
        Fault::RollingRestart => {
            for node in 0..NODES {
                let berth = cluster.container(&format!("berth-{}", node + 1));
                docker(&["restart", "-t", "10", &berth]).await;
                cluster.wait_healthy(node, Duration::from_secs(60)).await;
            }
        }
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

#[allow(
    clippy::disallowed_methods,
    reason = "the long version is chosen by scripts/chaos through the environment"
)]
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_acknowledged_through_kills_partitions_and_restarts() {
    let rounds = setting("BERTH_CHAOS_ROUNDS", 2) as usize;
    let cut_for = Duration::from_secs(setting("BERTH_CHAOS_CUT_SECONDS", 6));
    let cluster = Cluster::prepare().with_token();
    cluster.up().await;
    let started = Instant::now();

    let followers: Vec<Arc<Mutex<Follower>>> = (0..NODES).map(|_| Arc::default()).collect();
    let follower_tasks: Vec<_> = followers
        .iter()
        .enumerate()
        .map(|(node, state)| {
            tokio::spawn(follow(
                cluster.client_of(&cluster.base(node)),
                state.clone(),
            ))
        })
        .collect();
    // The followers start from now: wait until each has connected before any write.
    for follower in &followers {
        let deadline = Instant::now() + Duration::from_secs(10);
        while follower.lock().unwrap().resumed == 0 {
            assert!(Instant::now() < deadline, "an event stream did not open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let shared: Shared = Arc::default();
    let current_fault = Arc::new(Mutex::new("none"));
    let mut cut_off = CutOff::default();
    let mut table = Vec::new();
    let mut problems = Vec::new();
    for fault in Fault::ALL {
        let before = ledger(&shared).acknowledged;
        for round in 0..rounds {
            *current_fault.lock().unwrap() = fault.name();
            let stop = tokio_util::sync::CancellationToken::new();
            let workers: Vec<_> = (0..WORKERS)
                .map(|w| {
                    tokio::spawn(worker(
                        w,
                        format!("{fault:?}{round}").to_lowercase(),
                        cluster.client(w % NODES),
                        shared.clone(),
                        current_fault.clone(),
                        stop.clone(),
                    ))
                })
                .collect();
            tokio::time::sleep(Duration::from_secs(1)).await;
            inject(&cluster, fault, round, cut_for, &mut cut_off).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
            for worker in workers {
                worker.await.unwrap();
            }
            let found = check(&cluster, &shared, &followers).await;
            problems.extend(
                found
                    .into_iter()
                    .map(|p| format!("{} round {round}: {p}", fault.name())),
            );
        }
        table.push((fault, rounds, ledger(&shared).acknowledged - before));
    }
    for task in follower_tasks {
        task.abort();
    }

    let ledger = ledger(&shared);
    let mut killed: Vec<Duration> = ledger
        .failovers
        .get(Fault::KillNode.name())
        .cloned()
        .unwrap_or_default();
    killed.sort();
    let mut stops = cut_off.stopped_acknowledging.clone();
    stops.sort();
    let mut recoveries = cut_off.recovered.clone();
    recoveries.sort();
    println!(
        "\nchaos: {rounds} rounds per fault in {:.0?}",
        started.elapsed()
    );
    println!("{:<36} {:>6} {:>14}", "fault", "rounds", "acknowledged");
    for (fault, rounds, acknowledged) in &table {
        println!("{:<36} {rounds:>6} {acknowledged:>14}", fault.name());
    }
    println!(
        "operations acknowledged and checked: {} (unanswered, either outcome allowed: {}); lost: {} (goal 0)",
        ledger.acknowledged,
        ledger.unanswered,
        problems.len()
    );
    println!(
        "client failover after kill -9: {} failovers, p50 {:?}, p99 {:?}",
        killed.len(),
        percentile(&killed, 0.5),
        percentile(&killed, 0.99)
    );
    for (fault, times) in &ledger.failovers {
        let mut times = times.clone();
        times.sort();
        println!(
            "  failovers during {fault}: {} (p50 {:?}, p99 {:?})",
            times.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    println!(
        "node whose etcd member lost the quorum: stops acknowledging p50 {:?} max {:?}; acknowledges again after healing p50 {:?} max {:?}",
        percentile(&stops, 0.5),
        stops.last().copied().unwrap_or_default(),
        percentile(&recoveries, 0.5),
        recoveries.last().copied().unwrap_or_default()
    );
    let resets: u64 = followers.iter().map(|f| f.lock().unwrap().resets).sum();
    let resumed: u64 = followers.iter().map(|f| f.lock().unwrap().resumed).sum();
    println!("event streams: {resumed} connections (resumed after breaks), {resets} resets");
    assert!(
        ledger.acknowledged > 100 * Fault::ALL.len() as u64,
        "the workload hardly ran: {} acknowledged operations",
        ledger.acknowledged
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Without the secret the deployment reads, `up` fails naming the file to make, and no berth
/// node starts (the etcd members, created first, may; `down` removes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_up_without_the_admin_token_stops_and_names_the_file() {
    let cluster = Cluster::prepare();
    let (ok, output) = cluster.compose(&["up", "-d"]).await;
    assert!(
        !ok,
        "up without deploy/secrets/admin.token succeeded:\n{output}"
    );
    assert!(
        output.contains("secrets/admin.token"),
        "the error names the missing file:\n{output}"
    );
    let (_, running) = run(
        "docker",
        &[
            "ps",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=com.docker.compose.project={}", cluster.project),
        ],
        None,
    )
    .await;
    assert!(
        !running.contains("berth-"),
        "berth nodes were started: {running}"
    );
}
