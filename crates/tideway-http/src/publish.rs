//! `POST /v1/publish`: check everything but the body, drop at once when no topic is
//! live, otherwise read the body once and hand it to the engine. With a remote store and
//! a small body already sent, the body is read first and one store call both checks the
//! topics and appends.

use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use tideway_core::{Event, Route, Store, unix_millis};
use tideway_protocol::{EventData, EventId, EventType};

use crate::{
    Scope,
    app::App,
    error::{ApiError, ErrorCode},
    response::{Response, json},
};

/// The reply to a publish.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reply<'a> {
    /// `accepted` or `dropped`.
    status: &'static str,
    id: &'a str,
    /// Why it was dropped (`no_subscribers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// The topics it was delivered on, with its sequence number in each.
    topics: Vec<Delivered<'a>>,
}

#[derive(Serialize)]
struct Delivered<'a> {
    topic: &'a str,
    seq: u64,
}

/// The largest declared body read before the topics are looked at (see `publish`).
const ONE_CALL_BODY: u64 = 16 * 1024;

/// Whether the client holds its body back until told `100 Continue`.
fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

pub(crate) async fn publish<S: Store>(
    app: &App<S>,
    request: Request<Incoming>,
) -> Result<Response, ApiError> {
    let key = app.authorize(request.headers(), Scope::Publish)?;
    let topics = app.topics(&request, false)?;
    key.check_topics(&topics, "publish to")?;
    app.rate_limits.take(&key)?;
    // A tenant's key publishes into its tenant's namespace, and only there.
    let topics = match &key.tenant {
        Some(tenant) => topics.in_tenant(tenant),
        None => topics,
    };
    let headers = request.headers();
    let id = headers
        .get("x-sse-id")
        .ok_or_else(|| ApiError::new(ErrorCode::MissingId, "send the event's id in x-sse-id"))
        .and_then(|value| {
            EventId::parse(value.as_bytes())
                .map_err(|err| ApiError::new(ErrorCode::InvalidId, format!("x-sse-id: {err}")))
        })?;
    let event_type = match headers.get("x-sse-event") {
        None => None,
        Some(value) => Some(EventType::parse(value.as_bytes()).map_err(|err| {
            ApiError::new(ErrorCode::InvalidEvent, format!("x-sse-event: {err}"))
        })?),
    };

    let max = app.config.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
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
                if expects_continue(headers) {
                    answer.headers_mut().insert(
                        header::CONNECTION,
                        header::HeaderValue::from_static("close"),
                    );
                }
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
    let wait = app.config.header_read_timeout;
    let body = tokio::time::timeout(wait, Limited::new(request.into_body(), max).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::BodyTimeout,
                format!(
                    "the body did not arrive within {} ms (--header-read-timeout)",
                    wait.as_millis()
                ),
            )
        })?
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                too_large(max)
            } else {
                ApiError::new(
                    ErrorCode::BodyReadFailed,
                    format!("could not read the body: {err}"),
                )
            }
        })?
        .to_bytes();
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
    if published.topics.is_empty() {
        return Ok(dropped(&id));
    }
    let reply = Reply {
        status: "accepted",
        id: id.as_str(),
        reason: None,
        topics: published
            .topics
            .iter()
            .map(|(topic, seq)| Delivered {
                topic: topic.public_name(),
                seq: *seq,
            })
            .collect(),
    };
    Ok(json(StatusCode::ACCEPTED, &reply))
}

fn dropped(id: &EventId) -> Response {
    let reply = Reply {
        status: "dropped",
        id: id.as_str(),
        reason: Some("no_subscribers"),
        topics: Vec::new(),
    };
    json(StatusCode::OK, &reply)
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("the body is larger than the {max} bytes allowed"),
    )
}
