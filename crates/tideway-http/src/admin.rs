//! `GET /v1/admin/...`: topics, connections, tail and nodes, read from the store.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tideway_core::{ConnectionRecord, Page, Paged, Store, TopicRecord};
use tideway_protocol::{Tenant, TopicList, TopicName, query_value};

use crate::{
    ApiKey,
    app::App,
    error::{ApiError, ErrorCode},
    response::{Response, json},
};

/// Page size when the request names none.
const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size; a larger request gets this many items and says so in `pageSize`.
const MAX_PAGE_SIZE: usize = 500;
/// Tail length when the request names none, and the most one request may ask for.
const DEFAULT_TAIL: usize = 100;
const MAX_TAIL: usize = 1000;

/// Serves the admin API to `key`: a tenant's key sees only its tenant's topics and
/// connections, named as its clients know them.
pub(crate) async fn route<S: Store>(
    app: &App<S>,
    request: &Request<Incoming>,
    key: &ApiKey,
) -> Result<Response, ApiError> {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    let gateway = &app.gateway;
    let tenant = key.tenant.clone();
    match path {
        "/v1/admin/topics" => {
            let requested = page(query, tenant.clone())?;
            let mut topics = if key.is_bounded() {
                bounded(
                    requested,
                    |p| gateway.topics(p),
                    |t: &TopicRecord| key.allows(t.name.public_name()),
                )
                .await?
            } else {
                gateway.topics(requested).await?
            };
            if tenant.is_some() {
                for topic in &mut topics.items {
                    topic.name = public(&topic.name);
                }
            }
            Ok(json(StatusCode::OK, &topics))
        }
        "/v1/admin/connections" => {
            let requested = page(query, tenant.clone())?;
            // A connection is shown to a key bound to patterns only if it may read every
            // topic of it: the listing would otherwise tell what else it follows.
            let mut connections = if key.is_bounded() {
                bounded(
                    requested,
                    |p| gateway.connections(p),
                    |c: &ConnectionRecord| c.topics.iter().all(|t| key.allows(t.public_name())),
                )
                .await?
            } else {
                gateway.connections(requested).await?
            };
            if tenant.is_some() {
                for connection in &mut connections.items {
                    let names = connection.topics.iter().map(public).collect();
                    if let Some(topics) = TopicList::from_names(names) {
                        connection.topics = topics;
                    }
                }
            }
            Ok(json(StatusCode::OK, &connections))
        }
        "/v1/admin/nodes" => {
            if tenant.is_some() || key.is_bounded() {
                // The cluster's hosts and their load are the operator's, not a tenant's.
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "key {:?} is limited to a tenant or to topics; only a key of the whole gateway lists its nodes",
                        key.name
                    ),
                ));
            }
            let items = gateway.nodes().await?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "items": items })))
        }
        _ => {
            let Some(name) = path
                .strip_prefix("/v1/admin/topics/")
                .and_then(|rest| rest.strip_suffix("/tail"))
            else {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no route {path}"),
                ));
            };
            tail(app, name, query, key).await
        }
    }
}

/// Most items a listing for a key bound to topic patterns looks through (pages of
/// [`MAX_PAGE_SIZE`]); such a key's listing is filtered here, over its tenant's list.
const MAX_BOUNDED_SCAN: usize = 100_000;

/// The `requested` page of what `allowed` lets a key see: the store pages by tenant, so
/// the tenant's whole list is read (up to [`MAX_BOUNDED_SCAN`] items), filtered, then cut.
async fn bounded<T, F, Fut>(
    requested: Page,
    mut fetch: F,
    allowed: impl Fn(&T) -> bool,
) -> Result<Paged<T>, ApiError>
where
    T: Clone,
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = Result<Paged<T>, tideway_core::CoreError>>,
{
    let mut seen = Vec::new();
    for number in 1..=MAX_BOUNDED_SCAN / MAX_PAGE_SIZE {
        let got = fetch(Page {
            page: number,
            page_size: MAX_PAGE_SIZE,
            tenant: requested.tenant.clone(),
        })
        .await?;
        let last = got.items.len() < MAX_PAGE_SIZE || number * MAX_PAGE_SIZE >= got.total;
        seen.extend(got.items.into_iter().filter(|item| allowed(item)));
        if last {
            break;
        }
    }
    Ok(Paged {
        items: requested.slice(&seen),
        page: requested.page,
        page_size: requested.page_size,
        total: seen.len(),
    })
}

/// A topic as its tenant's clients name it.
fn public(topic: &TopicName) -> TopicName {
    TopicName::parse(topic.public_name()).unwrap_or_else(|_| topic.clone())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TailEvent<'a> {
    topic: &'a str,
    seq: u64,
    id: &'a str,
    event: Option<&'a str>,
    data: &'a str,
    published_at: u64,
}

impl<'a> TailEvent<'a> {
    fn of(event: &'a tideway_core::TopicEvent) -> Self {
        Self {
            topic: event.topic.public_name(),
            seq: event.seq,
            id: event.event.id.as_str(),
            event: event.event.event_type.as_ref().map(|t| t.as_str()),
            data: event.event.data.as_str(),
            published_at: event.event.published_at,
        }
    }
}

/// `?follow=1`: the tail as an SSE stream that keeps going.
mod follow {
    use std::{convert::Infallible, sync::Arc, time::Duration};

    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};
    use tideway_core::{Gateway, Store, TopicEvent};
    use tideway_protocol::{TopicName, sse::FrameBuilder};
    use tokio::time::{Instant, Interval, MissedTickBehavior};

    use super::{MAX_TAIL, TailEvent};
    use crate::{
        ApiKey,
        app::{App, Following},
        error::{ApiError, ErrorCode},
        response::{Response, event_stream},
    };

    /// How often the store's history is read for new events. Reading the shared state
    /// (not this node's subscribers) keeps a follower from making a topic live, and shows
    /// the same on every node.
    const POLL: Duration = Duration::from_millis(250);
    /// Events read per poll at first; more (up to [`MAX_TAIL`]) only when the follower
    /// is further behind.
    const FIRST_READ: usize = 32;
    /// Followers one key may have open at once.
    pub(super) const MAX_FOLLOWERS_PER_KEY: usize = 8;

    struct Follow<S> {
        _counted: Following,
        gateway: Gateway<S>,
        topic: TopicName,
        limit: usize,
        /// The position of the last event sent; 0 before the first read.
        last: u64,
        first: bool,
        live: Option<bool>,
        ticker: Interval,
        heartbeat: Duration,
        quiet_since: Instant,
        ended: bool,
    }

    pub(super) fn stream<S: Store>(
        app: &App<S>,
        key: &ApiKey,
        topic: TopicName,
        limit: usize,
    ) -> Result<Response, ApiError> {
        let Some(counted) = app.followers.start(&key.name, MAX_FOLLOWERS_PER_KEY) else {
            return Err(ApiError::new(
                ErrorCode::TooManyFollowers,
                format!(
                    "key {:?} follows {MAX_FOLLOWERS_PER_KEY} tails already; close one first",
                    key.name
                ),
            ));
        };
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let state = Follow {
            _counted: counted,
            gateway: app.gateway.clone(),
            topic,
            limit,
            last: 0,
            first: true,
            live: None,
            ticker,
            heartbeat: app.config.heartbeat,
            quiet_since: Instant::now(),
            ended: false,
        };
        let body = StreamBody::new(futures_util::stream::unfold(state, next)).boxed_unsync();
        Ok(event_stream(body))
    }

    async fn next<S: Store>(
        mut state: Follow<S>,
    ) -> Option<(Result<Frame<Bytes>, Infallible>, Follow<S>)> {
        loop {
            if state.ended {
                return None;
            }
            state.ticker.tick().await;
            if state.gateway.is_draining() {
                state.ended = true;
                return Some((
                    Ok(Frame::data(system(
                        "tideway.drain",
                        r#"{"reason":"drain"}"#,
                    ))),
                    state,
                ));
            }
            // A few events per poll; more only while the read does not reach back to the
            // last one sent (a follower one event behind reads one event's worth).
            let mut want = if state.first { state.limit } else { FIRST_READ };
            let tail = loop {
                match state.gateway.tail(&state.topic, want).await {
                    Ok(Some(events))
                        if !state.first
                            && events.len() == want
                            && want < MAX_TAIL
                            && events.first().is_some_and(|e| e.position > state.last) =>
                    {
                        want = (want * 4).min(MAX_TAIL);
                    }
                    Ok(tail) => break Some(tail),
                    // The store is unreachable for now: keep following, say nothing.
                    Err(_) => break None,
                }
            };
            let Some(tail) = tail else { continue };
            let mut out = Vec::new();
            let live = tail.is_some();
            if state.live != Some(live) {
                state.live = Some(live);
                let data = serde_json::json!({ "live": live }).to_string();
                out.extend_from_slice(&system("tideway.topic_state", &data));
            }
            let events: Vec<Arc<TopicEvent>> = tail.unwrap_or_default();
            // Positions went back: the store restarted and numbers from 1 again, so what
            // it holds now is all new to the follower.
            if events.last().is_some_and(|e| e.position < state.last) {
                state.last = 0;
            }
            // Even the longest read does not reach back to the last event sent: what came
            // between is no longer read, and the follower is told so.
            if !state.first
                && state.last > 0
                && events.len() == want
                && events.first().is_some_and(|e| e.position > state.last)
            {
                let data = serde_json::json!({
                    "reason": "follower_behind",
                    "message": format!("more than {want} events came within one poll; some were not shown"),
                })
                .to_string();
                out.extend_from_slice(&system("tideway.gap", &data));
            }
            let fresh: Vec<&Arc<TopicEvent>> = if state.first {
                let skip = events.len().saturating_sub(state.limit);
                events.iter().skip(skip).collect()
            } else {
                events.iter().filter(|e| e.position > state.last).collect()
            };
            state.first = false;
            for event in fresh {
                state.last = state.last.max(event.position);
                let json = serde_json::to_string(&TailEvent::of(event)).unwrap_or_default();
                let mut frame = FrameBuilder::default();
                let _ = frame.id(&event.position.to_string());
                frame.data(&json);
                out.extend_from_slice(&frame.finish());
            }
            if out.is_empty() && state.quiet_since.elapsed() >= state.heartbeat {
                out.extend_from_slice(b": heartbeat\n\n");
            }
            if !out.is_empty() {
                state.quiet_since = Instant::now();
                return Some((Ok(Frame::data(Bytes::from(out))), state));
            }
        }
    }

    fn system(event: &str, data: &str) -> Bytes {
        let mut frame = FrameBuilder::default();
        let _ = frame.event(event);
        frame.data(data);
        frame.finish()
    }
}

async fn tail<S: Store>(
    app: &App<S>,
    encoded: &str,
    query: &str,
    key: &ApiKey,
) -> Result<Response, ApiError> {
    let name = percent_decode(encoded);
    let topic = TopicName::parse(&name)
        .map_err(|err| ApiError::new(ErrorCode::InvalidTopic, err.to_string()))?;
    if let Some(list) = TopicList::from_names(vec![topic.clone()]) {
        key.check_topics(&list, "read")?;
    }
    let topic = match key.tenant.as_ref() {
        Some(tenant) => topic.in_tenant(tenant),
        None => topic,
    };
    let limit = number(query, "limit")?
        .unwrap_or(DEFAULT_TAIL)
        .clamp(1, MAX_TAIL);
    match query_value(query, "follow").as_deref() {
        None | Some("0") | Some("false") => {}
        Some("1") | Some("true") => return follow::stream(app, key, topic, limit),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!("follow {other:?}: use 1 or true"),
            ));
        }
    }
    let Some(events) = app.gateway.tail(&topic, limit).await? else {
        return Err(ApiError::new(
            ErrorCode::TopicNotFound,
            format!("topic {:?} has no subscribers", topic.public_name()),
        ));
    };
    let items: Vec<TailEvent<'_>> = events.iter().map(|e| TailEvent::of(e)).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "topic": topic.public_name(), "limit": limit, "items": items }),
    ))
}

/// `page` (1-based, default 1) and `pageSize` (default 100, at most 500), of `tenant`'s
/// items (or all).
fn page(query: &str, tenant: Option<Tenant>) -> Result<Page, ApiError> {
    let page = number(query, "page")?.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "page: pages count from 1",
        ));
    }
    let page_size = number(query, "pageSize")?.unwrap_or(DEFAULT_PAGE_SIZE);
    if page_size == 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "pageSize: must be at least 1",
        ));
    }
    Ok(Page {
        page,
        page_size: page_size.min(MAX_PAGE_SIZE),
        tenant,
    })
}

fn number(query: &str, key: &str) -> Result<Option<usize>, ApiError> {
    let Some(value) = query_value(query, key) else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("{key} {value:?}: expected a whole number"),
        )
    })
}

/// Decodes `%XX` escapes of a path segment; a malformed escape is kept as it is, and
/// then fails the topic rules with a message that shows it.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_queries_and_paths_never_panic(text in "\\PC{0,100}") {
            let _ = page(&text, None);
            let _ = number(&text, "limit");
            let decoded = percent_decode(&text);
            if !text.contains('%') {
                prop_assert_eq!(decoded, text);
            }
        }

        #[test]
        fn page_sizes_stay_within_bounds(page_size in 1usize..100_000, page_number in 1usize..1000) {
            let page = page(&format!("page={page_number}&pageSize={page_size}"), None).unwrap();
            prop_assert_eq!(page.page, page_number);
            prop_assert_eq!(page.page_size, page_size.min(MAX_PAGE_SIZE));
        }
    }

    #[test]
    fn pages_are_capped_and_checked() {
        assert_eq!(
            page("", None).unwrap(),
            Page {
                page: 1,
                page_size: 100,
                tenant: None
            }
        );
        assert_eq!(
            page("page=3&pageSize=10000", None).unwrap(),
            Page {
                page: 3,
                page_size: 500,
                tenant: None
            }
        );
        assert_eq!(
            page("page=0", None).unwrap_err().code,
            ErrorCode::InvalidParameter
        );
        assert_eq!(
            page("pageSize=0", None).unwrap_err().code,
            ErrorCode::InvalidParameter
        );
        assert_eq!(
            page("page=-1", None).unwrap_err().code,
            ErrorCode::InvalidParameter
        );
        assert_eq!(
            page("pageSize=ten", None).unwrap_err().message,
            "pageSize \"ten\": expected a whole number"
        );
    }

    #[test]
    fn path_segments_decode() {
        assert_eq!(percent_decode("a%2Fb%3Ac"), "a/b:c");
        assert_eq!(percent_decode("plain/with/slash"), "plain/with/slash");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
        assert_eq!(percent_decode("%41%4"), "A%4");
    }
}
