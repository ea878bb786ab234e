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

impl<'a, B> PublishBody<'a, B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The body, at most `max` bytes, where it lies: either path's is a view of the
    /// connection's read buffer, copied once, into the event (`EventData::for_topics`).
    async fn take<S: Store>(self, app: &App<S>, max: usize) -> Result<Taken<'a>, ApiError> {
        match self {
            Self::InHand(body) if body.len() > max => Err(too_large(max)),
            Self::InHand(body) => Ok(Taken::InHand(body)),
            Self::ToRead(body) => Ok(Taken::Read(read_body(app, body, max).await?)),
        }
    }
}

/// A publish's body, read.
enum Taken<'a> {
    InHand(&'a [u8]),
    Read(bytes::Bytes),
}

impl std::ops::Deref for Taken<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::InHand(body) => body,
            Self::Read(body) => body,
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
    let data = EventData::for_topics(&id, event_type.as_ref(), &topics, &body)
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
    Ok(reply.answer(status))
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

    /// The reply as a JSON answer with `status`, written without serde: every publish
    /// answers one, and serde's general path cost more than the rest of the answer
    /// (profiled in docs/performance.md). Byte for byte what its `Serialize` writes,
    /// which a property test holds it to; a batch writes its outcomes the same way.
    pub(crate) fn answer(&self, status: StatusCode) -> JsonAnswer {
        let mut body = Vec::with_capacity(self.size_hint());
        self.write(&mut body);
        JsonAnswer::with_body(status, body)
    }

    /// About how many bytes [`Self::write`] appends.
    pub(crate) fn size_hint(&self) -> usize {
        64 + self.id.len() + 48 * self.topics.0.len()
    }

    /// Appends the reply's JSON to `body`: what its `Serialize` writes.
    pub(crate) fn write(&self, body: &mut Vec<u8>) {
        body.extend_from_slice(b"{\"status\":\"");
        body.extend_from_slice(self.status.as_bytes());
        body.extend_from_slice(b"\",\"id\":\"");
        json_escaped(body, self.id);
        body.push(b'"');
        if let Some(reason) = self.reason {
            body.extend_from_slice(b",\"reason\":\"");
            body.extend_from_slice(reason.as_bytes());
            body.push(b'"');
        }
        body.extend_from_slice(b",\"topics\":[");
        for (i, copy) in self.topics.0.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"topic\":\"");
            json_escaped(body, copy.topic.public_name());
            body.extend_from_slice(b"\",\"seq\":");
            body.extend_from_slice(itoa::Buffer::new().format(copy.seq).as_bytes());
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
    }
}

/// `text` as the inside of a JSON string. Ids are printable ASCII and topic names fewer
/// characters still (their types see to it), so a quote and a backslash are all that
/// usually need escaping; anything else is escaped as serde_json would, so the writer
/// stays right whatever a type lets through.
pub(crate) fn json_escaped(out: &mut Vec<u8>, text: &str) {
    let plain = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
    if text.bytes().all(plain) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    // serde_json writes a string whole, quotes included; keep what is between them.
    if let Ok(quoted) = serde_json::to_vec(text)
        && let [b'"', inner @ .., b'"'] = quoted.as_slice()
    {
        out.extend_from_slice(inner);
    }
}

fn dropped(id: &EventId) -> JsonAnswer {
    Reply::of(id, &[]).answer(StatusCode::OK)
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

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use tideway_protocol::{EventData, TopicName};

    use super::*;

    /// A store's copy of a one-byte event `e` on `topic` at `seq` (the batch tests' too).
    pub(crate) fn copy(topic: &str, seq: u64) -> Arc<TopicEvent> {
        let event = Event {
            id: EventId::parse(b"e").expect("an id"),
            event_type: None,
            data: EventData::parse(bytes::Bytes::from_static(b"x")).expect("data"),
            published_at: 0,
        };
        let topic = TopicName::parse(topic).expect("a topic");
        Arc::new(TopicEvent::new(topic, seq, 1, seq, Arc::new(event)))
    }

    proptest! {
        /// The hand-written reply is the bytes serde writes for the same reply (a batch's
        /// outcomes are serde's), for any id and topics the types let through.
        #[test]
        fn a_reply_is_written_as_serde_writes_it(
            id in "[ -~]{0,40}",
            topics in proptest::collection::vec(("[a-zA-Z0-9_.:/@-]{1,24}", any::<u64>()), 0..4),
        ) {
            let id = EventId::parse(id.trim().as_bytes()).unwrap_or_else(|_| EventId::parse(b"x").expect("an id"));
            let copies: Vec<_> = topics.iter().map(|(topic, seq)| copy(topic, *seq)).collect();
            let reply = Reply::of(&id, &copies);
            let answer = reply.answer(StatusCode::ACCEPTED);
            prop_assert_eq!(answer.status, StatusCode::ACCEPTED);
            prop_assert_eq!(
                String::from_utf8(answer.body).expect("UTF-8"),
                serde_json::to_string(&reply).expect("JSON")
            );
        }

        /// Any text, controls and non-ASCII included, is escaped as serde_json escapes it.
        #[test]
        fn text_is_escaped_as_serde_json_escapes_it(text in any::<String>()) {
            let mut out = b"\"".to_vec();
            json_escaped(&mut out, &text);
            out.push(b'"');
            prop_assert_eq!(out, serde_json::to_vec(&text).expect("JSON"));
        }
    }
}
