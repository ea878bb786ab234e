//! `POST /v1/publish/batch`: many events in one request, each with its own topics, id,
//! event type and data, published one after another in the batch's order (so events of one
//! batch on one topic arrive in that order), each through the same checks and drop
//! decision as a single publish. One answer lists every event's outcome; a bad event does
//! not sink the others unless the batch is `atomic`, which checks every event (and the
//! rate limit, for all of them at once) before publishing any.

use http::{Request, StatusCode, header};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use tideway_core::{Event, Store, TopicEvent, unix_millis};
use tideway_protocol::{EventData, EventId, EventType, TopicList};

use crate::{
    Scope,
    app::App,
    error::{ApiError, ErrorCode},
    publish::{Reply, event_id, event_type, publish_event, reachable, read_body, too_large},
    response::{Response, json},
};

/// The most events one batch may carry.
pub(crate) const MAX_EVENTS: usize = 1000;

/// A batch as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    events: Vec<Sent>,
    /// Publish all or none: every event is checked before any is published.
    #[serde(default)]
    atomic: bool,
}

/// One event as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sent {
    /// Its topics, each as `x-sse-topic` takes them (an entry may list several).
    topics: Vec<String>,
    id: String,
    #[serde(default)]
    event: Option<String>,
    data: String,
}

/// One event, checked and ready to publish.
struct Checked {
    topics: TopicList,
    id: EventId,
    event_type: Option<EventType>,
    data: EventData,
}

/// One event's outcome in the answer.
#[derive(Serialize)]
#[serde(untagged)]
enum Outcome<'a> {
    /// Accepted or dropped, as a single publish answers.
    Published(Reply<'a>),
    /// Refused, with the error a single publish would have got.
    Failed {
        status: &'static str,
        id: &'a str,
        error: ErrorBody,
    },
    /// Not published: another event of an atomic batch was refused.
    Skipped { status: &'static str, id: &'a str },
}

#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

impl From<&ApiError> for ErrorBody {
    fn from(err: &ApiError) -> Self {
        Self {
            code: err.code.as_str(),
            message: err.message.clone(),
        }
    }
}

/// The answer to a batch.
#[derive(Serialize)]
struct Answer<'a> {
    accepted: usize,
    dropped: usize,
    failed: usize,
    results: Vec<Outcome<'a>>,
}

pub(crate) async fn publish_batch<S: Store>(
    app: &App<S>,
    request: Request<Incoming>,
) -> Result<Response, ApiError> {
    let key = app.authorize(request.headers(), Scope::Publish)?;
    let max = app.config.max_batch_body;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large(max));
    }
    let body = read_body(app, request.into_body(), max).await?;
    let batch: Batch = serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("a batch is {{\"events\": [{{\"topics\", \"id\", \"event\", \"data\"}}], \"atomic\"}}: {err}"),
        )
    })?;
    if batch.events.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "the batch has no events",
        ));
    }
    if batch.events.len() > MAX_EVENTS {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "the batch has {} events; at most {MAX_EVENTS} are allowed",
                batch.events.len()
            ),
        ));
    }
    let checked: Vec<Result<Checked, ApiError>> = batch
        .events
        .iter()
        .map(|sent| check(app, &key, sent))
        .collect();
    if batch.atomic {
        if let Some((at, err)) = checked
            .iter()
            .enumerate()
            .find_map(|(at, c)| c.as_ref().err().map(|err| (at, err)))
        {
            let error = ApiError::new(
                err.code,
                format!(
                    "event {at} ({:?}): {}; nothing was published",
                    batch.events[at].id, err.message
                ),
            );
            return Ok(refused(error, &batch.events, checked));
        }
        let count = u32::try_from(checked.len()).unwrap_or(u32::MAX);
        if let Err(err) = app.rate_limits.take(&key, count) {
            return Ok(refused(err, &batch.events, checked));
        }
    }
    let mut answer = Answer {
        accepted: 0,
        dropped: 0,
        failed: 0,
        results: Vec::with_capacity(checked.len()),
    };
    // Published one after another: events of the batch on one topic arrive in its order.
    let mut published = Vec::with_capacity(checked.len());
    for checked in checked {
        let result = match checked {
            Ok(event) => publish_one(app, &key, event, batch.atomic).await,
            Err(err) => Err(err),
        };
        published.push(result);
    }
    for (sent, result) in batch.events.iter().zip(&published) {
        let outcome = match result {
            Ok((id, topics)) => {
                let reply = Reply::of(id, topics);
                if topics.is_empty() {
                    answer.dropped += 1;
                } else {
                    answer.accepted += 1;
                }
                Outcome::Published(reply)
            }
            Err(err) => {
                answer.failed += 1;
                Outcome::Failed {
                    status: "error",
                    id: sent.id.as_str(),
                    error: err.into(),
                }
            }
        };
        answer.results.push(outcome);
    }
    Ok(json(StatusCode::OK, &answer))
}

/// One event of the batch as a single publish would check it (the rate limit aside).
fn check<S: Store>(app: &App<S>, key: &crate::ApiKey, sent: &Sent) -> Result<Checked, ApiError> {
    let topics = TopicList::parse_all(
        sent.topics.iter().map(String::as_bytes),
        app.config.max_topics,
    )
    .map_err(|err| ApiError::new(ErrorCode::InvalidTopic, err.to_string()))?;
    let topics = reachable(key, topics)?;
    let id = event_id(sent.id.as_bytes(), "id")?;
    let event_type = sent
        .event
        .as_deref()
        .map(|t| event_type(t.as_bytes(), "event"))
        .transpose()?;
    let max = app.config.max_body;
    if sent.data.len() > max {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "its data is {} bytes; at most {max} are allowed (--max-body)",
                sent.data.len()
            ),
        ));
    }
    let data = EventData::for_topics(&id, event_type.as_ref(), &topics, sent.data.as_bytes())
        .map_err(|err| ApiError::new(ErrorCode::InvalidBody, err.to_string()))?;
    Ok(Checked {
        topics,
        id,
        event_type,
        data,
    })
}

/// Publishes one checked event; its rate was taken already in an atomic batch.
async fn publish_one<S: Store>(
    app: &App<S>,
    key: &crate::ApiKey,
    checked: Checked,
    rate_taken: bool,
) -> Result<(EventId, Vec<Arc<TopicEvent>>), ApiError> {
    if !rate_taken {
        app.rate_limits.take(key, 1)?;
    }
    let event = Event {
        id: checked.id.clone(),
        event_type: checked.event_type,
        data: checked.data,
        published_at: unix_millis(),
    };
    let topics = publish_event(app, &checked.topics, event).await?;
    Ok((checked.id, topics))
}

/// The answer to an atomic batch refused before anything was published: `error`, and
/// each event's own verdict.
fn refused(error: ApiError, sent: &[Sent], checked: Vec<Result<Checked, ApiError>>) -> Response {
    let results: Vec<Outcome<'_>> = sent
        .iter()
        .zip(checked)
        .map(|(sent, checked)| match checked {
            Ok(_) => Outcome::Skipped {
                status: "skipped",
                id: sent.id.as_str(),
            },
            Err(err) => Outcome::Failed {
                status: "error",
                id: sent.id.as_str(),
                error: (&err).into(),
            },
        })
        .collect();
    error.into_response_with("results", serde_json::json!(results))
}
