//! A typed client of berth's native HTTP API (`/v1`): registrations, heartbeats, queries and
//! the event stream. The CLI and the Docker agent speak to berth only through it. Its DTOs are
//! its own: the client does not share types with the server, only the wire format.

use futures::{Stream, StreamExt};

pub use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// berth answered with an error.
    #[error("{message} (HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// berth could not be reached, or the connection broke.
    #[error("cannot reach berth at {base}: {detail}")]
    Transport { base: String, detail: String },
    #[error("unexpected answer from berth: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a request failed, as its innermost cause ("Connection refused (os error 111)"), not
/// reqwest's "error sending request for url (…)", which repeats the address and hides why.
fn transport_detail(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer in time".to_string();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// How far a request body has gone out, or a response body come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    Sent { done: u64, total: u64 },
    Received { done: u64, total: Option<u64> },
}

/// What a client registers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Registration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub address: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub service: String,
    pub id: String,
    pub address: String,
    pub port: u16,
    pub ttl_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_ref: Option<String>,
    pub weight: u8,
    pub canary: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// The team whose token registered it (with auth on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub registered_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub revision_index: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceList {
    pub service: String,
    pub index: i64,
    pub instances: Vec<Instance>,
}

/// Instances of any service, from `GET /v1/instances`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundInstances {
    pub index: i64,
    pub instances: Vec<Instance>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub instances: usize,
    pub zones: Vec<String>,
    pub index: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceList {
    pub index: i64,
    pub services: Vec<ServiceSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub service: String,
    pub id: String,
    pub expires_at: String,
    pub ttl_ms: u64,
}

/// An access token (its secret only in the answer that created it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub owner: String,
    pub grants: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One Server-Sent Event from `/v1/events`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// `online`, `updated`, `offline`, `reset` or `error`.
    pub kind: String,
    /// The store revision, on the last event of a revision.
    pub id: Option<String>,
    pub data: serde_json::Value,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    code: String,
    message: String,
    field: Option<String>,
}

/// Percent-encodes one path segment.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// How long a request may take unless it says otherwise.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// With several servers, how long one attempt may take before the next server is tried: a
/// server cut off from the network keeps a pooled connection open but never answers, and a
/// healthy one answers within its own store timeout (5 s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(6);
/// With several servers, how many times each is tried before the request fails.
const FAILOVER_ROUNDS: u32 = 3;
/// The pause before the second round over every server; each later round waits four times
/// longer (100 ms, 400 ms), with jitter so clients that failed together do not return together.
const FAILOVER_BACKOFF: Duration = Duration::from_millis(100);

/// A client of one berth, or of several nodes of one cluster: each request goes to the server
/// that answered last, and moves to the next on a connection error or a 503 (a node that lost
/// its store), round after round with back-off; a request other than POST also moves on when no
/// answer comes or the answer is a 504 (a node that cannot tell whether it applied it). Clones
/// share which server is current.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    servers: Arc<[String]>,
    /// Index in `servers` of the one that answered last.
    current: Arc<AtomicUsize>,
    /// The token every request carries (`Authorization: Bearer`), when berth has auth on.
    token: Option<Arc<str>>,
}

/// How a client reaches berth beyond its address: the token to send, and TLS.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer` with every request, when berth has auth on.
    pub token: Option<String>,
    /// PEM certificates of the authorities to trust (instead of the system's) for `https://`.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of a client certificate and its private key, for a server that asks for one (mTLS).
    pub identity_pem: Option<Vec<u8>>,
}

/// The servers a `--server` value names: one base URL, or several separated by commas.
pub fn split_servers(text: &str) -> Vec<String> {
    text.split(',')
        .map(|base| base.trim().trim_end_matches('/'))
        .filter(|base| !base.is_empty())
        .map(String::from)
        .collect()
}

/// Whether a failed attempt may go to another server: it never reached this one, or this one
/// said it did nothing and cannot take it now (503); or the request is safe to send twice and
/// this one could not tell whether it applied it (504, no answer).
fn worth_another_server(
    outcome: &Result<reqwest::Response, reqwest::Error>,
    idempotent: bool,
) -> bool {
    match outcome {
        Ok(response) => {
            response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                || (idempotent && response.status() == reqwest::StatusCode::GATEWAY_TIMEOUT)
        }
        Err(error) => error.is_connect() || idempotent,
    }
}

/// Whether a failed attempt may have been applied all the same: its server said the outcome is
/// unknown (504), or the request left and no answer came back.
fn maybe_applied(outcome: &Result<reqwest::Response, reqwest::Error>) -> bool {
    match outcome {
        Ok(response) => response.status() == reqwest::StatusCode::GATEWAY_TIMEOUT,
        Err(error) => !error.is_connect(),
    }
}

/// The answer to a DELETE that a later attempt found nothing to delete after an earlier one
/// may have deleted it: done, since what was asked holds (a 404 would read as "it was never
/// there" to a caller who just removed it). Marked so in `x-berth-outcome`.
fn deleted_by_an_earlier_attempt() -> reqwest::Response {
    let mut response = http::Response::new(Vec::<u8>::new());
    *response.status_mut() = reqwest::StatusCode::NO_CONTENT;
    response.headers_mut().insert(
        "x-berth-outcome",
        reqwest::header::HeaderValue::from_static("deleted-by-an-earlier-attempt"),
    );
    reqwest::Response::from(response)
}

impl Client {
    /// A client of the berth at `base` (e.g. `http://127.0.0.1:7420`, or several separated by
    /// commas).
    pub fn new(base: impl Into<String>) -> Result<Client> {
        Client::with_options(base, &ClientOptions::default())
    }

    /// A client of the berth at `base` (`http://` or `https://`; several separated by commas
    /// fail over to each other), with `options`.
    pub fn with_options(base: impl Into<String>, options: &ClientOptions) -> Result<Client> {
        let base = base.into();
        let refused = |detail: String| ClientError::Transport {
            base: base.clone(),
            detail,
        };
        // Normalized as reqwest writes them (`http://h:80` is `http://h`), so a request's URL
        // starts with the base it was built on.
        let servers = split_servers(&base)
            .into_iter()
            .map(|server| match reqwest::Url::parse(&server) {
                Ok(url) if url.has_host() => Ok(url.as_str().trim_end_matches('/').to_string()),
                Ok(_) => Err(refused(format!("`{server}` names no host"))),
                Err(error) => Err(refused(format!(
                    "`{server}` is not a URL ({error}); write it as http://HOST:PORT"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        if servers.is_empty() {
            return Err(refused("no server address given".into()));
        }
        // One crypto provider for the process: ring (no C build).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(3));
        if let Some(pem) = &options.ca_pem {
            let authorities = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| refused(format!("the CA file: {e}")))?;
            if authorities.is_empty() {
                return Err(refused("the CA file holds no certificate".into()));
            }
            builder = builder.tls_certs_only(authorities);
        }
        if let Some(pem) = &options.identity_pem {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| refused(format!("the client certificate or key: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| refused(e.to_string()))?;
        Ok(Client {
            http,
            servers: servers.into(),
            current: Arc::new(AtomicUsize::new(0)),
            token: options.token.as_deref().map(Arc::from),
        })
    }

    /// The same client, sending `token` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(Arc::from(token.into()));
        self
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The server requests go to first: the one that answered last.
    pub fn base(&self) -> &str {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Every server this client may use, in the order given.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    fn transport(&self, error: reqwest::Error) -> ClientError {
        ClientError::Transport {
            base: self.base().to_string(),
            detail: transport_detail(&error),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        self.send_within(request, REQUEST_TIMEOUT).await
    }

    /// Sends with a timeout of its own (a blocking query waits up to ten minutes).
    async fn send_within(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response> {
        let response = self
            .execute(self.authorized(request), Some(timeout))
            .await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(parsed) => ClientError::Api {
                status,
                code: parsed.error.code,
                message: parsed.error.message,
                field: parsed.error.field,
            },
            Err(_) => ClientError::Api {
                status,
                code: "unknown".into(),
                message: String::from_utf8_lossy(&body).into_owned(),
                field: None,
            },
        })
    }

    /// Sends `request` (built on the current server's URL) to the current server, and on to
    /// the others while they cannot take it, round after round with back-off. Any answer but a
    /// 503 (or, for a request other than POST, a 504) ends the search and makes its server
    /// current. A request whose body is a stream goes to one server only.
    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let request = request.build().map_err(|e| self.transport(e))?;
        let url = request.url().as_str().to_string();
        let Some((built_on, path)) =
            self.servers.iter().enumerate().find_map(|(index, base)| {
                url.strip_prefix(base.as_str()).map(|path| (index, path))
            })
        else {
            return Err(ClientError::Transport {
                base: self.base().to_string(),
                detail: format!("{url} belongs to none of this client's servers"),
            });
        };
        let several = self.servers.len() > 1 && request.try_clone().is_some();
        let rounds = if several { FAILOVER_ROUNDS } else { 1 };
        let idempotent = request.method() != reqwest::Method::POST;
        let attempt_timeout = match timeout {
            // A blocking query's long wait is its own; anything else is bounded per attempt.
            Some(timeout) if several && timeout <= REQUEST_TIMEOUT => Some(ATTEMPT_TIMEOUT),
            other => other,
        };
        let delete = request.method() == reqwest::Method::DELETE;
        let mut pending = Some(request);
        let mut last = None;
        let mut earlier_maybe_applied = false;
        for round in 0..rounds {
            if round > 0 {
                let pause = FAILOVER_BACKOFF * 4u32.pow(round - 1);
                tokio::time::sleep(pause + pause.mul_f64(jitter())).await;
            }
            for offset in 0..self.servers.len() {
                let index = (built_on + offset) % self.servers.len();
                let Some(mut attempt) = (if several {
                    pending.as_ref().and_then(reqwest::Request::try_clone)
                } else {
                    pending.take()
                }) else {
                    break;
                };
                if index != built_on {
                    let moved = format!("{}{path}", self.servers[index]);
                    *attempt.url_mut() = moved.parse().map_err(|e| ClientError::Transport {
                        base: self.servers[index].clone(),
                        detail: format!("{moved}: {e}"),
                    })?;
                }
                *attempt.timeout_mut() = attempt_timeout;
                let outcome = self.http.execute(attempt).await;
                let retry = several && worth_another_server(&outcome, idempotent);
                if !retry {
                    if index != self.current.load(Ordering::Relaxed) {
                        self.current.store(index, Ordering::Relaxed);
                    }
                    if delete
                        && earlier_maybe_applied
                        && matches!(&outcome, Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND)
                    {
                        return Ok(deleted_by_an_earlier_attempt());
                    }
                    return outcome.map_err(|error| ClientError::Transport {
                        base: self.servers[index].clone(),
                        detail: transport_detail(&error),
                    });
                }
                earlier_maybe_applied |= maybe_applied(&outcome);
                last = Some((index, outcome));
            }
        }
        match last {
            Some((index, Ok(response))) => {
                self.current.store(index, Ordering::Relaxed);
                Ok(response)
            }
            Some((index, Err(error))) => Err(ClientError::Transport {
                base: self.servers[index].clone(),
                detail: transport_detail(&error),
            }),
            None => Err(ClientError::Transport {
                base: self.base().to_string(),
                detail: "the request could not be sent".into(),
            }),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        self.json_within(request, REQUEST_TIMEOUT).await
    }

    async fn json_within<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T> {
        let response = self.send_within(request, timeout).await?;
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    fn instances_url(&self, service: &str) -> String {
        format!("{}/v1/services/{}/instances", self.base(), segment(service))
    }

    fn instance_url(&self, service: &str, id: &str) -> String {
        format!("{}/{}", self.instances_url(service), segment(id))
    }

    /// Any route, JSON in and out: for commands that only show what the server answers.
    /// `path` starts with `/` (e.g. `/v1/apps?prefix=shop`).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base()));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Any route, raw text in and out (YAML exports and imports).
    pub async fn call_text(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Option<String>,
    ) -> Result<String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base()))
            .header("content-type", content_type);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = self.send(request).await?;
        response.text().await.map_err(|e| self.transport(e))
    }

    /// Like [`Client::call_text`], reporting each chunk sent and received to `on_transfer`, for
    /// progress on large catalog imports and exports.
    pub async fn call_text_reporting(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
        on_transfer: impl Fn(Transfer) + Send + Sync + 'static,
    ) -> Result<String> {
        const CHUNK: usize = 64 * 1024;
        let on_transfer = std::sync::Arc::new(on_transfer);
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base()))
            .header("content-type", content_type);
        if let Some(body) = body {
            let total = body.len() as u64;
            let body = bytes::Bytes::from(body);
            let report = on_transfer.clone();
            let chunks = (0..body.len().div_ceil(CHUNK)).map(move |index| {
                let end = ((index + 1) * CHUNK).min(body.len());
                report(Transfer::Sent {
                    done: end as u64,
                    total,
                });
                Ok::<_, std::io::Error>(body.slice(index * CHUNK..end))
            });
            request = request
                .header("content-length", total)
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
        }
        let mut response = self.send(request).await?;
        let total = response.content_length();
        let mut received = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            received.extend_from_slice(&chunk);
            on_transfer(Transfer::Received {
                done: received.len() as u64,
                total,
            });
        }
        String::from_utf8(received).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Registers (or renews, or updates) an instance; true when it was created.
    pub async fn register(
        &self,
        service: &str,
        registration: &Registration,
    ) -> Result<(Instance, bool)> {
        let request = match &registration.id {
            Some(id) => self.http.put(self.instance_url(service, id)),
            None => self.http.post(self.instances_url(service)),
        };
        let response = self.send(request.json(registration)).await?;
        let created = response.status().as_u16() == 201;
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        let instance =
            serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok((instance, created))
    }

    pub async fn heartbeat(&self, service: &str, id: &str) -> Result<Heartbeat> {
        self.json(
            self.http
                .put(format!("{}/heartbeat", self.instance_url(service, id))),
        )
        .await
    }

    pub async fn deregister(&self, service: &str, id: &str) -> Result<()> {
        self.send(self.http.delete(self.instance_url(service, id)))
            .await
            .map(|_| ())
    }

    pub async fn services(&self) -> Result<ServiceList> {
        self.json(self.http.get(format!("{}/v1/services", self.base())))
            .await
    }

    /// A service's instances; `query` holds filters (`zone`, `tag`, …) and blocking
    /// parameters (`index`, `wait`).
    pub async fn instances(&self, service: &str, query: &[(&str, String)]) -> Result<InstanceList> {
        let request = self.http.get(self.instances_url(service)).query(query);
        // A blocking query may wait up to ten minutes.
        self.json_within(request, Duration::from_secs(11 * 60))
            .await
    }

    /// Instances of every service matching `query` (`service`, `repo`, `address`, `meta`).
    pub async fn find_instances(&self, query: &[(&str, String)]) -> Result<FoundInstances> {
        self.json(
            self.http
                .get(format!("{}/v1/instances", self.base()))
                .query(query),
        )
        .await
    }

    /// Creates a token (an administrator's request); the answer holds its secret, once.
    pub async fn create_token(
        &self,
        owner: &str,
        grants: &[String],
        description: &str,
    ) -> Result<Token> {
        let body =
            serde_json::json!({"owner": owner, "grants": grants, "description": description});
        self.json(
            self.http
                .post(format!("{}/v1/tokens", self.base()))
                .json(&body),
        )
        .await
    }

    pub async fn tokens(&self) -> Result<Vec<Token>> {
        self.json(self.http.get(format!("{}/v1/tokens", self.base())))
            .await
    }

    /// The token this client sends (`{"auth": "off"}` from a server without auth).
    pub async fn token_self(&self) -> Result<serde_json::Value> {
        self.json(self.http.get(format!("{}/v1/tokens/self", self.base())))
            .await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        self.send(
            self.http
                .delete(format!("{}/v1/tokens/{}", self.base(), segment(id))),
        )
        .await
        .map(|_| ())
    }

    /// Follows `/v1/events` (of one service, from after a revision, or from now).
    pub async fn events(&self, service: Option<&str>, after: Option<i64>) -> Result<EventStream> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service.to_string()));
        }
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        let request = self
            .authorized(self.http.get(format!("{}/v1/events", self.base())))
            .query(&query)
            .header("accept", "text/event-stream");
        // A stream has no timeout: it lasts as long as the caller follows it.
        let response = self.execute(request, None).await?;
        if !response.status().is_success() {
            return Err(ClientError::Api {
                status: response.status().as_u16(),
                code: "events".into(),
                message: response.text().await.unwrap_or_default(),
                field: None,
            });
        }
        let base = self.base().to_string();
        let bytes = response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| ClientError::Transport {
                base: base.clone(),
                detail: transport_detail(&e),
            })
        });
        Ok(Box::pin(parse_sse(bytes)))
    }
}

/// A fraction in [0, 1) that differs between calls and processes, for back-off jitter.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    (hasher.finish() % 1000) as f64 / 1000.0
}

/// Splits a Server-Sent Events byte stream into events.
fn parse_sse(
    bytes: impl Stream<Item = Result<bytes::Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<Event>> + Send {
    struct State<S> {
        bytes: Pin<Box<S>>,
        buffer: Vec<u8>,
        kind: String,
        id: Option<String>,
        data: Vec<String>,
    }
    let state = State {
        bytes: Box::pin(bytes),
        buffer: Vec::new(),
        kind: String::new(),
        id: None,
        data: Vec::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(newline) = state.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = state.buffer.drain(..=newline).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if state.data.is_empty() {
                        continue;
                    }
                    let data = state.data.join("\n");
                    state.data.clear();
                    let event = serde_json::from_str(&data)
                        .map(|data| Event {
                            kind: std::mem::take(&mut state.kind),
                            id: state.id.take(),
                            data,
                        })
                        .map_err(|e| ClientError::Decode(e.to_string()));
                    return Some((event, state));
                }
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => state.kind = value.to_string(),
                    "id" => state.id = Some(value.to_string()),
                    "data" => state.data.push(value.to_string()),
                    _ => {}
                }
                continue;
            }
            match state.bytes.next().await {
                Some(Ok(chunk)) => state.buffer.extend_from_slice(&chunk),
                Some(Err(error)) => return Some((Err(error), state)),
                None => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_server_sent_events_across_chunks() {
        let chunks = vec![
            Ok(bytes::Bytes::from_static(b": comment\nevent: online\nda")),
            Ok(bytes::Bytes::from_static(
                b"ta: {\"a\":1}\nid: 7\n\nevent: offline\ndata: {}\n\n",
            )),
        ];
        let events: Vec<Event> = parse_sse(futures::stream::iter(chunks))
            .map(|e| e.unwrap())
            .collect()
            .await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, "online");
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[0].data["a"], 1);
        assert_eq!(events[1].kind, "offline");
        assert_eq!(events[1].id, None);
    }

    #[test]
    fn encodes_ids_as_one_segment() {
        assert_eq!(segment("[::1]:80"), "%5B%3A%3A1%5D%3A80");
        assert_eq!(segment("10.0.0.1:8080"), "10.0.0.1%3A8080");
    }
}
