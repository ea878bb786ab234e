//! Subscribing: one SSE stream, kept open across drops, resumed by `Last-Event-ID`.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tideway_protocol::sse::{ParseError, parse_block};

use crate::{Client, ClientError, api_error, backoff, whole_body};

/// How a subscription behaves; `Default` suits most uses.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Reconnect when nothing (not even a heartbeat) arrived for this long; the gateway's
    /// heartbeat is 15 s by default.
    pub heartbeat_timeout: Duration,
    /// The first wait before reconnecting; it doubles on every failure.
    pub initial_backoff: Duration,
    /// The longest wait before reconnecting.
    pub max_backoff: Duration,
    /// Resume after this event id from the first connection on.
    pub last_event_id: Option<String>,
    /// A subscriber token, for private topics.
    pub token: Option<String>,
    /// The tenant whose public topics to receive.
    pub tenant: Option<String>,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(45),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            last_event_id: None,
            token: None,
            tenant: None,
        }
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An event a publisher sent.
    Event {
        /// The topic it came on.
        topic: String,
        /// The publisher's id.
        id: String,
        /// The SSE event type, if the publisher gave one.
        event: Option<String>,
        /// The body (line ends as LF).
        data: String,
    },
    /// The gateway says events of some topics may be missing here (`tideway.gap`): it
    /// could not prove a resume complete, or its store lost what it held. Refetch what
    /// you derive from those topics; what history holds and live events follow.
    Gap {
        /// Why: `unknown_last_event_id`, `history_evicted`, `topic_expired`,
        /// `store_restarted` or `cross_topic_cursor` (see docs/delivery.md).
        reason: String,
        /// The topics that may be missing events.
        topics: Vec<String>,
        /// The id the subscription resumed after, when the gap was found on resume.
        last_event_id: Option<String>,
    },
    /// Another message of the gateway's own (`tideway.drain`, `tideway.slow_consumer`,
    /// `tideway.revoked`); the subscription reconnects by itself after it.
    System {
        /// The event name.
        event: String,
        /// Its JSON data.
        data: String,
    },
}

/// An open subscription. Reconnects by itself; see [`Subscription::next`].
pub struct Subscription {
    client: Client,
    topics: Vec<String>,
    options: SubscriptionOptions,
    last_event_id: Option<String>,
    body: Option<Incoming>,
    buffer: BytesMut,
    delay: Duration,
}

impl Client {
    /// Subscribes to `topics` with the default options.
    pub async fn subscribe(&self, topics: &[&str]) -> Result<Subscription, ClientError> {
        self.subscribe_with(topics, SubscriptionOptions::default())
            .await
    }

    /// Subscribes to `topics`. Fails now if the gateway refuses (a bad topic, a missing
    /// token); later drops are reconnected inside [`Subscription::next`].
    pub async fn subscribe_with(
        &self,
        topics: &[&str],
        options: SubscriptionOptions,
    ) -> Result<Subscription, ClientError> {
        let mut subscription = Subscription {
            client: self.clone(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            last_event_id: options.last_event_id.clone(),
            delay: options.initial_backoff,
            options,
            body: None,
            buffer: BytesMut::new(),
        };
        subscription.connect().await?;
        Ok(subscription)
    }
}

impl Subscription {
    /// The id of the last event received, the one a reconnect resumes after.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The next message. Drops, silences past the heartbeat timeout and the gateway's
    /// own reconnect requests are handled inside: it reconnects with backoff and resumes.
    /// Errors only when the gateway refuses the subscription (a 4xx answer).
    pub async fn next(&mut self) -> Result<Option<Message>, ClientError> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(Some(message));
            }
            let Some(body) = self.body.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            match tokio::time::timeout(self.options.heartbeat_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                        self.delay = self.options.initial_backoff;
                    }
                }
                Ok(Some(Err(err))) => {
                    tracing::debug!(error = %err, "stream broke; reconnecting");
                    self.body = None;
                }
                Ok(None) => {
                    tracing::debug!("stream ended; reconnecting");
                    self.body = None;
                }
                Err(_) => {
                    tracing::debug!("no heartbeat in time; reconnecting");
                    self.body = None;
                }
            }
        }
    }

    /// The next complete message in the buffer, if any.
    fn parse(&mut self) -> Result<Option<Message>, ClientError> {
        loop {
            let (block, used) = match parse_block(&self.buffer) {
                Ok(parsed) => parsed,
                Err(ParseError::Incomplete) => return Ok(None),
                Err(ParseError::Invalid(why)) => {
                    return Err(ClientError::Protocol(format!(
                        "the stream is not SSE: {why}"
                    )));
                }
            };
            self.buffer.advance(used);
            let Some(data) = block.data else {
                continue;
            };
            let event = block.event;
            match event.as_deref() {
                Some("tideway.gap") => {
                    let value: serde_json::Value =
                        serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
                    let reason = value["reason"].as_str().unwrap_or_default().to_owned();
                    let topics = value["topics"]
                        .as_array()
                        .map(|topics| {
                            topics
                                .iter()
                                .filter_map(|t| t.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    let last_event_id = value["lastEventId"].as_str().map(str::to_owned);
                    return Ok(Some(Message::Gap {
                        reason,
                        topics,
                        last_event_id,
                    }));
                }
                Some(name) if name.starts_with("tideway.") => {
                    return Ok(Some(Message::System {
                        event: name.to_owned(),
                        data,
                    }));
                }
                _ => {}
            }
            let id = block.id.unwrap_or_default();
            self.last_event_id = Some(id.clone());
            let topic = block
                .fields
                .into_iter()
                .find(|(name, _)| name == "topic")
                .map(|(_, value)| value)
                .unwrap_or_default();
            return Ok(Some(Message::Event {
                topic,
                id,
                event,
                data,
            }));
        }
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        loop {
            tokio::time::sleep(self.delay).await;
            match self.connect().await {
                Ok(()) => return Ok(()),
                Err(err @ ClientError::Api { status, .. })
                    if (400..500).contains(&status) && status != 429 =>
                {
                    return Err(err);
                }
                Err(err) => {
                    tracing::debug!(error = %err, "reconnect failed; backing off");
                    self.delay = backoff(self.delay, self.options.max_backoff);
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let mut query: Vec<String> = self
            .topics
            .iter()
            .map(|t| format!("topic={}", encode(t)))
            .collect();
        if let Some(tenant) = &self.options.tenant {
            query.push(format!("tenant={}", encode(tenant)));
        }
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(format!("/v1/stream?{}", query.join("&")))
            .header("host", &self.client.authority)
            .header("accept", "text/event-stream");
        if let Some(id) = &self.last_event_id {
            request = request.header("last-event-id", id);
        }
        if let Some(token) = &self.options.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Protocol(format!("a header is not valid: {e}")))?;
        let response = self.client.open(request).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(api_error(status, &whole_body(response).await?));
        }
        self.buffer.clear();
        self.body = Some(response.into_body());
        Ok(())
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
