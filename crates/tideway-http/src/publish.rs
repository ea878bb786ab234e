//! `POST /v1/publish`: check everything but the body, drop at once when no topic is
//! live, otherwise read the body once and hand it to the engine. With a remote store and
//! a small body already sent, the body is read first and one store call both checks the
//! topics and appends.

use futures_util::FutureExt as _;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use std::sync::Arc;

use tideway_core::{Event, Route, Store, TopicEvent, unix_millis};
use tideway_protocol::{EventData, EventId, EventType, TopicList};

use crate::{
    ApiKey, Scope,
    app::App,
    error::{ApiError, ErrorCode},
    head::Headers,
    response::{JsonAnswer, Response},
};

/// The reply to a publish (and one event's outcome in a batch).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Reply<'a> {
    /// `accepted` or `dropped`.
    status: &'static str,
    id: &'a str,
    /// Why it was dropped (`no_subscribers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// The topics it was delivered on, with its sequence number in each.
    topics: DeliveredOn<'a>,
}

/// The copies a publish was appended as, written as the reply's list of topic and
/// sequence number straight from the store's answer, with no list of its own.
pub(crate) struct DeliveredOn<'a>(&'a [Arc<TopicEvent>]);

impl Serialize for DeliveredOn<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Delivered<'a> {
            topic: &'a str,
            seq: u64,
        }
        serializer.collect_seq(self.0.iter().map(|copy| Delivered {
            topic: copy.topic.public_name(),
            seq: copy.seq,
        }))
    }
}

/// The largest declared body read before the topics are looked at (see `publish`).
const ONE_CALL_BODY: u64 = 16 * 1024;

/// Whether the client holds its body back until told `100 Continue`.
fn expects_continue(headers: &impl Headers) -> bool {
    headers
        .get("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
}

/// A publish's body as its path has it.
pub(crate) enum PublishBody<'a, B> {
    /// The direct path's: the whole body, read with the head, borrowed from the
    /// connection's read buffer.
    InHand(&'a [u8]),
    /// hyper's: still to be read.
    ToRead(B),
}

impl<B> PublishBody<'_, B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The body, at most `max` bytes, as a copy of exactly its own length. Either path's
    /// body is a slice of the connection's read buffer; kept in history as it is, it would
    /// pin that whole buffer (8 KiB or more) for as long as the event lives, and make the
    /// connection allocate a fresh buffer for every request (profiled in
    /// docs/performance.md).
    async fn take<S: Store>(self, app: &App<S>, max: usize) -> Result<bytes::Bytes, ApiError> {
        match self {
            Self::InHand(body) if body.len() > max => Err(too_large(max)),
            Self::InHand(body) => Ok(bytes::Bytes::copy_from_slice(body)),
            Self::ToRead(body) => Ok(bytes::Bytes::copy_from_slice(
                &read_body(app, body, max).await?,
            )),
        }
    }
}

/// A publish read by hyper.
pub(crate) async fn publish<S: Store, B>(
    app: &App<S>,
    request: Request<B>,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    publish_from(app, &parts.headers, PublishBody::ToRead(body))
        .await
        .map(JsonAnswer::into_response)
}

/// A publish, whichever path read it: hyper's or the direct one.
pub(crate) async fn publish_from<S: Store, B>(
    app: &App<S>,
    headers: &impl Headers,
    body: PublishBody<'_, B>,
) -> Result<JsonAnswer, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let key = app.authorize(headers, Scope::Publish)?;
    let topics = app.topics_in(headers, None)?;
    let topics = reachable(&key, topics)?;
    app.rate_limits.take(&key, 1)?;
    let id = headers
        .get("x-sse-id")
        .ok_or_else(|| ApiError::new(ErrorCode::MissingId, "send the event's id in x-sse-id"))
        .and_then(|value| event_id(value, "x-sse-id"))?;
    let event_type = headers
        .get("x-sse-event")
        .map(|value| event_type(value, "x-sse-event"))
        .transpose()?;

    let max = app.config.max_body;
    let declared = headers
        .get("content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A small body that is not held back for `100 Continue` is in hand at once: read it
    // first and let one store call both check the topics and append, where the store's
    // liveness check is a round trip of its own.
    let one_call = app.gateway.publishes_in_one_call()
        && !expects_continue(headers)
        && declared.is_some_and(|len| len <= ONE_CALL_BODY);
    let live = if one_call {
        None
    } else {
        match app.gateway.route(&topics, &id).await? {
            // The body is never polled, so hyper never sends `100 Continue` and a client
            // that asked for it never sends the body at all.
            // The connection then cannot carry another request (the unsent body would
            // come first), so hyper closes it; say so, as RFC 9110 §10.1.1 asks.
            Route::Dropped => {
                let mut answer = dropped(&id);
                answer.close = expects_continue(headers);
                return Ok(answer);
            }
            Route::Live(live) => Some(live),
        }
    };

    // Only now: a publish dropped above never looks at its body, however large.
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large(max));
    }
    // A body that stalls would hold its drain permit (and its memory) for ever.
    let body = body.take(app, max).await?;
    let data = EventData::parse(body)
        .map_err(|err| ApiError::new(ErrorCode::InvalidBody, err.to_string()))?;
    let event = Event {
        id: id.clone(),
        event_type,
        data,
        published_at: unix_millis(),
    };
    let published = match live {
        Some(live) => app.gateway.publish(live, event).await?,
        None => app.gateway.publish_now(&topics, event).await?,
    };
    let reply = Reply::of(&id, &published.copies);
    let status = if reply.status == "accepted" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(JsonAnswer::new(status, &reply))
}

/// Publishes an event whose body is in hand to `topics` (already checked against the
/// key): one store call, which appends to the live topics and drops the event when none
/// is. Routing first only pays when it spares reading a body; here the body is read, so
/// it would be a second store call (and lock) per event for nothing.
pub(crate) async fn publish_event<S: Store>(
    app: &App<S>,
    topics: &TopicList,
    event: Event,
) -> Result<Vec<Arc<TopicEvent>>, ApiError> {
    Ok(app.gateway.publish_now(topics, event).await?.copies)
}

impl<'a> Reply<'a> {
    /// The reply for event `id` appended as `copies`, one per topic (none: dropped).
    pub(crate) fn of(id: &'a EventId, copies: &'a [Arc<TopicEvent>]) -> Self {
        let dropped = copies.is_empty();
        Self {
            status: if dropped { "dropped" } else { "accepted" },
            id: id.as_str(),
            reason: dropped.then_some("no_subscribers"),
            topics: DeliveredOn(copies),
        }
    }
}

fn dropped(id: &EventId) -> JsonAnswer {
    JsonAnswer::new(StatusCode::OK, &Reply::of(id, &[]))
}

/// The topics a publish of `key` reaches: each must be within its patterns, and a
/// tenant's key publishes into its tenant's namespace, and only there.
pub(crate) fn reachable(key: &ApiKey, topics: TopicList) -> Result<TopicList, ApiError> {
    key.check_topics(&topics, "publish to")?;
    Ok(match &key.tenant {
        Some(tenant) => topics.in_tenant(tenant),
        None => topics,
    })
}

/// An event id sent as `field`.
pub(crate) fn event_id(bytes: &[u8], field: &str) -> Result<EventId, ApiError> {
    EventId::parse(bytes)
        .map_err(|err| ApiError::new(ErrorCode::InvalidId, format!("{field}: {err}")))
}

/// An event type sent as `field`.
pub(crate) fn event_type(bytes: &[u8], field: &str) -> Result<EventType, ApiError> {
    EventType::parse(bytes)
        .map_err(|err| ApiError::new(ErrorCode::InvalidEvent, format!("{field}: {err}")))
}

/// Reads a request body of at most `max` bytes within `--header-read-timeout`.
pub(crate) async fn read_body<S: Store, B>(
    app: &App<S>,
    body: B,
    max: usize,
) -> Result<bytes::Bytes, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let wait = app.config.header_read_timeout;
    let collect = Limited::new(body, max).collect();
    tokio::pin!(collect);
    // A body already in hand (the direct path's; a small one hyper has read) is taken
    // without a timer: arming one, and dropping it, each take the lock of tokio's timer
    // driver, which every connection shares.
    let collected = match collect.as_mut().now_or_never() {
        Some(collected) => collected,
        None => tokio::time::timeout(wait, collect).await.map_err(|_| {
            ApiError::new(
                ErrorCode::BodyTimeout,
                format!(
                    "the body did not arrive within {} ms (--header-read-timeout)",
                    wait.as_millis()
                ),
            )
        })?,
    };
    let collected = collected.map_err(|err| {
        if err.is::<http_body_util::LengthLimitError>() {
            too_large(max)
        } else {
            ApiError::new(
                ErrorCode::BodyReadFailed,
                format!("could not read the body: {err}"),
            )
        }
    })?;
    Ok(collected.to_bytes())
}

pub(crate) fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("the body is larger than the {max} bytes allowed"),
    )
}
