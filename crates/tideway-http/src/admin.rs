//! `GET /v1/admin/...`: topics, connections, tail and nodes, read from the store.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tideway_core::{Page, Store};
use tideway_protocol::{TopicName, query_value};

use crate::{
    error::ApiError,
    response::{Response, json},
    routes::App,
};

/// Page size when the request names none.
const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size; a larger request gets this many items and says so in `pageSize`.
const MAX_PAGE_SIZE: usize = 500;
/// Tail length when the request names none, and the most one request may ask for.
const DEFAULT_TAIL: usize = 100;
const MAX_TAIL: usize = 1000;

pub(crate) async fn route<S: Store>(
    app: &App<S>,
    request: &Request<Incoming>,
) -> Result<Response, ApiError> {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    let gateway = &app.gateway;
    match path {
        "/v1/admin/topics" => Ok(json(StatusCode::OK, &gateway.topics(page(query)?).await?)),
        "/v1/admin/connections" => Ok(json(
            StatusCode::OK,
            &gateway.connections(page(query)?).await?,
        )),
        "/v1/admin/nodes" => {
            let items = gateway.nodes().await?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "items": items })))
        }
        _ => {
            let Some(name) = path
                .strip_prefix("/v1/admin/topics/")
                .and_then(|rest| rest.strip_suffix("/tail"))
            else {
                return Err(ApiError::not_found("not_found", format!("no route {path}")));
            };
            tail(app, name, query).await
        }
    }
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

async fn tail<S: Store>(app: &App<S>, encoded: &str, query: &str) -> Result<Response, ApiError> {
    let name = percent_decode(encoded);
    let topic = TopicName::parse(&name)
        .map_err(|err| ApiError::bad_request("invalid_topic", err.to_string()))?;
    let limit = number(query, "limit")?
        .unwrap_or(DEFAULT_TAIL)
        .clamp(1, MAX_TAIL);
    let Some(events) = app.gateway.tail(&topic, limit).await? else {
        return Err(ApiError::not_found(
            "topic_not_found",
            format!("topic {:?} has no subscribers", topic.as_str()),
        ));
    };
    let items: Vec<TailEvent<'_>> = events
        .iter()
        .map(|e| TailEvent {
            topic: e.topic.as_str(),
            seq: e.seq,
            id: e.event.id.as_str(),
            event: e.event.event_type.as_ref().map(|t| t.as_str()),
            data: e.event.data.as_str(),
            published_at: e.event.published_at,
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "topic": topic, "limit": limit, "items": items }),
    ))
}

/// `page` (1-based, default 1) and `pageSize` (default 100, at most 500).
fn page(query: &str) -> Result<Page, ApiError> {
    let page = number(query, "page")?.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "page: pages count from 1",
        ));
    }
    let page_size = number(query, "pageSize")?.unwrap_or(DEFAULT_PAGE_SIZE);
    if page_size == 0 {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "pageSize: must be at least 1",
        ));
    }
    Ok(Page {
        page,
        page_size: page_size.min(MAX_PAGE_SIZE),
    })
}

fn number(query: &str, key: &str) -> Result<Option<usize>, ApiError> {
    let Some(value) = query_value(query, key) else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid_parameter",
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
            let _ = page(&text);
            let _ = number(&text, "limit");
            let decoded = percent_decode(&text);
            if !text.contains('%') {
                prop_assert_eq!(decoded, text);
            }
        }

        #[test]
        fn page_sizes_stay_within_bounds(page_size in 1usize..100_000, page_number in 1usize..1000) {
            let page = page(&format!("page={page_number}&pageSize={page_size}")).unwrap();
            prop_assert_eq!(page.page, page_number);
            prop_assert_eq!(page.page_size, page_size.min(MAX_PAGE_SIZE));
        }
    }

    #[test]
    fn pages_are_capped_and_checked() {
        assert_eq!(
            page("").unwrap(),
            Page {
                page: 1,
                page_size: 100
            }
        );
        assert_eq!(
            page("page=3&pageSize=10000").unwrap(),
            Page {
                page: 3,
                page_size: 500
            }
        );
        assert_eq!(page("page=0").unwrap_err().code, "invalid_parameter");
        assert_eq!(page("pageSize=0").unwrap_err().code, "invalid_parameter");
        assert_eq!(page("page=-1").unwrap_err().code, "invalid_parameter");
        assert_eq!(
            page("pageSize=ten").unwrap_err().message,
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
