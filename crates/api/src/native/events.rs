//! `GET /v1/events`: instance events as Server-Sent Events. Each event's id is its store
//! revision (set on the last event of a revision only, so a client that reconnects with
//! `Last-Event-ID` never skips half a revision); a client resuming from compacted history gets
//! a `reset` event with a fresh snapshot.

use crate::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Params;
use crate::metrics::InFlight;
use crate::native::instances::{InstanceDto, parse_service};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use berth_registry::{EventItem, EventSubscription, FeedBatch, InstanceEventKind, Revision};
use futures::{Stream, StreamExt};
use serde::Serialize;
use std::convert::Infallible;
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

/// Every event of a feed batch as SSE data (JSON), made once for every subscriber.
struct EncodedBatch {
    data: Vec<String>,
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
    }
}

fn sse_events(item: EventItem) -> Vec<Event> {
    match item {
        EventItem::Batch(batch) => {
            let encoded = batch.batch.encoded(encode);
            let last = batch.wanted.len().saturating_sub(1);
            batch
                .wanted
                .iter()
                .enumerate()
                .map(|(position, &index)| {
                    let kind = batch.batch.events[index].kind.name();
                    let sse = Event::default().event(kind).data(&encoded.data[index]);
                    if position == last {
                        sse.id(batch.revision().0.to_string())
                    } else {
                        sse
                    }
                })
                .collect()
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
            vec![
                Event::default()
                    .event("reset")
                    .id(revision.0.to_string())
                    .data(serde_json::to_string(&dto).unwrap_or_default()),
            ]
        }
    }
}

fn into_stream(subscription: EventSubscription) -> impl Stream<Item = Vec<Event>> {
    futures::stream::unfold(subscription, |mut subscription| async move {
        let item = subscription.next().await?;
        Some((sse_events(item), subscription))
    })
}

pub async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
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
    let subscription = state.registry.subscribe(service, after.map(Revision)).await;
    let shutdown = state.shutdown.clone().cancelled_owned();
    let open = InFlight::new(metrics::gauge!("berth_http_event_streams"));
    let stream = into_stream(subscription)
        .flat_map(futures::stream::iter)
        .map(move |event| {
            // Held by the stream: the gauge goes down when the client goes away.
            let _open = &open;
            Ok(event)
        })
        .take_until(shutdown);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
