//! `POST /v1/publish/batch`: many events in one request, each with its own topics, id,
//! event type and data, published one after another in the batch's order (so events of one
//! batch on one topic arrive in that order), each through the same checks and drop
//! decision as a single publish. One answer lists every event's outcome; a bad event does
//! not sink the others unless the batch is `atomic`, which checks every event (and the
//! rate limit, for all of them at once) before publishing any.

use http::{Request, StatusCode, header};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use std::{borrow::Cow, fmt, sync::Arc};

use tideway_core::{Event, Store, TopicEvent, unix_millis};
use tideway_protocol::{EventData, EventId, EventType, TopicList};

use crate::{
    Scope,
    app::App,
    error::{ApiError, ErrorCode},
    publish::{Reply, event_id, event_type, json_escaped, reachable, read_body, too_large},
    response::{JsonAnswer, Response},
};

/// The most events one batch may carry.
pub(crate) const MAX_EVENTS: usize = 1000;

/// A batch as sent. Its strings are read where they lie in the request's body, and
/// copied only when they hold JSON escapes: each event is copied once, into its frame.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    events: Vec<Sent<'a>>,
    /// Publish all or none: every event is checked before any is published.
    #[serde(default)]
    atomic: bool,
}

/// One event as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sent<'a> {
    /// Its topics, each as `x-sse-topic` takes them (an entry may list several).
    #[serde(borrow)]
    topics: Topics<'a>,
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(default, borrow)]
    event: Option<Text<'a>>,
    #[serde(borrow)]
    data: Text<'a>,
}

/// An event's `topics`: the usual one held inline, more in a list (an allocation per
/// event saved, for the commonest batch).
#[derive(Default)]
struct Topics<'a> {
    first: Option<Text<'a>>,
    more: Vec<Text<'a>>,
}

impl<'a> Topics<'a> {
    fn iter(&self) -> impl Iterator<Item = &Text<'a>> {
        self.first.iter().chain(&self.more)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Topics<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Topics<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of topics")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Topics<'de>, A::Error> {
                let mut topics = Topics {
                    first: seq.next_element()?,
                    more: Vec::new(),
                };
                if topics.first.is_some() {
                    while let Some(topic) = seq.next_element()? {
                        topics.more.push(topic);
                    }
                }
                Ok(topics)
            }
        }

        deserializer.deserialize_seq(Visitor)
    }
}

/// A JSON string of the body: borrowed from it when it has no escapes, else unescaped
/// into a copy of its own.
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }

        deserializer.deserialize_str(Visitor)
    }
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
    /// Accepted or dropped, as a single publish answers (written by `answer`, by hand).
    #[cfg(test)]
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

/// The answer to a batch, as serde would write it; the handler writes the same bytes by
/// hand (see `answer`), which a property test holds it to.
#[cfg(test)]
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
    // UTF-8 checked once over the whole body, so the parser need not check each string.
    let body = std::str::from_utf8(&body).map_err(|err| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!(
                "a batch is JSON, which is UTF-8; byte {} is not",
                err.valid_up_to()
            ),
        )
    })?;
    let batch: Batch = serde_json::from_str(body).map_err(|err| {
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
                    &*batch.events[at].id, err.message
                ),
            );
            return Ok(refused(error, &batch.events, checked));
        }
        let count = u32::try_from(checked.len()).unwrap_or(u32::MAX);
        if let Err(err) = app.rate_limits.take(&key, count) {
            return Ok(refused(err, &batch.events, checked));
        }
    }
    // Each event's rate is taken in the batch's order (an atomic batch's were taken above);
    // those let through are published one after another in that order, in one store
    // call: events of the batch on one topic arrive in its order.
    let published_at = unix_millis();
    let mut admitted = Vec::with_capacity(checked.len());
    let mut events = Vec::with_capacity(checked.len());
    for checked in checked {
        let checked = checked.and_then(|checked| {
            if !batch.atomic {
                app.rate_limits.take(&key, 1)?;
            }
            Ok(checked)
        });
        admitted.push(checked.map(|checked| {
            let event = Event {
                id: checked.id.clone(),
                event_type: checked.event_type,
                data: checked.data,
                published_at,
            };
            events.push((checked.topics, event));
            checked.id
        }));
    }
    let mut outcomes = app.gateway.publish_all(events).await.into_iter();
    let published: Vec<Published> = admitted
        .into_iter()
        .map(|admitted| {
            let id = admitted?;
            // `publish_all` answers every event it is given, in order.
            let outcome = outcomes.next().expect("an answer per event published")?;
            Ok((id, outcome.copies))
        })
        .collect();
    Ok(JsonAnswer::with_body(StatusCode::OK, answer(&batch.events, &published)).into_response())
}

/// Each event's outcome: accepted or dropped with what it was appended as, or refused.
type Published = Result<(EventId, Vec<Arc<TopicEvent>>), ApiError>;

/// The answer's JSON, written by hand as for a single publish (`Reply::write`): a batch
/// answers an outcome per event, and serde's general path cost more than the rest of
/// the batch's handling (profiled in docs/performance.md). Byte for byte what serde
/// writes for [`Answer`].
fn answer(sent: &[Sent<'_>], published: &[Published]) -> Vec<u8> {
    let accepted = published
        .iter()
        .filter(|result| result.as_ref().is_ok_and(|(_, copies)| !copies.is_empty()))
        .count();
    let failed = published.iter().filter(|result| result.is_err()).count();
    let dropped = published.len() - accepted - failed;
    let mut body = Vec::with_capacity(64 + published.len() * 128);
    let mut number = itoa::Buffer::new();
    for (name, count) in [
        ("accepted", accepted),
        ("dropped", dropped),
        ("failed", failed),
    ] {
        body.extend_from_slice(if name == "accepted" { b"{\"" } else { b",\"" });
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\":");
        body.extend_from_slice(number.format(count).as_bytes());
    }
    body.extend_from_slice(b",\"results\":[");
    for (at, (sent, result)) in sent.iter().zip(published).enumerate() {
        if at > 0 {
            body.push(b',');
        }
        match result {
            Ok((id, copies)) => Reply::of(id, copies).write(&mut body),
            Err(err) => {
                body.extend_from_slice(b"{\"status\":\"error\",\"id\":\"");
                json_escaped(&mut body, &sent.id);
                body.extend_from_slice(b"\",\"error\":{\"code\":\"");
                json_escaped(&mut body, err.code.as_str());
                body.extend_from_slice(b"\",\"message\":\"");
                json_escaped(&mut body, &err.message);
                body.extend_from_slice(b"\"}}");
            }
        }
    }
    body.extend_from_slice(b"]}");
    body
}

/// One event of the batch as a single publish would check it (the rate limit aside).
fn check<S: Store>(
    app: &App<S>,
    key: &crate::ApiKey,
    sent: &Sent<'_>,
) -> Result<Checked, ApiError> {
    let topics = TopicList::parse_all(
        sent.topics.iter().map(|topic| topic.as_bytes()),
        app.config.max_topics,
    )
    .map_err(|err| ApiError::new(ErrorCode::InvalidTopic, err.to_string()))?;
    let topics = reachable(key, topics)?;
    let id = event_id(sent.id.as_bytes(), "id")?;
    let event_type = sent
        .event
        .as_ref()
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
    // The JSON parser checked it is text.
    let data = EventData::for_topics_text(&id, event_type.as_ref(), &topics, &sent.data);
    Ok(Checked {
        topics,
        id,
        event_type,
        data,
    })
}

/// The answer to an atomic batch refused before anything was published: `error`, and
/// each event's own verdict.
fn refused(
    error: ApiError,
    sent: &[Sent<'_>],
    checked: Vec<Result<Checked, ApiError>>,
) -> Response {
    let results: Vec<Outcome<'_>> = sent
        .iter()
        .zip(checked)
        .map(|(sent, checked)| match checked {
            Ok(_) => Outcome::Skipped {
                status: "skipped",
                id: &sent.id,
            },
            Err(err) => Outcome::Failed {
                status: "error",
                id: &sent.id,
                error: (&err).into(),
            },
        })
        .collect();
    error.into_response_with("results", serde_json::json!(results))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::publish::tests::copy;

    fn sent(id: &str) -> Sent<'_> {
        Sent {
            topics: Topics::default(),
            id: Text(Cow::Borrowed(id)),
            event: None,
            data: Text(Cow::Borrowed("")),
        }
    }

    /// What serde writes for the outcomes `published` of the events `sent`.
    fn serde_answer(sent: &[Sent<'_>], published: &[Published]) -> String {
        let results: Vec<Outcome<'_>> = sent
            .iter()
            .zip(published)
            .map(|(sent, result)| match result {
                Ok((id, copies)) => Outcome::Published(Reply::of(id, copies)),
                Err(err) => Outcome::Failed {
                    status: "error",
                    id: &sent.id,
                    error: err.into(),
                },
            })
            .collect();
        let count = |accepted: Option<bool>| {
            published
                .iter()
                .filter(|r| match r {
                    Ok((_, copies)) => Some(!copies.is_empty()) == accepted,
                    Err(_) => accepted.is_none(),
                })
                .count()
        };
        serde_json::to_string(&Answer {
            accepted: count(Some(true)),
            dropped: count(Some(false)),
            failed: count(None),
            results,
        })
        .expect("JSON")
    }

    proptest! {
        /// The hand-written answer is the bytes serde writes for the same outcomes: any
        /// mix of accepted, dropped and refused events, any id and any error message.
        #[test]
        fn a_batch_answer_is_written_as_serde_writes_it(
            outcomes in proptest::collection::vec(
                (
                    "[ -~]{1,40}",
                    proptest::option::of(any::<String>()),
                    proptest::collection::vec(("[a-zA-Z0-9_.:/@-]{1,24}", any::<u64>()), 0..3),
                ),
                0..6,
            ),
        ) {
            let ids: Vec<String> = outcomes.iter().map(|(id, _, _)| id.clone()).collect();
            let sent: Vec<Sent<'_>> = ids.iter().map(|id| sent(id)).collect();
            let published: Vec<Published> = outcomes
                .iter()
                .map(|(id, refusal, topics)| match refusal {
                    Some(message) => Err(ApiError::new(ErrorCode::InvalidTopic, message.clone())),
                    None => Ok((
                        EventId::parse(id.trim().as_bytes())
                            .unwrap_or_else(|_| EventId::parse(b"x").expect("an id")),
                        topics.iter().map(|(topic, seq)| copy(topic, *seq)).collect(),
                    )),
                })
                .collect();
            let written = String::from_utf8(answer(&sent, &published)).expect("UTF-8");
            prop_assert_eq!(written, serde_answer(&sent, &published));
        }
    }

    proptest! {
        /// An event's topics are read as the list they are, whatever their number.
        #[test]
        fn topics_are_read_as_a_list(topics in proptest::collection::vec("[a-z\\\\\"é]{0,6}", 0..5)) {
            let json = serde_json::to_string(&topics).expect("JSON");
            let read: Topics<'_> = serde_json::from_str(&json).expect("a list");
            let read: Vec<&str> = read.iter().map(|topic| &**topic).collect();
            prop_assert_eq!(read, topics.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    /// Anything but a list of strings in an event's `topics` is refused.
    #[test]
    fn topics_that_are_not_a_list_of_strings_are_refused() {
        for wrong in [
            "\"a\"",
            "{}",
            "[1]",
            "[\"a\", null]",
            "[\"a\"",
            "[null, \"a\"]",
        ] {
            assert!(
                serde_json::from_str::<Topics<'_>>(wrong).is_err(),
                "{wrong}"
            );
        }
    }

    /// A string with escapes is unescaped into a copy; one without is read in place.
    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let body = r#"{"events":[{"topics":["a"],"id":"e\"1","data":"plain"}]}"#;
        let batch: Batch<'_> = serde_json::from_str(body).expect("a batch");
        let event = &batch.events[0];
        assert!(matches!(event.data.0, Cow::Borrowed("plain")));
        assert!(matches!(&event.id.0, Cow::Owned(id) if id == "e\"1"));
        assert!(matches!(
            event.topics.iter().next(),
            Some(Text(Cow::Borrowed("a")))
        ));
        let wrong =
            serde_json::from_str::<Batch<'_>>(r#"{"events":[{"topics":[1],"id":"e","data":""}]}"#);
        let err = wrong.err().expect("a number is not a topic").to_string();
        assert!(err.contains("expected a string"), "{err}");
    }
}
