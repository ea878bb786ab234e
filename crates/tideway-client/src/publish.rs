//! Publishing: one event, or many in one request (`publish_batch`).

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, api_error};

/// What became of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Delivered on these topics, with the event's sequence number in each.
    Accepted(Vec<(String, u64)>),
    /// No topic had a subscriber; the gateway did not read the body.
    Dropped,
}

#[derive(Deserialize)]
struct Reply {
    status: String,
    #[serde(default)]
    topics: Vec<Delivered>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

/// One event of a batch (see [`Client::publish_batch`]).
#[derive(Debug, Clone, Serialize)]
pub struct BatchEvent<'a> {
    /// Its topics.
    pub topics: &'a [&'a str],
    /// Its id (the SSE `id:`), unique per event.
    pub id: &'a str,
    /// Its SSE event type, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    /// Its data.
    pub data: &'a str,
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Published or dropped, as a single publish.
    Published(Published),
    /// Refused on its own, with the error code and message a single publish would get.
    Refused {
        /// The error code (`invalid_topic`, `rate_limited`, …).
        code: String,
        /// What was wrong.
        message: String,
    },
    /// Not published because another event of an atomic batch was refused.
    Skipped,
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    events: &'a [BatchEvent<'a>],
    atomic: bool,
}

#[derive(Deserialize)]
struct BatchReply {
    results: Vec<Reply>,
}

#[derive(Deserialize)]
struct Delivered {
    topic: String,
    seq: u64,
}

impl Client {
    /// Publishes `data` with id `id` (and SSE event type `event`) to `topics`.
    ///
    /// Sent on a kept-alive connection; a retryable failure (see [`Client::retries`]) is
    /// sent again with the same id, which the gateway answers as the first and delivers
    /// once.
    pub async fn publish(
        &self,
        topics: &[&str],
        id: &str,
        event: Option<&str>,
        data: &str,
    ) -> Result<Published, ClientError> {
        let topics = topics.join(",");
        let mut headers = vec![("x-sse-topic", topics.as_str()), ("x-sse-id", id)];
        if let Some(event) = event {
            headers.push(("x-sse-event", event));
        }
        let body = Bytes::copy_from_slice(data.as_bytes());
        let reply: Reply = self
            .post("/v1/publish", &headers, body, "publish answer")
            .await?;
        match outcome(reply)? {
            BatchOutcome::Published(published) => Ok(published),
            _ => Err(ClientError::Protocol(
                "a publish answered as refused".into(),
            )),
        }
    }

    /// Publishes `events` in one request, in order (events on one topic arrive in this
    /// order); returns each one's outcome, in the same order. With `atomic`, either every
    /// event is published or, if one is refused, none is and the call fails with that
    /// event's error. A store error stops the batch: that event and every later one come
    /// back [`BatchOutcome::Refused`] with `store_unavailable`; send them again, in order,
    /// from the first (those that did land are answered as retries).
    pub async fn publish_batch(
        &self,
        events: &[BatchEvent<'_>],
        atomic: bool,
    ) -> Result<Vec<BatchOutcome>, ClientError> {
        let body = serde_json::to_vec(&BatchRequest { events, atomic })
            .map_err(|e| ClientError::Protocol(format!("a batch that is not JSON: {e}")))?;
        let headers = [("content-type", "application/json")];
        let reply: BatchReply = self
            .post("/v1/publish/batch", &headers, body.into(), "batch answer")
            .await?;
        reply.results.into_iter().map(outcome).collect()
    }

    /// Signs a subscriber token for `subject`, granting `topics` (names or patterns within
    /// the key's own) for `ttl`: what a backend does for its users, with an API key that
    /// has the `sign` scope. Returns the token.
    pub async fn create_token(
        &self,
        subject: &str,
        topics: &[&str],
        ttl: std::time::Duration,
    ) -> Result<String, ClientError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct TokenRequest<'a> {
            subject: &'a str,
            topics: &'a [&'a str],
            ttl_seconds: u64,
        }
        #[derive(Deserialize)]
        struct TokenReply {
            token: String,
        }
        let body = serde_json::to_vec(&TokenRequest {
            subject,
            topics,
            ttl_seconds: ttl.as_secs().max(1),
        })
        .map_err(|e| ClientError::Protocol(format!("a token request that is not JSON: {e}")))?;
        let headers = [("content-type", "application/json")];
        let reply: TokenReply = self
            .post("/v1/tokens", &headers, body.into(), "token answer")
            .await?;
        Ok(reply.token)
    }

    /// POSTs `body` to `uri` with `headers`, the host and the API key (again on a
    /// retryable failure), and reads a 2xx JSON answer (`what` names it in errors) or
    /// the gateway's error.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        uri: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        what: &str,
    ) -> Result<T, ClientError> {
        let build = || {
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(uri)
                .header("host", &self.authority);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(key) = &self.api_key {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            request
                .body(Full::new(body.clone()))
                .map_err(|e| ClientError::Protocol(format!("a header is not valid: {e}")))
        };
        let (status, body) = self.send(build).await?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &body, None));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("{what}: {e}")))
    }
}

/// One publish's outcome as the gateway said it.
fn outcome(reply: Reply) -> Result<BatchOutcome, ClientError> {
    match reply.status.as_str() {
        "accepted" => Ok(BatchOutcome::Published(Published::Accepted(
            reply.topics.into_iter().map(|t| (t.topic, t.seq)).collect(),
        ))),
        "dropped" => Ok(BatchOutcome::Published(Published::Dropped)),
        "skipped" => Ok(BatchOutcome::Skipped),
        "error" => {
            let error = reply.error.ok_or_else(|| {
                ClientError::Protocol("an event refused without its error".into())
            })?;
            Ok(BatchOutcome::Refused {
                code: error.code,
                message: error.message,
            })
        }
        other => Err(ClientError::Protocol(format!("publish status {other:?}"))),
    }
}
