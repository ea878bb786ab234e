//! Publishing one event.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde::Deserialize;

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
}

#[derive(Deserialize)]
struct Delivered {
    topic: String,
    seq: u64,
}

impl Client {
    /// Publishes `data` with id `id` (and SSE event type `event`) to `topics`.
    pub async fn publish(
        &self,
        topics: &[&str],
        id: &str,
        event: Option<&str>,
        data: &str,
    ) -> Result<Published, ClientError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/v1/publish")
            .header("host", &self.authority)
            .header("x-sse-topic", topics.join(","))
            .header("x-sse-id", id);
        if let Some(key) = &self.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if let Some(event) = event {
            request = request.header("x-sse-event", event);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(data.as_bytes())))
            .map_err(|e| ClientError::Protocol(format!("a header is not valid: {e}")))?;
        let (status, body) = self.send(request).await?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &body));
        }
        let reply: Reply = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("publish answer: {e}")))?;
        match reply.status.as_str() {
            "accepted" => Ok(Published::Accepted(
                reply.topics.into_iter().map(|t| (t.topic, t.seq)).collect(),
            )),
            "dropped" => Ok(Published::Dropped),
            other => Err(ClientError::Protocol(format!("publish status {other:?}"))),
        }
    }
}
