//! `GET /v1/events`: instance events as Server-Sent Events. Each event's id is its store
//! revision (set on the last event of a revision only, so a client that reconnects with
//! `Last-Event-ID` never skips half a revision); a client resuming from compacted history gets
//! a `reset` event with a fresh snapshot.

use crate::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Params;
use crate::heavy::Heavy;
use crate::native::instances::{InstanceDto, parse_service};
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use berth_domain::ServiceName;
use berth_registry::auth::Caller;
use berth_registry::{EventItem, EventSubscription, FeedBatch, InstanceEventKind, Revision};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Serialize)]
struct InstanceEventDto<'a> {
    r#type: &'static str,
    revision: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    instance: InstanceDto<'a>,
}

#[derive(Serialize)]
struct ResetDto<'a> {
    r#type: &'static str,
    revision: i64,
    instances: Vec<InstanceDto<'a>>,
}

/// The SSE frames of a feed batch, made once for every subscriber: each event's JSON, and
/// the frame of every filter subscribers used (all events, or one service's).
struct EncodedBatch {
    data: Vec<String>,
    frames: Mutex<HashMap<Option<ServiceName>, Bytes>>,
}

fn encode(batch: &FeedBatch) -> EncodedBatch {
    EncodedBatch {
        data: batch
            .events
            .iter()
            .map(|event| {
                let reason = match event.kind {
                    InstanceEventKind::Offline(reason) => Some(reason.as_str()),
                    _ => None,
                };
                let dto = InstanceEventDto {
                    r#type: event.kind.name(),
                    revision: batch.revision.0,
                    reason,
                    instance: InstanceDto::without_liveness(
                        &event.instance.instance,
                        event.instance.revision_index,
                    ),
                };
                serde_json::to_string(&dto).unwrap_or_default()
            })
            .collect(),
        frames: Mutex::new(HashMap::new()),
    }
}

/// One SSE event: its type, its JSON (one line: serde_json writes no newline) and, on the
/// last event of a revision, the revision as its id.
fn frame(out: &mut String, kind: &str, data: &str, id: Option<Revision>) {
    out.push_str("event: ");
    out.push_str(kind);
    out.push_str("\ndata: ");
    out.push_str(data);
    if let Some(id) = id {
        out.push_str("\nid: ");
        out.push_str(&id.0.to_string());
    }
    out.push_str("\n\n");
}

/// The bytes one subscriber sends for one item. A batch's bytes are shared by every
/// subscriber with the same filter.
fn frames(item: EventItem, filter: Option<&ServiceName>) -> Bytes {
    match item {
        EventItem::Batch(batch) => {
            let encoded = batch.batch.encoded(encode);
            let mut frames = encoded.frames.lock().unwrap_or_else(|e| e.into_inner());
            frames
                .entry(filter.cloned())
                .or_insert_with(|| {
                    let mut out = String::new();
                    let last = batch.wanted.len().saturating_sub(1);
                    for (position, &index) in batch.wanted.iter().enumerate() {
                        let kind = batch.batch.events[index].kind.name();
                        let id = (position == last).then(|| batch.revision());
                        frame(&mut out, kind, &encoded.data[index], id);
                    }
                    Bytes::from(out)
                })
                .clone()
        }
        EventItem::Reset {
            revision,
            instances,
        } => {
            let dto = ResetDto {
                r#type: "reset",
                revision: revision.0,
                instances: instances
                    .iter()
                    .map(|live| InstanceDto::without_liveness(&live.instance, live.revision_index))
                    .collect(),
            };
            let mut out = String::new();
            let data = serde_json::to_string(&dto).unwrap_or_default();
            frame(&mut out, "reset", &data, Some(revision));
            Bytes::from(out)
        }
    }
}

/// A comment line every `KEEP_ALIVE`, so proxies and clients see the stream is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn into_stream(subscription: EventSubscription) -> impl Stream<Item = Bytes> {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(
        (subscription, ticks),
        |(mut subscription, mut ticks)| async move {
            // Both are cancel-safe: an event is never lost to a tick.
            let bytes = tokio::select! {
                item = subscription.next() => frames(item?, subscription.service()),
                _ = ticks.tick() => Bytes::from_static(b":\n\n"),
            };
            Some((bytes, (subscription, ticks)))
        },
    )
}

pub async fn events(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Response> {
    params.only(&["service", "after"])?;
    let service = params.one("service").map(parse_service).transpose()?;
    let after = match params.parsed::<i64>("after", "a revision number")? {
        Some(after) => Some(after),
        None => match headers.get("last-event-id") {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .ok_or_else(|| {
                        ApiError::bad_request("Last-Event-ID must be a revision number")
                            .with_field("Last-Event-ID")
                    })?,
            ),
            None => None,
        },
    };
    if let Some(after) = after
        && after < 0
    {
        return Err(
            ApiError::bad_request("`after` must be a revision number (0 or more)")
                .with_field("after"),
        );
    }
    let slot = state.heavy.take(Heavy::EventStream)?;
    let subscription = state.registry.subscribe(service, after.map(Revision)).await;
    // The stream ends at shutdown, and when the token that opened it is revoked.
    let registry = state.registry.clone();
    let shutdown = state.shutdown.clone().cancelled_owned();
    let ended = futures::future::select(
        Box::pin(shutdown),
        Box::pin(async move { registry.revoked(&by).await }),
    );
    let open = slot;
    let stream = into_stream(subscription)
        .map(move |bytes| {
            // Held by the stream: the gauge goes down when the client goes away.
            let _open = &open;
            Ok::<_, Infallible>(bytes)
        })
        .take_until(ended);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
