//! A FAKE Docker engine (named as such: the one place the agent's tests do not use the real
//! engine). It answers what the agent asks (`/_ping`, `/version`, the container list, each
//! container's inspect, the event stream) from a state the test changes, so a test can make
//! the engine fail to describe one container, which the real engine cannot be made to do.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// What the fake says about one container.
#[derive(Clone, Debug)]
pub enum Fake {
    /// Running, with container port 8080 published on 127.0.0.1:`host_port`.
    Running {
        name: String,
        host_port: u16,
    },
    Stopped {
        name: String,
    },
    /// Its inspection answers 500.
    Broken,
}

#[derive(Clone, Default)]
pub struct FakeDocker {
    containers: Arc<Mutex<BTreeMap<String, Fake>>>,
    events: Arc<Mutex<Option<broadcast::Sender<String>>>>,
}

impl FakeDocker {
    /// Serves on a free loopback port; returns `tcp://127.0.0.1:PORT` for `--docker`.
    pub async fn start() -> (FakeDocker, String) {
        let fake = FakeDocker::default();
        let (sender, _) = broadcast::channel(64);
        *fake.events.lock().unwrap() = Some(sender);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, format!("tcp://{address}"))
    }

    /// Sets a container's state and tells the event stream about it.
    pub fn set(&self, id: &str, state: Fake) {
        let action = match state {
            Fake::Running { .. } => "start",
            Fake::Stopped { .. } => "die",
            Fake::Broken => "restart",
        };
        self.containers
            .lock()
            .unwrap()
            .insert(id.to_string(), state);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let event = json!({
            "Type": "container", "Action": action, "Actor": {"ID": id, "Attributes": {}},
            "time": now.as_secs(), "timeNano": now.as_nanos() as i64,
        });
        if let Some(sender) = self.events.lock().unwrap().as_ref() {
            let _ = sender.send(format!("{event}\n"));
        }
    }
}

fn inspect(id: &str, state: &Fake) -> Value {
    let (name, running, ports) = match state {
        Fake::Running { name, host_port } => (
            name.clone(),
            true,
            json!({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": host_port.to_string()}]}),
        ),
        Fake::Stopped { name } => (name.clone(), false, json!({})),
        Fake::Broken => unreachable!("answered 500"),
    };
    json!({
        "Id": id, "Name": format!("/{name}"),
        "Config": {"Image": "fake:1", "Hostname": "fake", "Env": [format!("SERVICE_NAME={name}")], "Labels": {},
                   "ExposedPorts": {"8080/tcp": {}}},
        "State": {"Running": running, "Paused": false, "Restarting": false},
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Ports": ports, "Networks": {}},
    })
}

async fn answer(State(fake): State<FakeDocker>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    // bollard puts the API version first: /v1.47/containers/json.
    let route = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest
            .split_once('/')
            .map_or("", |(_, route)| route)
            .to_string(),
        _ => path.trim_start_matches('/').to_string(),
    };
    match route.as_str() {
        "_ping" => "OK".into_response(),
        "version" => {
            axum::Json(json!({"ApiVersion": "1.47", "MinAPIVersion": "1.24", "Version": "27.0.0"}))
                .into_response()
        }
        "containers/json" => {
            let running: Vec<Value> = fake
                .containers
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, state)| !matches!(state, Fake::Stopped { .. }))
                .map(|(id, _)| json!({"Id": id}))
                .collect();
            axum::Json(running).into_response()
        }
        "events" => {
            let receiver = fake.events.lock().unwrap().as_ref().unwrap().subscribe();
            let stream = futures::stream::unfold(receiver, |mut receiver| async move {
                let line = receiver.recv().await.ok()?;
                Some((Ok::<_, std::convert::Infallible>(line), receiver))
            });
            Response::new(Body::from_stream(stream))
        }
        route => {
            let Some(id) = route
                .strip_prefix("containers/")
                .and_then(|rest| rest.strip_suffix("/json"))
            else {
                return StatusCode::NOT_FOUND.into_response();
            };
            match fake.containers.lock().unwrap().get(id) {
                None => (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"message": "no such container"})),
                )
                    .into_response(),
                Some(Fake::Broken) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({"message": "the engine cannot describe this container"})),
                )
                    .into_response(),
                Some(state) => axum::Json(inspect(id, state)).into_response(),
            }
        }
    }
}
