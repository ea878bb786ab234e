//! The store on real Durable Objects (`--adapter do --do-url`): every message of the store
//! trait is a request to the Worker in `worker/` (TypeScript, Hono), whose Durable Object
//! classes are the store's objects — a topic object per topic, the directory, the
//! sequencer, and a channel object per node that holds this node's WebSocket.
//!
//! Delivery: the sequencer numbers the messages it routes to each node; this node reads
//! them from its channel and checks each one's place with [`Continuity`], as the Redis
//! store does. A message lost while the socket was down or the Worker restarted shows as
//! a skipped number (a heartbeat sends a numbered marker, so within one beat even when
//! nothing is published) and is read back from the topics' histories; what history
//! cannot fill is told to the subscribers. A Worker whose storage was lost takes a new
//! epoch: every stream is told.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use bytes::Bytes;
use fastwebsockets::OpCode;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tideway_core::{
    ConnectionId, ConnectionRecord, Continuity, Drift, Event, HistoryRead, Inbox, Interruption,
    NodeRecord, Page, Paged, Store, StoreError, TopicEvent, TopicHistory, TopicRecord, Verdict,
    connection_digest, spawn_heartbeat,
};
use tideway_protocol::{EventId, TopicList, TopicName};

use crate::wire::{EventRef, WireTopicEvent};

/// How long one request to the Worker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections to the Worker kept for the next requests.
const IDLE_CONNECTIONS: usize = 32;
/// The most bytes of changes one `/v1/store/changes` message carries (the Worker takes
/// 8 MiB); one change larger than this goes alone.
const CHANGES_BYTES: usize = 1024 * 1024;
/// The longest wait between two attempts to open the channel again.
const RECONNECT_CAP: Duration = Duration::from_secs(5);

/// Settings of the store on the Worker. Defaults are the ones `tideway --help` prints.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The Worker's address, `http://host:port`.
    pub url: String,
    /// The secret the Worker was given as `TIDEWAY_DO_SECRET`.
    pub secret: String,
    /// For an `https://` Worker: the CA certificates (PEM) its certificate must chain to,
    /// instead of the system's.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Events kept per topic for resume and tail.
    pub history: usize,
    /// How long a topic whose last connection left still counts as live.
    pub topic_grace: Duration,
    /// How long a node counts as alive after its last heartbeat; heartbeats come five
    /// times as often.
    pub node_ttl: Duration,
}

/// The store on the Worker. Cloning bumps a reference count.
#[derive(Clone)]
pub struct WorkerStore {
    shared: Arc<Shared>,
}

struct Shared {
    config: WorkerConfig,
    http: Http,
    inbox: OnceLock<Inbox>,
    node: OnceLock<NodeRecord>,
    /// This node's connections, to register again when the Worker forgot the node.
    mirror: Mutex<HashMap<ConnectionId, Arc<ConnectionRecord>>>,
    continuity: Mutex<Continuity>,
    /// The epoch the node's registration was last confirmed in.
    registered_in: Mutex<Option<String>>,
    /// The last heartbeat reached the Worker.
    healthy: AtomicBool,
    /// The channel is open.
    listening: AtomicBool,
    /// Told each time the channel opens.
    opened: tokio::sync::Notify,
    /// Connection and membership changes waiting for the message in flight.
    changes: Mutex<Changes>,
    /// Whether the Worker's count of this node's connections keeps differing from the
    /// mirror's.
    drift: Drift,
}

/// A change to this node's connections or memberships, as `/v1/store/changes` takes it.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Change<'a> {
    Add {
        connection: &'a ConnectionRecord,
    },
    Remove {
        id: String,
    },
    Join {
        topic: String,
        node: &'a str,
        connection: String,
    },
    Leave {
        topic: String,
        node: &'a str,
        connection: String,
    },
}

/// The changes that register `connections` of `node` and their memberships.
fn registering<'a>(node: &'a str, connections: &'a [Arc<ConnectionRecord>]) -> Vec<Change<'a>> {
    let mut changes = Vec::new();
    for connection in connections {
        changes.push(Change::Add { connection });
        changes.extend(connection.topics.iter().map(|topic| Change::Join {
            topic: topic.to_string(),
            node,
            connection: connection.id.to_string(),
        }));
    }
    changes
}

/// Where a change's outcome goes: the Worker's error as text, told to each change the
/// failed message carried.
type Told = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Changes sent together: while one `/v1/store/changes` message is in flight, the ones
/// made meanwhile wait here and go in the next, in the order they were made. The Worker
/// takes one message at a time per object (on workerd, one thread for all), so a crowd
/// of subscribers arriving at once as one message each would queue there ahead of every
/// node's heartbeat; as a few messages they cost it almost nothing.
#[derive(Default)]
struct Changes {
    /// Each change as JSON, with whom to tell its outcome.
    waiting: Vec<(Vec<u8>, Told)>,
    /// A task is sending (and will send what waits).
    sending: bool,
}

/// Why a request to the Worker failed.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error("cannot reach the Worker at {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("the Worker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP to the Worker failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the Worker answered {status}: {text}")]
    Status { status: StatusCode, text: String },
    #[error("the Worker's answer is not what the store expects: {0}")]
    Answer(String),
}

fn unavailable(err: WorkerError) -> StoreError {
    StoreError::Unavailable(Box::new(err))
}

/// The Worker's address, parsed once.
#[derive(Debug, Clone)]
struct Target {
    /// `host:port`, to connect to and to send as `Host`.
    authority: String,
    /// The URL as given, without a trailing slash, for messages.
    base: String,
    /// For `https://`: the host's name, as its certificate must show it.
    tls_name: Option<String>,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let (secure, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => {
                return Err(format!(
                    "--do-url {url:?} must start with http:// or https:// (the Worker's address)"
                ));
            }
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(format!(
                "--do-url {url:?} must be http(s)://host[:port], without a path or credentials"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !rest.ends_with(']') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("--do-url {url:?}: {port:?} is not a port"))?;
                (host, port)
            }
            _ => (rest, if secure { 443 } else { 80 }),
        };
        Ok(Self {
            authority: format!("{host}:{port}"),
            base: format!("{}://{rest}", if secure { "https" } else { "http" }),
            tls_name: secure.then(|| host.trim_matches(['[', ']']).to_owned()),
        })
    }
}

/// Either side of a connection to the Worker: plain TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// TLS settings for an `https://` Worker: the CA certificates of `ca_cert` (PEM) when
/// given, else the system's.
fn tls_config(ca_cert: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match ca_cert {
        Some(path) => {
            let refuse = |why: String| format!("--do-ca-cert {}: {why}", path.display());
            let pem = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| refuse(format!("not a PEM certificate ({e})")))?;
                roots.add(cert).map_err(|e| refuse(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(refuse("holds no PEM certificate".to_owned()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system certificate rustls cannot parse is one fewer to trust.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// HTTP/1.1 to the Worker over kept-alive connections.
struct Http {
    target: Target,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    authorization: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Http {
    /// A connection to the Worker: TCP, then TLS for `https://`.
    async fn open(&self) -> Result<Box<dyn Io>, WorkerError> {
        let connect_error = |source| WorkerError::Connect {
            url: self.target.base.clone(),
            source,
        };
        let stream = tokio::net::TcpStream::connect(&self.target.authority)
            .await
            .map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some((config, name)) => {
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(connect_error)?;
                Ok(Box::new(stream))
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, WorkerError> {
        let stream = self.open().await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "a connection to the Worker ended");
            }
        });
        Ok(sender)
    }

    /// Sends one message and returns the answer's body; a status other than 200 is an
    /// error carrying the Worker's text.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, WorkerError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut sender = match pooled {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        let body = body.unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.target.authority)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|err| WorkerError::Answer(err.to_string()))?;
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, WorkerError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| WorkerError::Timeout(REQUEST_TIMEOUT))??;
        if !sender.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(sender);
            }
        }
        if status != StatusCode::OK {
            return Err(WorkerError::Status {
                status,
                text: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        Ok(body)
    }

    /// A message whose answer is JSON of type `T`.
    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: Value,
    ) -> Result<T, StoreError> {
        let answer = self
            .call(Method::POST, path, Some(Bytes::from(body.to_string())))
            .await
            .map_err(unavailable)?;
        parse(&answer)
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, StoreError> {
        let answer = self
            .call(Method::GET, path, None)
            .await
            .map_err(unavailable)?;
        parse(&answer)
    }
}

/// Events of a batch in one message to the Worker, at most: each is appended in turn
/// there, and the message must be answered within [`REQUEST_TIMEOUT`].
const APPEND_ALL_EVENTS: usize = 100;
/// A message's events' data, at most (the first event goes whatever its size), well
/// inside the Worker's 8 MiB body limit.
const APPEND_ALL_BYTES: usize = 1 << 20;

/// How many of `events` (at least one) the next message to the Worker carries.
fn append_all_chunk(events: &[(TopicList, Arc<Event>)]) -> usize {
    let mut bytes = 0;
    events
        .iter()
        .take(APPEND_ALL_EVENTS)
        .position(|(_, event)| {
            bytes += event.data.as_str().len();
            bytes > APPEND_ALL_BYTES
        })
        .unwrap_or(events.len().min(APPEND_ALL_EVENTS))
        .max(1)
}

fn parse<T: for<'de> Deserialize<'de>>(answer: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(answer).map_err(|err| unavailable(WorkerError::Answer(err.to_string())))
}

/// Copies whose events all came back whole; a damaged one fails the whole answer.
fn topic_events(wire: Vec<WireTopicEvent>, epoch: u64) -> Result<Vec<Arc<TopicEvent>>, StoreError> {
    wire.into_iter()
        .map(|e| {
            e.into_topic_event(epoch).ok_or_else(|| {
                unavailable(WorkerError::Answer("an event that is not valid".to_owned()))
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireHistory {
    topic: String,
    created_after: u64,
    evicted_through: u64,
    head: u64,
    matches: Vec<u64>,
    events: Vec<WireTopicEvent>,
}

#[derive(Debug, Deserialize)]
struct WireRead {
    epoch: String,
    topics: Vec<WireHistory>,
    #[serde(default)]
    revoked: Vec<String>,
}

impl WireRead {
    fn into_read(self) -> Result<(HistoryRead, Vec<String>), StoreError> {
        let epoch = epoch_number(&self.epoch)?;
        let mut topics = Vec::with_capacity(self.topics.len());
        for history in self.topics {
            let Some(topic) = TopicName::from_stored(&history.topic) else {
                continue;
            };
            topics.push(TopicHistory {
                topic,
                epoch,
                created_after: history.created_after,
                evicted_through: history.evicted_through,
                head: history.head,
                matches: history.matches,
                shared_with: Vec::new(),
                events: topic_events(history.events, epoch)?,
            });
        }
        Ok((HistoryRead { epoch, topics }, self.revoked))
    }
}

/// What the channel carries: a publish's copies for this node (or a numbered marker),
/// or a revoked token.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChannelMessage {
    Delivery {
        epoch: String,
        position: u64,
        number: u64,
        copies: Option<Vec<WireTopicEvent>>,
    },
    Revoke {
        revoke: String,
    },
}

#[derive(Debug, Deserialize)]
struct Beat {
    existed: bool,
    held: usize,
    /// [`connection_digest`] of the connections the Worker holds for this node.
    digest: u32,
    epoch: String,
}

fn epoch_number(epoch: &str) -> Result<u64, StoreError> {
    epoch.parse().map_err(|_| {
        unavailable(WorkerError::Answer(format!(
            "epoch {epoch:?} is not a number"
        )))
    })
}

impl WorkerStore {
    /// Checks that the Worker answers and takes the secret; fails now if not. Later
    /// outages are retried in the background while requests fail fast.
    pub async fn connect(config: WorkerConfig) -> Result<Self, StoreError> {
        let target = Target::parse(&config.url).map_err(|e| StoreError::Unavailable(e.into()))?;
        let tls = match &target.tls_name {
            None if config.ca_cert.is_some() => {
                return Err(StoreError::Unavailable(
                    "--do-ca-cert is set but --do-url is not https://".into(),
                ));
            }
            None => None,
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| {
                    StoreError::Unavailable(format!("--do-url: {name:?} is not a host name").into())
                })?;
                let config = tls_config(config.ca_cert.as_deref())
                    .map_err(|e| StoreError::Unavailable(e.into()))?;
                Some((config, name))
            }
        };
        if config.secret.len() < 16 {
            return Err(StoreError::Unavailable(
                "the Worker's secret (--do-secret, TIDEWAY_DO_SECRET) must be at least 16 characters"
                    .into(),
            ));
        }
        let authorization =
            HeaderValue::try_from(format!("Bearer {}", config.secret)).map_err(|_| {
                StoreError::Unavailable("the Worker's secret must be visible ASCII".into())
            })?;
        let store = Self {
            shared: Arc::new(Shared {
                http: Http {
                    target,
                    tls,
                    authorization,
                    idle: Mutex::new(Vec::new()),
                },
                config,
                inbox: OnceLock::new(),
                node: OnceLock::new(),
                mirror: Mutex::new(HashMap::new()),
                continuity: Mutex::new(Continuity::default()),
                registered_in: Mutex::new(None),
                healthy: AtomicBool::new(true),
                listening: AtomicBool::new(false),
                opened: tokio::sync::Notify::new(),
                changes: Mutex::new(Changes::default()),
                drift: Drift::default(),
            }),
        };
        store.http().get::<Value>("/v1/store/nodes").await?;
        Ok(store)
    }

    fn http(&self) -> &Http {
        &self.shared.http
    }

    fn grace_ms(&self) -> u64 {
        self.shared.config.topic_grace.as_millis() as u64
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Arc<ConnectionRecord>>> {
        // A map of records: a poisoned lock still holds whole entries.
        self.shared
            .mirror
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn registered_in(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.shared
            .registered_in
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `changes` with whatever else is waiting and returns once the Worker applied
    /// them; fails as the message carrying them failed.
    async fn change(&self, changes: &[Change<'_>]) -> Result<(), StoreError> {
        // Serialized before the queue is touched: a change that cannot be written leaves
        // none of its siblings queued.
        let jsons = changes
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        let mut outcomes = Vec::with_capacity(jsons.len());
        let start = {
            let mut queue = self
                .shared
                .changes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for json in jsons {
                let (told, outcome) = tokio::sync::oneshot::channel();
                queue.waiting.push((json, told));
                outcomes.push(outcome);
            }
            !std::mem::replace(&mut queue.sending, true)
        };
        if start {
            tokio::spawn(Self::send_changes(self.shared.clone()));
        }
        for outcome in outcomes {
            match outcome.await {
                Ok(Ok(())) => {}
                Ok(Err(text)) => return Err(StoreError::Unavailable(text.into())),
                Err(_) => return Err(StoreError::Unavailable("the store is closing".into())),
            }
        }
        Ok(())
    }

    /// Sends what waits in [`Changes`], up to [`CHANGES_BYTES`] a message, until nothing does.
    async fn send_changes(shared: Arc<Shared>) {
        loop {
            let batch: Vec<_> = {
                let mut queue = shared
                    .changes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let mut bytes = 0;
                let take = queue
                    .waiting
                    .iter()
                    .take_while(|(json, _)| {
                        let first = bytes == 0;
                        bytes += json.len() + 1;
                        first || bytes <= CHANGES_BYTES
                    })
                    .count();
                if take == 0 {
                    queue.sending = false;
                    return;
                }
                queue.waiting.drain(..take).collect()
            };
            let mut body = format!(
                r#"{{"capacity":{},"graceMs":{},"changes":["#,
                shared.config.history,
                shared.config.topic_grace.as_millis()
            )
            .into_bytes();
            for (at, (json, _)) in batch.iter().enumerate() {
                if at > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(json);
            }
            body.extend_from_slice(b"]}");
            let outcome = shared
                .http
                .call(Method::POST, "/v1/store/changes", Some(body.into()))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            for (_, told) in batch {
                let _ = told.send(outcome.clone());
            }
        }
    }

    /// Refreshes this node's registration (and has the sequencer send it a marker). When
    /// the Worker did not know the node — its registration lapsed and was reaped, or the
    /// Worker lost its storage — its connections and memberships are registered again.
    async fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let beat: Beat = self
            .http()
            .json(
                "/v1/store/heartbeat",
                json!({
                    "node": node,
                    "ttlMs": self.shared.config.node_ttl.as_millis() as u64,
                    "graceMs": self.grace_ms(),
                }),
            )
            .await?;
        let known = self.registered_in().clone();
        if !beat.existed && known.is_some() {
            tracing::warn!(node = %node.id, "the Worker did not know this node (its registration lapsed, or the Worker lost its storage): registering its connections again");
            if known.as_deref() == Some(beat.epoch.as_str()) {
                // Same epoch: the Worker kept its data but reaped this node, so publishes
                // meanwhile skipped it while history kept them. Told before the topics
                // are joined again: nothing after the hole may come before the news. A
                // new epoch is the channel's to report, from its first message.
                if let Some(inbox) = self.shared.inbox.get() {
                    inbox.interrupt(Interruption::DeliveryLost);
                }
            }
            self.restore(node).await?;
        } else if self.shared.drift.observe(self.differs(&beat)) {
            self.reconcile(node).await?;
        }
        *self.registered_in() = Some(beat.epoch);
        Ok(())
    }

    /// Registers this node's connections and their topics again.
    async fn restore(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let connections: Vec<Arc<ConnectionRecord>> = self.mirror().values().cloned().collect();
        self.change(&registering(&node.id, &connections)).await?;
        tracing::info!(node = %node.id, connections = connections.len(), "registered again");
        Ok(())
    }

    /// Whether the Worker holds other connections for this node than the mirror.
    fn differs(&self, beat: &Beat) -> bool {
        let mirror = self.mirror();
        beat.held != mirror.len()
            || beat.digest != connection_digest(mirror.keys().map(ConnectionId::as_str))
    }

    /// Waits until the channel is open, at most `wait`.
    async fn until_listening(&self, wait: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let opened = self.shared.opened.notified();
            tokio::pin!(opened);
            // Registered before the flag is read: an opening between the two still wakes.
            opened.as_mut().enable();
            if self.shared.listening.load(Relaxed) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                return Err(unavailable(WorkerError::Answer(format!(
                    "the node's channel did not open within {wait:?}"
                ))));
            }
        }
    }

    /// Makes the Worker's connections of this node those of the mirror: registers the
    /// missing ones (a change lost with the Worker's answer), takes out those the node no
    /// longer holds (a close whose change failed), so no topic stays live for a
    /// subscriber that is gone.
    async fn reconcile(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let all: Vec<ConnectionRecord> = self.http().get("/v1/store/connections").await?;
        let held: HashMap<ConnectionId, ConnectionRecord> = all
            .into_iter()
            .filter(|c| c.node == node.id)
            .map(|c| (c.id.clone(), c))
            .collect();
        // From here to the queue, no await: a subscribe or close after this reading of
        // the mirror queues its own change after these.
        let (missing, extra) = {
            let mirror = self.mirror();
            let missing: Vec<Arc<ConnectionRecord>> = mirror
                .values()
                .filter(|c| !held.contains_key(&c.id))
                .cloned()
                .collect();
            let extra: Vec<ConnectionRecord> = held
                .into_values()
                .filter(|c| !mirror.contains_key(&c.id))
                .collect();
            (missing, extra)
        };
        if missing.is_empty() && extra.is_empty() {
            return Ok(());
        }
        tracing::warn!(node = %node.id, missing = missing.len(), extra = extra.len(), "the Worker's view of this node's connections differed from the node's; repaired");
        let mut changes = registering(&node.id, &missing);
        for connection in &extra {
            changes.extend(connection.topics.iter().map(|topic| Change::Leave {
                topic: topic.to_string(),
                node: &node.id,
                connection: connection.id.to_string(),
            }));
            changes.push(Change::Remove {
                id: connection.id.to_string(),
            });
        }
        self.change(&changes).await
    }

    /// Handles one message from the channel.
    async fn receive(&self, text: &[u8]) {
        let Some(inbox) = self.shared.inbox.get() else {
            return;
        };
        let message = match serde_json::from_slice::<ChannelMessage>(text) {
            Ok(message) => message,
            Err(err) => {
                // Its number is unknown, so whether it carried events is too.
                tracing::warn!(error = %err, "an unreadable message from the Worker");
                inbox.interrupt(Interruption::DeliveryLost);
                return;
            }
        };
        let (epoch, position, number, copies) = match message {
            ChannelMessage::Revoke { revoke } => {
                inbox.revoke_token(&revoke);
                return;
            }
            ChannelMessage::Delivery {
                epoch,
                position,
                number,
                copies,
            } => (epoch, position, number, copies),
        };
        let verdict = self
            .shared
            .continuity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next(&epoch, number, position);
        match verdict {
            Verdict::InOrder => {}
            Verdict::Restarted => inbox.interrupt(Interruption::StoreRestarted),
            Verdict::WentBack => inbox.interrupt(Interruption::DeliveryLost),
            Verdict::Hole { after } => {
                // An event's message comes after the hole; a marker carries the position
                // given out when it was sent, which the hole may include.
                let before = match copies {
                    Some(_) => position,
                    None => position.saturating_add(1),
                };
                self.repair(inbox, &epoch, after, before).await;
            }
        }
        let Some(copies) = copies else {
            return;
        };
        match epoch_number(&epoch).and_then(|epoch| topic_events(copies, epoch)) {
            Ok(copies) => drop(inbox.deliver(&copies)),
            Err(err) => {
                tracing::warn!(error = %err, "a delivery from the Worker could not be read");
                inbox.interrupt(Interruption::DeliveryLost);
            }
        }
    }

    /// Fills a hole in this node's channel from history: the events of this node's
    /// topics after `after` and before `before`, and the revocations it may have missed.
    /// Subscribers are told only where history cannot fill it.
    async fn repair(&self, inbox: &Inbox, epoch: &str, after: u64, before: u64) {
        tracing::warn!(
            after,
            before,
            "messages from the Worker to this node went missing; reading them back from history"
        );
        let topics: Vec<String> = inbox.topics().iter().map(TopicName::to_string).collect();
        let read = self
            .http()
            .json::<WireRead>(
                "/v1/store/read-between",
                json!({
                    "topics": topics,
                    "after": after,
                    "before": before,
                    "tokens": inbox.token_ids(),
                }),
            )
            .await
            .and_then(WireRead::into_read);
        match read {
            Ok((read, revoked)) => {
                for id in &revoked {
                    inbox.revoke_token(id);
                }
                if epoch_number(epoch).is_ok_and(|e| e == read.epoch) {
                    inbox.recover(after, &read);
                } else {
                    // The Worker moved to another epoch meanwhile: its history is not
                    // this one's.
                    inbox.interrupt(Interruption::DeliveryLost);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not read the hole back from the Worker");
                inbox.interrupt(Interruption::DeliveryLost);
            }
        }
    }

    /// Opens this node's channel and reads it until it breaks, then opens it again; a
    /// message sent while it was closed shows as a skipped number.
    async fn listen(weak: Weak<Shared>, node: Arc<str>) {
        let mut failures = 0u32;
        loop {
            let Some(shared) = weak.upgrade() else { return };
            let store = WorkerStore { shared };
            match store.open_channel(&node).await {
                Ok(socket) => {
                    failures = 0;
                    store.shared.listening.store(true, Relaxed);
                    store.shared.opened.notify_waiters();
                    tracing::info!(node = %node, "listening on the Worker's channel");
                    drop(store);
                    let ended = Self::read_channel(&weak, socket).await;
                    if let Some(shared) = weak.upgrade() {
                        shared.listening.store(false, Relaxed);
                    }
                    tracing::warn!(reason = %ended, "the Worker's channel closed; opening it again");
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %err, "cannot open the Worker's channel");
                }
            }
            let wait = Duration::from_millis(100u64 << failures.min(6)).min(RECONNECT_CAP);
            tokio::time::sleep(wait).await;
        }
    }

    async fn open_channel(
        &self,
        node: &str,
    ) -> Result<fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>, WorkerError> {
        let target = &self.http().target;
        let stream = self.http().open().await?;
        let path = format!("/v1/nodes/{}/channel", percent(node));
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, &target.authority)
            .header(header::AUTHORIZATION, self.http().authorization.clone())
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "upgrade")
            .header(
                "sec-websocket-key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|err| WorkerError::Answer(err.to_string()))?;
        let handshake = fastwebsockets::handshake::client(&Spawn, request, stream);
        let (mut socket, _) = tokio::time::timeout(REQUEST_TIMEOUT, handshake)
            .await
            .map_err(|_| WorkerError::Timeout(REQUEST_TIMEOUT))?
            .map_err(|err| WorkerError::Answer(format!("the channel's handshake failed: {err}")))?;
        socket.set_auto_close(true);
        socket.set_auto_pong(true);
        Ok(socket)
    }

    /// Reads the channel until it breaks or stays silent past three heartbeats (a marker
    /// comes every beat): returns why it ended.
    async fn read_channel(
        weak: &Weak<Shared>,
        mut socket: fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>,
    ) -> String {
        loop {
            let Some(silence) = weak.upgrade().map(|s| s.config.node_ttl * 3 / 5) else {
                return "the store was dropped".to_owned();
            };
            let frame = match tokio::time::timeout(
                silence.max(Duration::from_secs(1)),
                socket.read_frame(),
            )
            .await
            {
                Err(_) => return format!("nothing heard for {silence:?}"),
                Ok(Err(err)) => return err.to_string(),
                Ok(Ok(frame)) => frame,
            };
            match frame.opcode {
                OpCode::Close => return "the Worker closed it".to_owned(),
                OpCode::Text | OpCode::Binary => {
                    let Some(shared) = weak.upgrade() else {
                        return "the store was dropped".to_owned();
                    };
                    WorkerStore { shared }.receive(&frame.payload).await;
                }
                _ => {}
            }
        }
    }
}

/// Percent-encodes a node id for a path segment.
fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Runs hyper's connection task for the channel's handshake.
struct Spawn;

impl<F> hyper::rt::Executor<F> for Spawn
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

impl Store for WorkerStore {
    const LIVE_IS_REMOTE: bool = true;

    fn attach(&self, inbox: Inbox) {
        // The first attach wins; a second would be a programming error of the caller.
        let _ = self.shared.inbox.set(inbox);
    }

    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let first = self.shared.node.set(node.clone()).is_ok();
        if first {
            // Whatever the Worker holds under this id is an earlier process's.
            self.http()
                .json::<Value>(
                    "/v1/store/nodes/forget",
                    json!({ "node": node.id.to_string(), "graceMs": self.grace_ms() }),
                )
                .await?;
            tokio::spawn(Self::listen(Arc::downgrade(&self.shared), node.id.clone()));
            // The node's count of its messages starts with the first one it hears: one
            // routed to it before its channel opened would be lost without a hole to
            // show for it (a subscriber joined meanwhile would miss that event, untold).
            // So the node is ready only once it listens.
            self.until_listening(REQUEST_TIMEOUT).await?;
        }
        self.heartbeat(node).await?;
        if first {
            spawn_heartbeat(
                Arc::downgrade(&self.shared),
                self.shared.config.node_ttl / 5,
                "the Durable-Object Worker",
                |shared| &shared.healthy,
                |shared| async move {
                    let store = WorkerStore { shared };
                    match store.shared.node.get().cloned() {
                        Some(node) => store.heartbeat(&node).await,
                        None => Ok(()),
                    }
                },
            );
        }
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct WireNode {
            id: String,
            #[serde(default)]
            hostname: String,
            #[serde(default)]
            advertise_host: String,
            #[serde(default)]
            started_at: u64,
            connections: usize,
            topics: usize,
            last_heartbeat: Option<u64>,
        }
        let nodes: Vec<WireNode> = self.http().get("/v1/store/nodes").await?;
        Ok(nodes
            .into_iter()
            .map(|n| NodeRecord {
                id: n.id.into(),
                hostname: n.hostname,
                advertise_host: n.advertise_host,
                started_at: n.started_at,
                connections: n.connections,
                topics: n.topics,
                last_heartbeat: n.last_heartbeat,
            })
            .collect())
    }

    async fn add_connection(&self, connection: &Arc<ConnectionRecord>) -> Result<(), StoreError> {
        self.mirror()
            .insert(connection.id.clone(), connection.clone());
        self.change(&[Change::Add { connection }]).await
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        self.mirror().remove(id);
        self.change(&[Change::Remove { id: id.to_string() }]).await
    }

    async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, StoreError> {
        let all: Vec<ConnectionRecord> = self.http().get("/v1/store/connections").await?;
        Ok(page.select(all))
    }

    async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, StoreError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct WireRecord {
            name: String,
            connections: usize,
            events: u64,
            created_at: u64,
            last_event_at: Option<u64>,
        }
        let names: Vec<String> = self.http().get("/v1/store/topics").await?;
        // Only the page's tenant's topics are asked for their records at all.
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| TopicName::from_stored(n).is_some_and(|t| page.lists(&t)))
            .collect();
        let records: Vec<WireRecord> = self
            .http()
            .json("/v1/store/topics/records", json!({ "names": names }))
            .await?;
        let records = records.into_iter().filter_map(|r| {
            Some(TopicRecord {
                name: TopicName::from_stored(&r.name)?,
                connections: r.connections,
                events: r.events,
                created_at: r.created_at,
                last_event_at: r.last_event_at,
            })
        });
        Ok(page.select(records))
    }

    async fn join(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        self.change(&[Change::Join {
            topic: topic.to_string(),
            node: &connection.node,
            connection: connection.id.to_string(),
        }])
        .await
    }

    async fn leave(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        self.change(&[Change::Leave {
            topic: topic.to_string(),
            node: &connection.node,
            connection: connection.id.to_string(),
        }])
        .await
    }

    async fn live(&self, topics: &TopicList) -> Result<Vec<TopicName>, StoreError> {
        let names: Vec<String> = topics.iter().map(TopicName::to_string).collect();
        let live: Vec<String> = self
            .http()
            .json("/v1/store/live", json!({ "topics": names }))
            .await?;
        Ok(live
            .iter()
            .filter_map(|t| TopicName::from_stored(t))
            .collect())
    }

    async fn append(
        &self,
        topics: &TopicList,
        event: &Arc<Event>,
    ) -> Result<Vec<Arc<TopicEvent>>, StoreError> {
        #[derive(Deserialize)]
        struct Appended {
            epoch: String,
            copies: Vec<WireTopicEvent>,
        }
        let names: Vec<String> = topics.iter().map(TopicName::to_string).collect();
        let appended: Appended = self
            .http()
            .json(
                "/v1/store/append",
                json!({ "topics": names, "event": EventRef::of(event) }),
            )
            .await?;
        topic_events(appended.copies, epoch_number(&appended.epoch)?)
    }

    /// One message to the Worker per chunk of at most [`APPEND_ALL_EVENTS`] events (and
    /// about [`APPEND_ALL_BYTES`] of data), each sent when the one before was answered:
    /// the Worker appends a chunk's events one after another and stops at the first that
    /// fails. A chunk whose answer never came ends the batch, each of its events answered
    /// with the error (some may have landed: their retries are answered as such). A
    /// Worker older than this route answers 404, and the batch fails with that: deploy
    /// the Worker before the gateways (docs/durable-objects.md).
    async fn append_all(
        &self,
        events: &[(TopicList, Arc<Event>)],
    ) -> Vec<Result<Vec<Arc<TopicEvent>>, StoreError>> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Answer {
            Appended {
                epoch: String,
                copies: Vec<WireTopicEvent>,
            },
            Failed {
                error: String,
            },
        }
        let mut answers = Vec::with_capacity(events.len());
        let mut rest = events;
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(append_all_chunk(rest));
            rest = after;
            let body = json!({ "events": chunk
                .iter()
                .map(|(topics, event)| json!({
                    "topics": topics.iter().map(TopicName::to_string).collect::<Vec<_>>(),
                    "event": EventRef::of(event),
                }))
                .collect::<Vec<_>>() });
            let reply = self
                .http()
                .call(
                    Method::POST,
                    "/v1/store/append-all",
                    Some(Bytes::from(body.to_string())),
                )
                .await;
            let replies = match reply.and_then(|body| {
                serde_json::from_slice::<Vec<Answer>>(&body)
                    .map_err(|err| WorkerError::Answer(err.to_string()))
                    .and_then(|replies| {
                        // Fewer is a Worker that stopped (at an error it names); more is
                        // not an answer to this message.
                        if replies.len() > chunk.len() {
                            Err(WorkerError::Answer(format!(
                                "{} answers to a message of {} events",
                                replies.len(),
                                chunk.len()
                            )))
                        } else {
                            Ok(replies)
                        }
                    })
            }) {
                Ok(replies) => replies,
                Err(err) => {
                    answers.extend(tideway_core::step_failed(unavailable(err), chunk.len()));
                    break;
                }
            };
            let whole = replies.len() == chunk.len();
            for reply in replies {
                let answer = match reply {
                    Answer::Appended { epoch, copies } => {
                        epoch_number(&epoch).and_then(|epoch| topic_events(copies, epoch))
                    }
                    Answer::Failed { error } => Err(unavailable(WorkerError::Answer(error))),
                };
                let failed = answer.is_err();
                answers.push(answer);
                if failed {
                    return answers;
                }
            }
            if !whole {
                // Fewer answers with no error: core counts the rest as failed.
                break;
            }
        }
        answers
    }

    async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, StoreError> {
        let tail: Option<Vec<WireTopicEvent>> = self
            .http()
            .json(
                "/v1/store/tail",
                json!({ "topic": topic.to_string(), "limit": limit }),
            )
            .await?;
        // The tail is for reading, not resuming: its events carry no epoch of their own.
        tail.map(|events| topic_events(events, 0)).transpose()
    }

    async fn read_since(
        &self,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> Result<HistoryRead, StoreError> {
        let names: Vec<String> = topics.iter().map(TopicName::to_string).collect();
        let read: WireRead = self
            .http()
            .json(
                "/v1/store/read-since",
                json!({ "topics": names, "id": last_event_id.to_string() }),
            )
            .await?;
        read.into_read().map(|(read, _)| read)
    }

    async fn revoke_token(&self, id: &str, until: u64) -> Result<(), StoreError> {
        self.http()
            .json::<Value>("/v1/store/revoke", json!({ "id": id, "until": until }))
            .await
            .map(|_| ())
    }

    async fn token_revoked(&self, id: &str) -> Result<bool, StoreError> {
        self.http()
            .json("/v1/store/revoked", json!({ "id": id }))
            .await
    }

    async fn ready(&self) -> bool {
        self.shared.healthy.load(Relaxed) && self.shared.listening.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(sizes: &[usize]) -> Vec<(TopicList, Arc<Event>)> {
        sizes
            .iter()
            .enumerate()
            .map(|(n, size)| {
                let event = Event {
                    id: EventId::parse(format!("e{n}").as_bytes()).expect("an id"),
                    event_type: None,
                    data: tideway_protocol::EventData::parse(Bytes::from("x".repeat(*size)))
                        .expect("data"),
                    published_at: 0,
                };
                (TopicList::parse(b"t", 8).expect("a topic"), Arc::new(event))
            })
            .collect()
    }

    #[test]
    fn a_batch_goes_to_the_worker_100_events_or_1_mib_of_data_at_a_time() {
        assert_eq!(append_all_chunk(&sized(&[10; 99])), 99);
        assert_eq!(append_all_chunk(&sized(&[10; 100])), 100);
        assert_eq!(append_all_chunk(&sized(&[10; 101])), 100, "past 100 events");
        let half = APPEND_ALL_BYTES / 2;
        assert_eq!(append_all_chunk(&sized(&[half, half, 1])), 2, "past 1 MiB");
        assert_eq!(append_all_chunk(&sized(&[half, half])), 2, "exactly 1 MiB");
        assert_eq!(
            append_all_chunk(&sized(&[APPEND_ALL_BYTES + 1, 1])),
            1,
            "an event larger than a message still goes, alone"
        );
    }

    #[test]
    fn the_worker_url_is_http_or_https_host_and_port() {
        let target = Target::parse("http://127.0.0.1:8787/").expect("plain");
        assert_eq!(target.authority, "127.0.0.1:8787");
        assert_eq!(target.base, "http://127.0.0.1:8787");
        assert_eq!(target.tls_name, None);
        let plain = Target::parse("http://store.internal").expect("no port");
        assert_eq!(plain.authority, "store.internal:80");
        let secure = Target::parse("https://tideway-store.example.workers.dev").expect("https");
        assert_eq!(secure.authority, "tideway-store.example.workers.dev:443");
        assert_eq!(
            secure.tls_name.as_deref(),
            Some("tideway-store.example.workers.dev")
        );
        assert_eq!(
            Target::parse("https://[::1]:8443")
                .expect("v6")
                .tls_name
                .as_deref(),
            Some("::1")
        );
        assert_eq!(
            Target::parse("http://[::1]").expect("v6").authority,
            "[::1]:80"
        );
        for wrong in [
            "ftp://x",
            "x:1",
            "http://",
            "http://h:1/path",
            "http://u:p@h:1",
            "http://h:99999",
        ] {
            let err = Target::parse(wrong).expect_err(wrong);
            assert!(err.contains("--do-url"), "{err}");
        }
    }

    #[test]
    fn node_ids_are_escaped_in_the_channel_path() {
        assert_eq!(percent("host-1.a_b~"), "host-1.a_b~");
        assert_eq!(percent("a/b c"), "a%2Fb%20c");
    }
}
