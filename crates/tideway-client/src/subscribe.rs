//! Subscribing: one SSE stream, kept open across drops, resumed by `Last-Event-ID`.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tideway_protocol::sse::{ParseError, parse_block};

use crate::{
    Client, ClientError, api_error,
    backoff::{Reconnect, Refusal, random_fraction},
    whole_body,
};

/// Gives a subscriber token: called before the first connect, and again after the
/// gateway revoked (`tideway.revoked`) or refused (401) the last one.
pub type TokenProvider =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening its first stream.
    Connecting,
    /// A stream is open.
    Open,
    /// The stream dropped; opening another.
    Reconnecting,
    /// Ended: refused, or closed by the caller.
    Closed,
}

impl std::fmt::Display for ConnectionState {
    /// `connecting`, `open`, `reconnecting` or `closed`, as every Tideway client names them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Open => "open",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Closed => "closed",
        })
    }
}

/// How a subscription behaves; `Default` suits most uses.
#[derive(Clone)]
pub struct SubscriptionOptions {
    /// Reconnect when nothing (not even a heartbeat) arrived for this long; the gateway's
    /// heartbeat is 15 s by default.
    pub heartbeat_timeout: Duration,
    /// The backoff's first ceiling until the gateway says otherwise with `retry:`
    /// (1 s); each wait is random below a ceiling that doubles per failed try.
    pub min_backoff: Duration,
    /// The backoff's cap (30 s).
    pub max_backoff: Duration,
    /// Resume after this event id from the first connection on.
    pub last_event_id: Option<String>,
    /// A fixed subscriber token, for private topics.
    pub token: Option<String>,
    /// Or one fetched when needed.
    pub token_provider: Option<TokenProvider>,
    /// The tenant whose public topics to receive.
    pub tenant: Option<String>,
    /// Told every change of state.
    pub on_state: Option<Arc<dyn Fn(ConnectionState) + Send + Sync>>,
}

impl std::fmt::Debug for SubscriptionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionOptions")
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("last_event_id", &self.last_event_id)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("token_provider", &self.token_provider.is_some())
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(45),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            last_event_id: None,
            token: None,
            token_provider: None,
            tenant: None,
            on_state: None,
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
    token: Option<String>,
    state: ConnectionState,
    reconnect: Reconnect,
    body: Option<Incoming>,
    buffer: BytesMut,
}

impl Client {
    /// Subscribes to `topics` with the default options.
    pub async fn subscribe(&self, topics: &[&str]) -> Result<Subscription, ClientError> {
        self.subscribe_with(topics, SubscriptionOptions::default())
            .await
    }

    /// Subscribes to `topics`. Returns once the stream is open, retrying while the gateway
    /// is unreachable or busy; fails if the gateway refuses (a bad topic, a missing
    /// token). Later drops are reconnected inside [`Subscription::next`].
    pub async fn subscribe_with(
        &self,
        topics: &[&str],
        options: SubscriptionOptions,
    ) -> Result<Subscription, ClientError> {
        let mut subscription = Subscription {
            client: self.clone(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            last_event_id: options.last_event_id.clone(),
            token: options.token.clone(),
            state: ConnectionState::Connecting,
            reconnect: Reconnect::new(
                options.min_backoff,
                options.max_backoff,
                options.token_provider.is_some(),
            ),
            options,
            body: None,
            buffer: BytesMut::new(),
        };
        subscription.connect(false).await?;
        Ok(subscription)
    }
}

impl Subscription {
    /// The id of the last event received, the one a reconnect resumes after.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Where the subscription stands.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Ends the subscription.
    pub fn close(&mut self) {
        self.body = None;
        self.set_state(ConnectionState::Closed);
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state;
            if let Some(on_state) = &self.options.on_state {
                on_state(state);
            }
        }
    }

    /// The next message. Drops, silences past the heartbeat timeout and the gateway's
    /// own reconnect requests are handled inside: it reconnects with backoff and resumes.
    /// Errors only when the gateway refuses the subscription (a 4xx answer) or it was
    /// closed.
    pub async fn next(&mut self) -> Result<Option<Message>, ClientError> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(Some(message));
            }
            if self.state == ConnectionState::Closed {
                return Err(ClientError::Closed);
            }
            let Some(body) = self.body.as_mut() else {
                self.set_state(ConnectionState::Reconnecting);
                self.connect(true).await?;
                continue;
            };
            match tokio::time::timeout(self.options.heartbeat_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
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
            if let Some(millis) = block.retry {
                self.reconnect.retry_hint(millis);
            }
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
                    if name == "tideway.revoked" {
                        self.reconnect.revoked();
                    }
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

    /// Opens a stream, trying until one opens (waiting first if `wait`) or the gateway
    /// refuses.
    async fn connect(&mut self, mut wait: bool) -> Result<(), ClientError> {
        let mut asked = None;
        loop {
            if wait {
                let delay = self.reconnect.wait(asked.take(), random_fraction());
                tokio::time::sleep(delay).await;
            }
            wait = true;
            if self.reconnect.need_token
                && let Some(provider) = &self.options.token_provider
            {
                match provider().await {
                    Ok(token) => {
                        self.token = Some(token);
                        self.reconnect.need_token = false;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "the token provider failed; backing off");
                        continue;
                    }
                }
            }
            match self.open().await {
                Ok(()) => {
                    self.reconnect.opened();
                    self.set_state(ConnectionState::Open);
                    return Ok(());
                }
                Err(ClientError::Api {
                    status,
                    code,
                    message,
                    retry_after,
                }) => match self.reconnect.refused(status, retry_after) {
                    Refusal::NewToken => wait = false,
                    Refusal::Retry(wait_asked) => asked = wait_asked,
                    Refusal::Final => {
                        self.set_state(ConnectionState::Closed);
                        return Err(ClientError::Api {
                            status,
                            code,
                            message,
                            retry_after,
                        });
                    }
                },
                Err(err) => tracing::debug!(error = %err, "connect failed; backing off"),
            }
        }
    }

    async fn open(&mut self) -> Result<(), ClientError> {
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
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Protocol(format!("a header is not valid: {e}")))?;
        let response = self.client.open(request).await?;
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after = crate::answer_retry_after(&response);
            return Err(api_error(status, &whole_body(response).await?, retry_after));
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
