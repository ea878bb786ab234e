//! What every handler shares: the `App` (gateway, settings, counters), the connection a
//! request came on (`Peer`), and the steps several routes take (authorizing a key, the
//! head-size check, a request's topics, a subscribe request).

use std::{net::SocketAddr, sync::Arc};

use http::Request;
use tideway_core::{Gateway, Store, Subscribe, Transport};
use tideway_protocol::{EventId, TopicList, query_value};
use tokio::sync::Notify;

use crate::{
    ApiKey, HttpConfig, Scope,
    error::{ApiError, ErrorCode},
    head::{Headers, head_size},
    tokens,
};

/// What every handler needs. Shared by all connections of a server.
pub(crate) struct App<S> {
    pub(crate) gateway: Gateway<S>,
    pub(crate) config: HttpConfig,
    /// Refused credentials by error code, for `/metrics`.
    pub(crate) auth_failures: AuthFailures,
    /// Publish rate buckets of the keys that have a rate.
    pub(crate) rate_limits: crate::auth::RateLimits,
    /// Open admin tail followers, by key name (see `admin::follow`).
    pub(crate) followers: Followers,
    /// Connections accepted, by protocol, for `/metrics`.
    pub(crate) protocols: crate::server::Protocols,
    /// Requests served without hyper, by route, for `/metrics`.
    pub(crate) direct: DirectServed,
}

/// Requests the direct path (`direct`) served, by route.
#[derive(Default)]
pub(crate) struct DirectServed {
    pub(crate) stream: std::sync::atomic::AtomicU64,
    pub(crate) publish: std::sync::atomic::AtomicU64,
}

/// How many admin tail followers each key has open. Cloning bumps a reference count.
#[derive(Clone, Default)]
pub(crate) struct Followers {
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// One follower counted for its key until dropped.
pub(crate) struct Following {
    followers: Followers,
    key: String,
}

impl Followers {
    fn open(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        // One map operation per critical section: a poisoned lock holds whole counts.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one more follower of `key`, unless it has `most` already.
    pub(crate) fn start(&self, key: &str, most: usize) -> Option<Following> {
        let mut open = self.open();
        let count = open.entry(key.to_owned()).or_default();
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(Following {
            followers: self.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut open = self.followers.open();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Counts of refused credentials, by the error code the client got.
#[derive(Default)]
pub(crate) struct AuthFailures {
    counts: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl AuthFailures {
    pub(crate) fn count(&self, code: &'static str) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(code).or_default() += 1;
    }

    /// Each error code with its count, by code.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.iter().map(|(code, n)| (*code, *n)).collect()
    }
}

/// The TCP connection a request came on.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    /// Notified to close the connection at once, whatever it is doing (a subscriber that
    /// was cut off and stopped reading).
    pub(crate) kill: Arc<Notify>,
    /// Held by whatever serves this connection, upgraded WebSockets included, so a drain
    /// waits for them all.
    pub(crate) alive: tokio::sync::mpsc::Sender<()>,
}

impl<S: Store> App<S> {
    /// The request's API key if it may use `scope`; refusals are counted for `/metrics`.
    pub(crate) fn authorize(
        &self,
        headers: &impl Headers,
        scope: Scope,
    ) -> Result<Arc<ApiKey>, ApiError> {
        self.config
            .api_keys
            .current()
            .check(headers, scope)
            .inspect_err(|err| self.auth_failures.count(err.code.as_str()))
    }

    /// Refuses a request whose line and headers exceed `max_header_bytes`. hyper refuses
    /// far larger heads itself (431 without a body); this gives the usual JSON error.
    pub(crate) fn check_head_size<B>(&self, request: &Request<B>) -> Result<(), ApiError> {
        self.check_head(request.headers(), written_len(request.uri()))
    }

    /// [`App::check_head_size`] of a head with `headers` and a request target
    /// `target_len` bytes long.
    pub(crate) fn check_head(
        &self,
        headers: &impl Headers,
        target_len: usize,
    ) -> Result<(), ApiError> {
        let max = self.config.max_header_bytes;
        let size = head_size(headers, target_len);
        if size > max {
            return Err(ApiError::new(
                ErrorCode::HeadersTooLarge,
                format!("the request line and headers are {size} bytes; at most {max} are allowed"),
            ));
        }
        Ok(())
    }

    /// The topic list of a request: every `x-sse-topic` header and, when `query_too`,
    /// every `topic` query value, parsed as one list.
    pub(crate) fn topics<B>(
        &self,
        request: &Request<B>,
        query_too: bool,
    ) -> Result<TopicList, ApiError> {
        let query = query_too.then(|| request.uri().query().unwrap_or(""));
        self.topics_in(request.headers(), query)
    }

    /// The topic list of every `x-sse-topic` of `headers` and every `topic` value of
    /// `query`, parsed as one list.
    pub(crate) fn topics_in(
        &self,
        headers: &impl Headers,
        query: Option<&str>,
    ) -> Result<TopicList, ApiError> {
        let from_query = query.map_or_else(Vec::new, |query| {
            tideway_protocol::query_values(query, "topic")
        });
        let values = headers
            .values("x-sse-topic")
            .chain(from_query.iter().map(|v| v.as_bytes()));
        TopicList::parse_all(values, self.config.max_topics)
            .map_err(|err| ApiError::new(ErrorCode::InvalidTopic, err.to_string()))
    }

    /// What SSE and WebSocket subscribers both send: topics, an optional label
    /// (`x-sse-id`) and an optional resume cursor (`Last-Event-ID` or `?lastEventId=`).
    pub(crate) async fn subscribe_request<B>(
        &self,
        request: &Request<B>,
        peer: &Peer,
        transport: Transport,
    ) -> Result<Subscribe, ApiError> {
        let topics = self.topics(request, true)?;
        let query = request.uri().query().unwrap_or("");
        let access = tokens::access(self, request.headers(), query, &topics)
            .await
            .inspect_err(|err| self.auth_failures.count(err.code.as_str()))?;
        // A tenant's subscribers reach its namespace, and only it.
        let topics = match &access.tenant {
            Some(tenant) => topics.in_tenant(tenant),
            None => topics,
        };
        let headers = request.headers();
        let label = match headers.get("x-sse-id") {
            None => None,
            Some(value) => Some(
                EventId::parse(value.as_bytes())
                    .map_err(|err| ApiError::new(ErrorCode::InvalidId, format!("x-sse-id: {err}")))?
                    .as_str()
                    .to_owned(),
            ),
        };
        let from_query = query_value(query, "lastEventId");
        let last_event_id = match (headers.get("last-event-id"), from_query.as_deref()) {
            (Some(value), _) => Some(value.as_bytes()),
            (None, Some(value)) => Some(value.as_bytes()),
            (None, None) => None,
        };
        let last_event_id = match last_event_id {
            None => None,
            Some(bytes) => Some(EventId::parse(bytes).map_err(|err| {
                ApiError::new(
                    ErrorCode::InvalidLastEventId,
                    format!("Last-Event-ID: {err}"),
                )
            })?),
        };
        Ok(Subscribe {
            topics,
            label,
            transport,
            remote: Some(peer.addr.ip().to_string()),
            last_event_id,
            grant: access.grant,
        })
    }
}

/// The length of `uri` as it is written, counted without building the string (the
/// head-size check runs on every request).
fn written_len(uri: &http::Uri) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    // Counting cannot fail.
    let _ = std::fmt::write(&mut count, format_args!("{uri}"));
    count.0
}

#[cfg(test)]
mod tests {
    use super::written_len;

    #[test]
    fn a_uri_is_counted_as_long_as_it_is_written() {
        for uri in [
            "/",
            "/v1/publish",
            "/v1/stream?topic=a&topic=b%20c",
            "http://example.com:8080/v1/publish?x=1",
            "https://[::1]/v1/stream",
            "*",
        ] {
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(written_len(&uri), uri.to_string().len(), "{uri}");
        }
    }
}
