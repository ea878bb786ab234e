//! Tideway's Redis state store (`--adapter redis`): many gateway nodes share topics,
//! connections and history through one Redis, and a publish reaching any node is routed
//! to exactly the nodes that hold subscribers of its topics.
//!
//! Each message of the store trait is one Lua script (see [`scripts`]), so it is atomic,
//! as a Durable Object's request is. Delivery: `append` publishes, inside its script, one
//! message per node holding a subscriber, on that node's channel; each node subscribes to
//! its own channel and hands what arrives to its inbox. Liveness: every node refreshes its
//! registration on a heartbeat; any node removes the nodes whose registration expired,
//! with their connections and topic memberships. After Redis restarts or forgets this
//! node, the next heartbeat notices and registers the node's connections again.
//!
//! Continuity: Redis keeps an epoch (a random id set when its keys start from nothing)
//! and numbers every message it sends a node. A node that sees another epoch, a number
//! skipped or going back, a lagging buffer, or learns its registration lapsed, tells its
//! subscribers through [`Inbox::interrupt`] before it delivers anything after the hole.
//! The heartbeat sends the node a numbered marker too, so a hole shows within one beat
//! even when nothing is published.
#![forbid(unsafe_code)]

mod cluster;
mod cluster_scripts;
mod scripts;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use bytes::Bytes;
use fred::{
    clients::SubscriberClient,
    prelude::{
        Builder, Client, ClientLike, Config, EventInterface, PubsubInterface, ReconnectPolicy,
    },
    types::Value,
};
use tideway_core::{
    ConnectionId, ConnectionRecord, Continuity, Drift, Event, HistoryRead, Inbox, Interruption,
    NodeRecord, Page, Paged, Store, StoreError, TopicEvent, TopicHistory, TopicRecord, Verdict,
    new_epoch, spawn_heartbeat, unix_millis,
};
use tideway_protocol::{EventData, EventId, EventType, TopicList, TopicName};

pub use crate::cluster::RedisClusterStore;
use crate::scripts::Scripts;

/// Settings of the Redis store. Defaults are the ones `tideway --help` prints.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where Redis is, as `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and channel, so several clusters can share one Redis.
    pub prefix: String,
    /// Events kept per topic for resume and tail.
    pub history: usize,
    /// How long a topic whose last connection left still counts as live.
    pub topic_grace: Duration,
    /// How long a node counts as alive after its last heartbeat; heartbeats come five
    /// times as often.
    pub node_ttl: Duration,
    /// For `rediss://` URLs: the CA certificates (PEM) that Redis's certificate must chain
    /// to, instead of the system's.
    pub ca_cert: Option<std::path::PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "tideway:".to_owned(),
            history: 1000,
            topic_grace: Duration::ZERO,
            node_ttl: Duration::from_secs(5),
            ca_cert: None,
        }
    }
}

/// The Redis store. Cloning bumps a reference count.
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    config: RedisConfig,
    client: Client,
    subscriber: SubscriberClient,
    scripts: Scripts,
    inbox: OnceLock<Inbox>,
    node: OnceLock<NodeRecord>,
    /// This node's connections, to register again after Redis lost them. A std mutex:
    /// one map operation per critical section.
    mirror: Mutex<HashMap<ConnectionId, Arc<ConnectionRecord>>>,
    /// Whether the last heartbeat reached Redis.
    healthy: AtomicBool,
    /// What this node last received on its channel. A std mutex: the delivery task holds
    /// it for one comparison per message.
    continuity: Mutex<Continuity>,
    /// The epoch of the last heartbeat that found this node registered.
    registered_in: Mutex<Option<String>>,
    /// Whether Redis's count of this node's connections keeps differing from the mirror's.
    drift: Drift,
    /// Messages the delivery task took off this node's channel: each successful heartbeat
    /// sends one, so a count that stands still while heartbeats succeed means the node
    /// no longer hears its channel.
    heard: AtomicU64,
    /// Whether the node hears its channel (see [`Hearing`]).
    listening: AtomicBool,
    /// Judged at each successful heartbeat.
    hearing: Mutex<Hearing>,
}

/// Whether a node still hears its channel, judged at each successful heartbeat.
#[derive(Debug, Default)]
struct Hearing {
    /// The count of messages heard at the last beat that saw it move.
    heard: u64,
    /// Successful beats since then.
    deaf_beats: u32,
}

/// Successful heartbeats (each sending a marker) after which a node that heard nothing
/// counts as deaf.
const DEAF_AFTER_BEATS: u32 = 3;

impl Hearing {
    /// After a successful heartbeat: `true` when the node heard nothing over the last
    /// [`DEAF_AFTER_BEATS`] of them (and starts counting again).
    fn beat(&mut self, heard: u64) -> bool {
        if heard != self.heard {
            self.heard = heard;
            self.deaf_beats = 0;
            return false;
        }
        self.deaf_beats += 1;
        if self.deaf_beats > DEAF_AFTER_BEATS {
            self.deaf_beats = 0;
            return true;
        }
        false
    }
}

/// Connections registered again per round trip of a resync.
const RESTORE_BATCH: usize = 200;

/// Token ids or topics asked about per round trip of a repair.
const REPAIR_BATCH: usize = 500;

fn unavailable(err: fred::error::Error) -> StoreError {
    StoreError::Unavailable(Box::new(err))
}

impl RedisStore {
    /// Connects to Redis; fails if it cannot be reached now. Later outages are retried
    /// forever in the background while requests fail fast.
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        let redis = redis_config(&config.url, config.ca_cert.as_deref())?;
        let (client, subscriber) = clients(redis).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                client,
                subscriber,
                scripts: Scripts::default(),
                inbox: OnceLock::new(),
                node: OnceLock::new(),
                mirror: Mutex::new(HashMap::new()),
                healthy: AtomicBool::new(true),
                continuity: Mutex::new(Continuity::default()),
                registered_in: Mutex::new(None),
                drift: Drift::default(),
                heard: AtomicU64::new(0),
                listening: AtomicBool::new(true),
                hearing: Mutex::new(Hearing::default()),
            }),
        })
    }

    fn prefix(&self) -> &str {
        &self.shared.config.prefix
    }

    fn node_id(&self) -> &str {
        self.shared.node.get().map_or("", |node| &node.id)
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Arc<ConnectionRecord>>> {
        // One map operation per critical section: a poisoned lock holds a whole map.
        self.shared
            .mirror
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(
        &self,
        script: &fred::types::scripts::Script,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        script
            .evalsha_with_reload::<Value, _, _>(&self.shared.client, Vec::<String>::new(), args)
            .await
            .map_err(unavailable)
    }

    fn grace_ms(&self) -> String {
        self.shared.config.topic_grace.as_millis().to_string()
    }

    /// Refreshes this node's registration; registers its connections again when Redis
    /// had forgotten the node. Then removes expired nodes and topics.
    async fn heartbeat(&self) -> Result<(), StoreError> {
        let Some(node) = self.shared.node.get() else {
            return Ok(());
        };
        let (existed, epoch, held) = self.beat(node).await?;
        let drifted = self.shared.drift.observe(held != self.mirror().len());
        if existed && drifted {
            self.reconcile(node).await?;
        }
        if !existed {
            tracing::warn!(node = %node.id, "Redis did not know this node (restart or outage): registering its connections again");
            let before = self.registered_in().clone();
            if before.as_deref() == Some(epoch.as_str()) {
                // Same epoch: Redis kept its data but dropped this node (its registration
                // lapsed and another node reaped it), so publishes meanwhile skipped this
                // node while history kept them. Told before the node's topics are
                // registered again: nothing published after the hole may reach a
                // subscriber before it learns of the hole. A new epoch is the delivery
                // task's to report, from the first message that carries it.
                if let Some(inbox) = self.shared.inbox.get() {
                    inbox.interrupt(Interruption::DeliveryLost);
                }
            }
            self.resync(node, false).await?;
        }
        *self.registered_in() = Some(epoch);
        self.run(
            &self.shared.scripts.reap,
            vec![self.prefix().to_owned(), self.grace_ms()],
        )
        .await?;
        Ok(())
    }

    fn registered_in(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // Holds one value: a poisoned lock holds it whole.
        self.shared
            .registered_in
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Refreshes the registration: whether Redis knew the node, Redis's epoch, and how
    /// many connections Redis holds for the node.
    async fn beat(&self, node: &NodeRecord) -> Result<(bool, String, usize), StoreError> {
        let ttl = self.shared.config.node_ttl.as_millis() as u64;
        let args = vec![
            self.prefix().to_owned(),
            node.id.to_string(),
            ttl.to_string(),
            node.hostname.clone(),
            node.advertise_host.clone(),
            node.started_at.to_string(),
            epoch_candidate(),
        ];
        let reply = values(self.run(&self.shared.scripts.heartbeat, args).await?);
        let existed = reply.first().map(number) == Some(1);
        let held = reply.get(2).map_or(0, number) as usize;
        Ok((existed, reply.get(1).map(text).unwrap_or_default(), held))
    }

    /// Registers the node and its connections again. `first`: the process is starting, so
    /// whatever Redis holds under this node id is an earlier process's and is cleared
    /// first. Later (Redis forgot the node) nothing is cleared: a subscription that joined
    /// meanwhile must keep its place, or publishes would skip it until the restore.
    async fn resync(&self, node: &NodeRecord, first: bool) -> Result<(), StoreError> {
        // Listen first: once the node's topics are registered again, events are routed
        // to its channel at once, and a channel nobody listens to drops them.
        let channels = vec![
            format!("{}node:{}:events", self.prefix(), node.id),
            format!("{}revocations", self.prefix()),
        ];
        self.shared
            .subscriber
            .subscribe(channels)
            .await
            .map_err(unavailable)?;
        if first {
            let args = vec![
                self.prefix().to_owned(),
                self.grace_ms(),
                node.id.to_string(),
            ];
            self.run(&self.shared.scripts.reap, args).await?;
        }
        let connections: Vec<Arc<ConnectionRecord>> = self.mirror().values().cloned().collect();
        self.restore(node, &connections).await?;
        // A connection that closed while this ran was registered again from the copy
        // above after its own leave: take it out again.
        self.reconcile(node).await?;
        self.beat(node).await?;
        tracing::info!(node = %node.id, connections = connections.len(), "registered again");
        Ok(())
    }

    /// Registers `connections` of this node and their topics again, a batch per round
    /// trip, refreshing the node's registration between batches so a long resync cannot
    /// outlive it.
    async fn restore(
        &self,
        node: &NodeRecord,
        connections: &[Arc<ConnectionRecord>],
    ) -> Result<(), StoreError> {
        for batch in connections.chunks(RESTORE_BATCH) {
            let mut args = vec![self.prefix().to_owned(), node.id.to_string()];
            for connection in batch {
                args.push(connection.id.to_string());
                args.push(serde_json::to_string(connection).unwrap_or_default());
                args.push(tenant_of(connection).to_owned());
                args.push(connection.topics.len().to_string());
                args.extend(connection.topics.iter().map(TopicName::to_string));
            }
            self.run(&self.shared.scripts.restore, args).await?;
            self.beat(node).await?;
        }
        Ok(())
    }

    /// Makes Redis's connections of this node those of the local mirror: registers the
    /// missing ones, takes out those the node no longer holds.
    async fn reconcile(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let key = format!("{}node:{}:conns", self.prefix(), node.id);
        let held: Vec<String> = fred::interfaces::SetsInterface::smembers(&self.shared.client, key)
            .await
            .map_err(unavailable)?;
        let held: std::collections::HashSet<String> = held.into_iter().collect();
        let (missing, extra) = {
            let mirror = self.mirror();
            let missing: Vec<Arc<ConnectionRecord>> = mirror
                .values()
                .filter(|c| !held.contains(c.id.as_str()))
                .cloned()
                .collect();
            let extra: Vec<String> = held
                .iter()
                .filter(|id| !mirror.contains_key(&ConnectionId::from_stored(id)))
                .cloned()
                .collect();
            (missing, extra)
        };
        if !missing.is_empty() || !extra.is_empty() {
            tracing::warn!(node = %node.id, missing = missing.len(), extra = extra.len(), "Redis's view of this node's connections differed from the node's; repaired");
        }
        self.restore(node, &missing).await?;
        for batch in extra.chunks(RESTORE_BATCH) {
            let mut args = vec![
                self.prefix().to_owned(),
                node.id.to_string(),
                self.grace_ms(),
            ];
            args.extend(batch.iter().cloned());
            self.run(&self.shared.scripts.drop_connections, args)
                .await?;
        }
        Ok(())
    }

    /// Delivers what arrives on this node's channel to its inbox, after filling (or
    /// telling subscribers of) any hole before it.
    async fn deliver(&self, payload: &[u8]) {
        let Some(inbox) = self.shared.inbox.get() else {
            return;
        };
        let Some(delivery) = parse_delivery(payload) else {
            // Its number is unknown, so whether it carried events is too.
            tracing::warn!("an unreadable message from Redis");
            inbox.interrupt(Interruption::DeliveryLost);
            return;
        };
        let verdict = self
            .continuity()
            .next(&delivery.epoch, delivery.number, delivery.position);
        match verdict {
            Verdict::InOrder => {}
            Verdict::Restarted => inbox.interrupt(Interruption::StoreRestarted),
            Verdict::WentBack => inbox.interrupt(Interruption::DeliveryLost),
            Verdict::Hole { after } => {
                // An event's message comes after the hole; a marker carries the position
                // given out when it was sent, which the hole may include.
                let before = match delivery.event {
                    Some(_) => delivery.position,
                    None => delivery.position.saturating_add(1),
                };
                self.repair(inbox, &delivery.epoch, after, before).await;
            }
        }
        let Some(event) = delivery.event else {
            return;
        };
        let event = Arc::new(event);
        let epoch = epoch_number(&delivery.epoch);
        let copies: Vec<Arc<TopicEvent>> = delivery
            .routes
            .into_iter()
            .map(|(topic, seq)| {
                Arc::new(TopicEvent::new(
                    topic,
                    seq,
                    epoch,
                    delivery.position,
                    event.clone(),
                ))
            })
            .collect();
        drop(inbox.deliver(&copies));
    }

    /// Fills a hole in this node's channel from history: the events of this node's
    /// topics after `after` and before `before`, and the revocations it may have missed.
    /// Subscribers are told only where history cannot fill it.
    async fn repair(&self, inbox: &Inbox, epoch: &str, after: u64, before: u64) {
        tracing::warn!(
            after,
            before,
            "messages from Redis to this node went missing; reading them back from history"
        );
        match self.read_between(inbox, after, before).await {
            Ok(read) if read.epoch == epoch_number(epoch) => inbox.recover(after, &read),
            Ok(_) => {
                // Redis moved to another epoch meanwhile: its history is not this one's.
                inbox.interrupt(Interruption::DeliveryLost);
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not read the hole back from Redis");
                inbox.interrupt(Interruption::DeliveryLost);
            }
        }
    }

    /// Reads what [`RedisStore::repair`] needs, a batch of token ids or topics per round
    /// trip (positions before `before` no longer change, so batches agree; at least one
    /// call, for the epoch), and ends the subscriptions of revoked tokens. The read's
    /// epoch is 0 unless every batch saw the same one.
    async fn read_between(
        &self,
        inbox: &Inbox,
        after: u64,
        before: u64,
    ) -> Result<HistoryRead, StoreError> {
        let tokens = inbox.token_ids();
        let topics: Vec<String> = inbox.topics().iter().map(TopicName::to_string).collect();
        let mut read = HistoryRead {
            epoch: 0,
            topics: Vec::new(),
        };
        let mut epochs = std::collections::HashSet::new();
        let mut batches: Vec<(&[String], &[String])> = tokens
            .chunks(REPAIR_BATCH)
            .map(|t| (t, &[][..]))
            .chain(topics.chunks(REPAIR_BATCH).map(|t| (&[][..], t)))
            .collect();
        if batches.is_empty() {
            // No subscriber here, no token: one call all the same, for the epoch.
            batches.push((&[], &[]));
        }
        for (tokens, topics) in batches {
            let mut args = vec![
                self.prefix().to_owned(),
                after.to_string(),
                before.to_string(),
                tokens.len().to_string(),
            ];
            args.extend(tokens.iter().cloned());
            args.extend(topics.iter().cloned());
            let mut flat =
                values(self.run(&self.shared.scripts.read_between, args).await?).into_iter();
            let epoch = epoch_number(&flat.next().as_ref().map(text).unwrap_or_default());
            epochs.insert(epoch);
            for id in flat.next().map(values).unwrap_or_default() {
                inbox.revoke_token(&text(&id));
            }
            read.topics
                .extend(flat.filter_map(|topic| parse_topic_history(epoch, topic)));
        }
        if epochs.len() == 1 {
            read.epoch = epochs.into_iter().next().unwrap_or(0);
        }
        Ok(read)
    }

    /// After a successful heartbeat: if the node heard none of the markers its last
    /// heartbeats sent, its channel is deaf (a subscription Redis dropped without closing
    /// the connection, a stuck delivery task). Nothing after that point could be noticed
    /// missing, so subscribers are told and the connection is made again; the node
    /// reports itself not ready until it hears again.
    async fn check_hearing(&self) {
        let (deaf, deaf_beats) = {
            let mut hearing = self
                .shared
                .hearing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let deaf = hearing.beat(self.shared.heard.load(Relaxed));
            (deaf, hearing.deaf_beats)
        };
        if !deaf {
            if deaf_beats == 0 {
                self.shared.listening.store(true, Relaxed);
            }
            return;
        }
        tracing::error!(
            "this node heard nothing on its Redis channel over several heartbeats; telling its subscribers and reconnecting"
        );
        self.shared.listening.store(false, Relaxed);
        if let Some(inbox) = self.shared.inbox.get() {
            inbox.interrupt(Interruption::DeliveryLost);
        }
        if let Err(err) = self.shared.subscriber.force_reconnection().await {
            tracing::warn!(error = %err, "reconnecting the Redis subscription failed");
        }
    }

    fn continuity(&self) -> std::sync::MutexGuard<'_, Continuity> {
        // Holds one value: a poisoned lock holds it whole.
        self.shared
            .continuity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The client settings of `url` (`redis://`, `rediss://` over TLS, `redis-sentinel://`
/// and `rediss-sentinel://` behind Sentinel), trusting `ca_cert` for TLS when given.
fn redis_config(url: &str, ca_cert: Option<&std::path::Path>) -> Result<Config, StoreError> {
    let mut redis = Config::from_url(url).map_err(unavailable)?;
    if let Some(path) = ca_cert {
        if redis.tls.is_none() {
            return Err(StoreError::Unavailable(
                format!(
                    "a CA certificate ({}) is given but the Redis URL is not rediss://",
                    path.display()
                )
                .into(),
            ));
        }
        redis.tls = Some(trusting(path)?.into());
    }
    Ok(redis)
}

/// A TLS connector that trusts the CA certificates in the PEM file at `path`.
fn trusting(path: &std::path::Path) -> Result<fred::types::config::TlsConnector, StoreError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let refuse = |why: String| StoreError::Unavailable(format!("{}: {why}", path.display()).into());
    let pem = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| refuse(format!("not a PEM certificate ({e})")))?;
        roots.add(cert).map_err(|e| refuse(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(refuse("holds no PEM certificate".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refuse(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config.into())
}

/// A client for commands and one for subscriptions to `redis`, connected: both fail fast
/// (2 s) while Redis cannot be reached and reconnect forever in the background.
async fn clients(redis: Config) -> Result<(Client, SubscriberClient), StoreError> {
    let mut builder = Builder::from_config(redis);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(2);
            // Delivery reads this channel; a deep buffer rides out a burst.
            p.broadcast_channel_capacity = 1 << 16;
        })
        .set_policy(ReconnectPolicy::new_constant(0, 200));
    let client = builder.build().map_err(unavailable)?;
    let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
    client.init().await.map_err(unavailable)?;
    subscriber.init().await.map_err(unavailable)?;
    Ok((client, subscriber))
}

/// The heartbeat and delivery tasks of a node; both end when the store is dropped.
fn spawn_tasks(store: &RedisStore) {
    spawn_heartbeat(
        Arc::downgrade(&store.shared),
        store.shared.config.node_ttl / 5,
        "Redis",
        |shared| &shared.healthy,
        |shared| async move {
            let store = RedisStore { shared };
            store.heartbeat().await?;
            store.check_hearing().await;
            Ok(())
        },
    );
    let weak: Weak<Shared> = Arc::downgrade(&store.shared);
    let mut messages = store.shared.subscriber.message_rx();
    tokio::spawn(async move {
        loop {
            match messages.recv().await {
                Ok(message) => {
                    let Some(shared) = weak.upgrade() else { return };
                    let store = RedisStore { shared };
                    store.shared.heard.fetch_add(1, Relaxed);
                    let revocation = message.channel.ends_with("revocations");
                    match (message.value.as_bytes(), store.shared.inbox.get()) {
                        (Some(id), Some(inbox)) if revocation => {
                            inbox.revoke_token(&String::from_utf8_lossy(id));
                        }
                        (Some(payload), _) => store.deliver(payload).await,
                        (None, _) => tracing::warn!("a message from Redis had no bytes"),
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    // The next message's number shows the hole, and it is read back from
                    // history then (a heartbeat's marker comes within one beat).
                    tracing::error!(
                        missed,
                        "delivery fell behind Redis; messages to this node were lost"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// `id \n event type \n published at \n data`: the event as scripts store and send it.
/// How many events of a batch one script appends: a script holds Redis for its whole
/// run (2.2 ms median for 100 one-topic events of 256 bytes, by `SLOWLOG`; see
/// docs/performance.md), and a batch takes one round trip per chunk.
const APPEND_CHUNK: usize = 100;

/// What a store answers for one event of a batch.
type Appended = Result<Vec<Arc<TopicEvent>>, StoreError>;

/// The replies, one per event, of a batch script that took `count` events; or, when it
/// failed or answered for another number of events, each event's error
/// ([`tideway_core::step_failed`]).
fn step_replies(
    reply: Result<Value, StoreError>,
    count: usize,
) -> Result<Vec<Value>, Vec<Appended>> {
    let err = match reply.map(values) {
        Ok(replies) if replies.len() == count => return Ok(replies),
        Ok(replies) => StoreError::Unavailable(
            format!(
                "the batch script answered {} of its {count} events",
                replies.len()
            )
            .into(),
        ),
        Err(err) => err,
    };
    Err(tideway_core::step_failed(err, count).collect())
}

/// What the append script answered for `event` (epoch, position, then topic and sequence
/// number of each topic it went to), as the copies appended.
fn appended(reply: Value, event: &Arc<Event>) -> Vec<Arc<TopicEvent>> {
    let flat = values(reply);
    let epoch = epoch_number(&flat.first().map(text).unwrap_or_default());
    let position = flat.get(1).map_or(0, number);
    flat.get(2..)
        .unwrap_or_default()
        .chunks_exact(2)
        .filter_map(|pair| {
            let topic = TopicName::from_stored(&text(&pair[0]))?;
            Some(Arc::new(TopicEvent::new(
                topic,
                number(&pair[1]),
                epoch,
                position,
                event.clone(),
            )))
        })
        .collect()
}

fn encode_event(event: &Event) -> String {
    let event_type = event.event_type.as_ref().map_or("", EventType::as_str);
    format!(
        "{}\n{}\n{}\n{}",
        event.id,
        event_type,
        event.published_at,
        event.data.as_str()
    )
}

fn decode_event(blob: &[u8]) -> Option<Event> {
    let mut parts = blob.splitn(4, |&b| b == b'\n');
    let id = EventId::parse(parts.next()?).ok()?;
    let event_type = match parts.next()? {
        [] => None,
        bytes => Some(EventType::parse(bytes).ok()?),
    };
    let published_at = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let data = EventData::parse(Bytes::copy_from_slice(parts.next()?)).ok()?;
    Some(Event {
        id,
        event_type,
        data,
        published_at,
    })
}

/// What one message on a node's channel carries.
struct Delivery {
    /// Redis's epoch when it sent the message.
    epoch: String,
    /// The number of the message among those sent to this node.
    number: u64,
    position: u64,
    /// Each topic of this node the event was appended to, with its sequence number.
    routes: Vec<(TopicName, u64)>,
    /// The event; `None` for a heartbeat's marker.
    event: Option<Event>,
}

/// `epoch position number \n topic seq \n ... \n\n event`, as the append script
/// publishes it, or `epoch 0 number \n`, a heartbeat's marker.
fn parse_delivery(payload: &[u8]) -> Option<Delivery> {
    let end = payload.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&payload[..end]).ok()?;
    let mut fields = header.split(' ');
    let epoch = fields.next()?.to_owned();
    let position = fields.next()?.parse().ok()?;
    let number = fields.next()?.parse().ok()?;
    let body = &payload[end + 1..];
    let mut delivery = Delivery {
        epoch,
        number,
        position,
        routes: Vec::new(),
        event: None,
    };
    if body.is_empty() {
        return Some(delivery);
    }
    let split = body.windows(2).position(|w| w == b"\n\n")?;
    let routes = std::str::from_utf8(&body[..split]).ok()?;
    delivery.routes = routes
        .lines()
        .map(|line| {
            let (topic, seq) = line.split_once(' ')?;
            Some((TopicName::from_stored(topic)?, seq.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    delivery.event = Some(decode_event(&body[split + 2..])?);
    Some(delivery)
}

/// An epoch for Redis to take should it hold none yet: new at every call, so Redis
/// restarted empty never gets the epoch it had before.
fn epoch_candidate() -> String {
    new_epoch().to_string()
}

/// The epoch as the core counts it. Epochs this store writes are decimal numbers; one
/// written by anything else still gets a stable number of its own.
fn epoch_number(epoch: &str) -> u64 {
    epoch.parse().unwrap_or_else(|_| {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        epoch.hash(&mut hasher);
        hasher.finish()
    })
}

/// `seq position event`, a history entry.
fn parse_history(topic: &TopicName, epoch: u64, entry: &[u8]) -> Option<TopicEvent> {
    let mut parts = entry.splitn(3, |&b| b == b' ');
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let position = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let event = decode_event(parts.next()?)?;
    Some(TopicEvent::new(
        topic.clone(),
        seq,
        epoch,
        position,
        Arc::new(event),
    ))
}

/// `{topic, createdAfter, evictedThrough, head, {positions of the id}, {entries}}`, one
/// topic of a script's read of histories.
fn parse_topic_history(epoch: u64, topic: Value) -> Option<TopicHistory> {
    let mut fields = values(topic).into_iter();
    let name = TopicName::from_stored(&text(&fields.next()?))?;
    let created_after = number(&fields.next()?);
    let evicted_through = number(&fields.next()?);
    let head = number(&fields.next()?);
    let matches = values(fields.next()?).iter().map(number).collect();
    let events = values(fields.next()?)
        .into_iter()
        .filter_map(|entry| parse_history(&name, epoch, entry.as_bytes()?).map(Arc::new))
        .collect();
    Some(TopicHistory {
        topic: name,
        epoch,
        created_after,
        evicted_through,
        head,
        matches,
        shared_with: Vec::new(),
        events,
    })
}

/// The nodes script's reply: per node its id, hostname, advertised host, start,
/// connections, topics and last heartbeat.
fn parse_nodes(reply: Value) -> Vec<NodeRecord> {
    values(reply)
        .chunks_exact(7)
        .map(|n| NodeRecord {
            id: text(&n[0]).into(),
            hostname: text(&n[1]),
            advertise_host: text(&n[2]),
            started_at: number(&n[3]),
            connections: number(&n[4]) as usize,
            topics: number(&n[5]) as usize,
            last_heartbeat: text(&n[6]).parse().ok(),
        })
        .collect()
}

/// A topic's figures as the scripts list them: connections, events, createdAt and
/// lastEventAt ('' when none).
fn topic_record(name: TopicName, figures: &[Value]) -> TopicRecord {
    TopicRecord {
        name,
        connections: number(&figures[0]) as usize,
        events: number(&figures[1]),
        created_at: number(&figures[2]),
        last_event_at: text(&figures[3]).parse().ok(),
    }
}

/// The connections script's reply: the total, then each record's JSON.
fn parse_connections(reply: Value, page: &Page) -> Paged<ConnectionRecord> {
    let mut flat = values(reply).into_iter();
    let total = flat.next().as_ref().map_or(0, number) as usize;
    let items = flat
        .filter_map(|v| v.as_str().and_then(|json| serde_json::from_str(&json).ok()))
        .collect();
    Paged {
        items,
        page: page.page,
        page_size: page.page_size,
        total,
    }
}

fn values(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn text(value: &Value) -> String {
    value.as_str().map(|s| s.to_string()).unwrap_or_default()
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The tenant of a connection's topics ('' for none): they all belong to one.
fn tenant_of(connection: &ConnectionRecord) -> &str {
    connection
        .topics
        .names()
        .first()
        .and_then(|t| t.tenant())
        .unwrap_or("")
}

fn range(page: &Page) -> (String, String) {
    let start = page.page.saturating_sub(1).saturating_mul(page.page_size);
    let stop = start.saturating_add(page.page_size).saturating_sub(1);
    (start.to_string(), stop.min(i64::MAX as usize).to_string())
}

impl Store for RedisStore {
    const LIVE_IS_REMOTE: bool = true;

    fn attach(&self, inbox: Inbox) {
        // The first attach wins; a second would be a programming error of the caller.
        let _ = self.shared.inbox.set(inbox);
    }

    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        if self.shared.node.set(node.clone()).is_ok() {
            // Subscribes again after every reconnect of the subscriber connection; the
            // task runs for the life of the client, so its handle is not needed.
            drop(self.shared.subscriber.manage_subscriptions());
            // Subscribes, clears leftovers of an earlier process with this node id, and
            // registers (no) connections.
            self.resync(node, true).await?;
            spawn_tasks(self);
            return Ok(());
        }
        self.beat(node).await.map(|_| ())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Ok(parse_nodes(
            self.run(&self.shared.scripts.nodes, vec![self.prefix().to_owned()])
                .await?,
        ))
    }

    async fn add_connection(&self, connection: &Arc<ConnectionRecord>) -> Result<(), StoreError> {
        self.mirror()
            .insert(connection.id.clone(), connection.clone());
        let json = serde_json::to_string(connection).unwrap_or_default();
        let args = vec![
            self.prefix().to_owned(),
            connection.id.to_string(),
            connection.node.to_string(),
            json,
            tenant_of(connection).to_owned(),
        ];
        self.run(&self.shared.scripts.add_connection, args)
            .await
            .map(|_| ())
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        let removed = self.mirror().remove(id);
        let tenant = removed.as_deref().map_or("", tenant_of).to_owned();
        let args = vec![
            self.prefix().to_owned(),
            id.to_string(),
            self.node_id().to_owned(),
            tenant,
        ];
        self.run(&self.shared.scripts.remove_connection, args)
            .await
            .map(|_| ())
    }

    async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, StoreError> {
        let (start, stop) = range(&page);
        let tenant = page.tenant.as_ref().map_or("", |t| t.as_str()).to_owned();
        let reply = self
            .run(
                &self.shared.scripts.connections,
                vec![self.prefix().to_owned(), start, stop, tenant],
            )
            .await?;
        Ok(parse_connections(reply, &page))
    }

    async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, StoreError> {
        let (start, stop) = range(&page);
        let tenant = page.tenant.as_ref().map_or("", |t| t.as_str()).to_owned();
        let flat = values(
            self.run(
                &self.shared.scripts.topics,
                vec![self.prefix().to_owned(), start, stop, tenant],
            )
            .await?,
        );
        let total = flat.first().map_or(0, number) as usize;
        let items = flat
            .get(1..)
            .unwrap_or_default()
            .chunks_exact(5)
            .filter_map(|t| Some(topic_record(TopicName::from_stored(&text(&t[0]))?, &t[1..])))
            .collect();
        Ok(Paged {
            items,
            page: page.page,
            page_size: page.page_size,
            total,
        })
    }

    async fn join(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        let args = vec![
            self.prefix().to_owned(),
            topic.to_string(),
            connection.node.to_string(),
            connection.id.to_string(),
        ];
        self.run(&self.shared.scripts.join, args).await.map(|_| ())
    }

    async fn leave(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        let args = vec![
            self.prefix().to_owned(),
            topic.to_string(),
            connection.node.to_string(),
            connection.id.to_string(),
            self.grace_ms(),
        ];
        self.run(&self.shared.scripts.leave, args).await.map(|_| ())
    }

    async fn live(&self, topics: &TopicList) -> Result<Vec<TopicName>, StoreError> {
        let mut args = vec![self.prefix().to_owned()];
        args.extend(topics.iter().map(TopicName::to_string));
        let flags = values(self.run(&self.shared.scripts.live, args).await?);
        Ok(topics
            .iter()
            .zip(flags)
            .filter(|(_, live)| live.as_i64() == Some(1))
            .map(|(topic, _)| topic.clone())
            .collect())
    }

    async fn append(
        &self,
        topics: &TopicList,
        event: &Arc<Event>,
    ) -> Result<Vec<Arc<TopicEvent>>, StoreError> {
        let mut args = vec![
            self.prefix().to_owned(),
            self.shared.config.history.to_string(),
            encode_event(event),
            epoch_candidate(),
            event.id.to_string(),
            unix_millis().to_string(),
        ];
        args.extend(topics.iter().map(TopicName::to_string));
        let reply = self.run(&self.shared.scripts.append, args).await?;
        Ok(appended(reply, event))
    }

    /// One script per [`APPEND_CHUNK`] events, each chunk sent when the one before it was
    /// answered; the first chunk that fails ends the batch, each of its events answered
    /// with the error (some of them may have landed: their retries are answered as such).
    async fn append_all(
        &self,
        events: &[(TopicList, Arc<Event>)],
    ) -> Vec<Result<Vec<Arc<TopicEvent>>, StoreError>> {
        let mut answers = Vec::with_capacity(events.len());
        for chunk in events.chunks(APPEND_CHUNK) {
            let mut args = vec![
                self.prefix().to_owned(),
                self.shared.config.history.to_string(),
                epoch_candidate(),
                unix_millis().to_string(),
            ];
            for (topics, event) in chunk {
                args.push(topics.len().to_string());
                args.push(encode_event(event));
                args.push(event.id.to_string());
                args.extend(topics.iter().map(TopicName::to_string));
            }
            match step_replies(
                self.run(&self.shared.scripts.append_all, args).await,
                chunk.len(),
            ) {
                Ok(replies) => answers.extend(
                    replies
                        .into_iter()
                        .zip(chunk)
                        .map(|(reply, (_, event))| Ok(appended(reply, event))),
                ),
                Err(failed) => {
                    answers.extend(failed);
                    break;
                }
            }
        }
        answers
    }

    async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, StoreError> {
        let limit = limit.clamp(1, i32::MAX as usize).to_string();
        let args = vec![self.prefix().to_owned(), topic.to_string(), limit];
        let mut flat = values(self.run(&self.shared.scripts.tail, args).await?).into_iter();
        if flat.next().as_ref().map(number) != Some(1) {
            return Ok(None);
        }
        // The tail is for reading, not resuming: its events carry no epoch of their own.
        Ok(Some(
            flat.filter_map(|entry| {
                entry
                    .as_bytes()
                    .and_then(|e| parse_history(topic, 0, e))
                    .map(Arc::new)
            })
            .collect(),
        ))
    }

    async fn read_since(
        &self,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> Result<HistoryRead, StoreError> {
        let mut args = vec![
            self.prefix().to_owned(),
            last_event_id.to_string(),
            epoch_candidate(),
        ];
        args.extend(topics.iter().map(TopicName::to_string));
        let mut flat = values(self.run(&self.shared.scripts.read_since, args).await?).into_iter();
        let epoch = epoch_number(&flat.next().as_ref().map(text).unwrap_or_default());
        let topics = flat
            .filter_map(|topic| parse_topic_history(epoch, topic))
            .collect();
        Ok(HistoryRead { epoch, topics })
    }

    async fn revoke_token(&self, id: &str, until: u64) -> Result<(), StoreError> {
        let ttl = until.saturating_sub(unix_millis()).to_string();
        let args = vec![self.prefix().to_owned(), id.to_owned(), ttl];
        self.run(&self.shared.scripts.revoke, args)
            .await
            .map(|_| ())
    }

    async fn token_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let key = format!("{}revoked:{id}", self.prefix());
        let exists: i64 = fred::interfaces::KeysInterface::exists(&self.shared.client, key)
            .await
            .map_err(unavailable)?;
        Ok(exists == 1)
    }

    async fn ready(&self) -> bool {
        self.shared.client.is_connected()
            && self.shared.healthy.load(Relaxed)
            && self.shared.listening.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_hears_none_of_its_markers_is_deaf() {
        let mut hearing = Hearing::default();
        assert!(!hearing.beat(1), "heard one");
        for _ in 0..DEAF_AFTER_BEATS {
            assert!(
                !hearing.beat(1),
                "a few quiet beats are a slow delivery task"
            );
        }
        assert!(hearing.beat(1), "then deaf");
        assert!(
            !hearing.beat(1),
            "counting starts again after the reconnect"
        );
        assert!(!hearing.beat(2), "heard again");
        assert_eq!(hearing.deaf_beats, 0);
    }

    #[test]
    fn events_round_trip_through_their_wire_form() {
        let event = Event {
            id: EventId::parse(b"e 1").unwrap(),
            event_type: Some(EventType::parse(b"update").unwrap()),
            data: EventData::parse(Bytes::from("line one\nline two\n\n")).unwrap(),
            published_at: 1234,
        };
        let blob = encode_event(&event);
        let back = decode_event(blob.as_bytes()).unwrap();
        assert_eq!(
            (back.id, back.event_type, back.data, back.published_at),
            (
                event.id.clone(),
                event.event_type.clone(),
                event.data.clone(),
                1234
            )
        );
        let payload = format!("42 7 3\na 3\nb/c 9\n\n{blob}");
        let delivery = parse_delivery(payload.as_bytes()).unwrap();
        assert_eq!(
            (delivery.epoch.as_str(), delivery.position, delivery.number),
            ("42", 7, 3)
        );
        assert_eq!(
            delivery.routes,
            [
                (TopicName::parse("a").unwrap(), 3),
                (TopicName::parse("b/c").unwrap(), 9)
            ]
        );
        assert_eq!(
            delivery
                .event
                .map(|e| e.data.as_str().to_owned())
                .as_deref(),
            Some("line one\nline two\n\n")
        );
        let marker = parse_delivery(b"42 0 4\n").unwrap();
        assert_eq!((marker.number, marker.routes.len()), (4, 0));
        assert!(marker.event.is_none());
        let entry = format!("3 7 {blob}");
        let stored = parse_history(&TopicName::parse("a").unwrap(), 42, entry.as_bytes()).unwrap();
        assert_eq!((stored.seq, stored.epoch, stored.position), (3, 42, 7));
        assert!(parse_delivery(b"garbage").is_none());
        assert!(decode_event(b"id\n\nnot-a-number\ndata").is_none());
    }
}
