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
#![forbid(unsafe_code)]

mod scripts;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak, atomic::AtomicBool, atomic::Ordering::Relaxed,
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
    ConnectionId, ConnectionRecord, Event, Inbox, NodeRecord, Page, Paged, Store, StoreError,
    TopicEvent, TopicRecord, unix_millis,
};
use tideway_protocol::{EventData, EventId, EventType, TopicList, TopicName};

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
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "tideway:".to_owned(),
            history: 1000,
            topic_grace: Duration::ZERO,
            node_ttl: Duration::from_secs(5),
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
    mirror: Mutex<HashMap<ConnectionId, ConnectionRecord>>,
    /// Whether the last heartbeat reached Redis.
    healthy: AtomicBool,
}

fn unavailable(err: fred::error::Error) -> StoreError {
    StoreError::Unavailable(Box::new(err))
}

impl RedisStore {
    /// Connects to Redis; fails if it cannot be reached now. Later outages are retried
    /// forever in the background while requests fail fast.
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        let redis = Config::from_url(&config.url).map_err(unavailable)?;
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
            }),
        })
    }

    fn prefix(&self) -> &str {
        &self.shared.config.prefix
    }

    fn node_id(&self) -> &str {
        self.shared.node.get().map_or("", |node| &node.id)
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, ConnectionRecord>> {
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
        let existed = self.beat(node).await?;
        if !existed {
            tracing::warn!(node = %node.id, "Redis did not know this node (restart or outage): registering its connections again");
            self.resync(node).await?;
        }
        let now = unix_millis().to_string();
        self.run(
            &self.shared.scripts.reap,
            vec![self.prefix().to_owned(), now, self.grace_ms()],
        )
        .await?;
        Ok(())
    }

    async fn beat(&self, node: &NodeRecord) -> Result<bool, StoreError> {
        let ttl = self.shared.config.node_ttl.as_millis() as u64;
        let args = vec![
            self.prefix().to_owned(),
            node.id.to_string(),
            (unix_millis() + ttl).to_string(),
            ttl.to_string(),
            node.hostname.clone(),
            node.advertise_host.clone(),
            node.started_at.to_string(),
        ];
        let existed = self.run(&self.shared.scripts.heartbeat, args).await?;
        Ok(existed.as_i64() == Some(1))
    }

    async fn resync(&self, node: &NodeRecord) -> Result<(), StoreError> {
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
        let now = unix_millis().to_string();
        let args = vec![
            self.prefix().to_owned(),
            now,
            self.grace_ms(),
            node.id.to_string(),
        ];
        self.run(&self.shared.scripts.reap, args).await?;
        let connections: Vec<ConnectionRecord> = self.mirror().values().cloned().collect();
        for connection in &connections {
            self.add_connection(connection).await?;
            for topic in &connection.topics {
                self.join(topic, connection).await?;
            }
        }
        self.beat(node).await?;
        tracing::info!(node = %node.id, connections = connections.len(), "registered again");
        Ok(())
    }

    /// Delivers what arrives on this node's channel to its inbox.
    fn deliver(&self, payload: &[u8]) {
        let Some(inbox) = self.shared.inbox.get() else {
            return;
        };
        let Some(delivery) = parse_delivery(payload) else {
            tracing::warn!("dropped an unreadable message from Redis");
            return;
        };
        let event = Arc::new(delivery.event);
        for (topic, seq) in delivery.routes {
            let delivered = TopicEvent::new(topic, seq, delivery.position, event.clone());
            inbox.deliver(&Arc::new(delivered));
        }
    }
}

/// The heartbeat and delivery tasks of a node; both end when the store is dropped.
fn spawn_tasks(store: &RedisStore) {
    let weak: Weak<Shared> = Arc::downgrade(&store.shared);
    let period = store.shared.config.node_ttl / 5;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(50)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            let store = RedisStore { shared };
            let healthy = match store.heartbeat().await {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(error = %err, "heartbeat to Redis failed");
                    false
                }
            };
            let was = store.shared.healthy.swap(healthy, Relaxed);
            if was != healthy {
                tracing::info!(healthy, "Redis reachability changed");
            }
        }
    });
    let weak: Weak<Shared> = Arc::downgrade(&store.shared);
    let mut messages = store.shared.subscriber.message_rx();
    tokio::spawn(async move {
        loop {
            match messages.recv().await {
                Ok(message) => {
                    let Some(shared) = weak.upgrade() else { return };
                    let store = RedisStore { shared };
                    let revocation = message.channel.ends_with("revocations");
                    match (message.value.as_bytes(), store.shared.inbox.get()) {
                        (Some(id), Some(inbox)) if revocation => {
                            inbox.revoke_token(&String::from_utf8_lossy(id));
                        }
                        (Some(payload), _) => store.deliver(payload),
                        (None, _) => tracing::warn!("a message from Redis had no bytes"),
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::error!(
                        missed,
                        "delivery fell behind Redis; events were lost on this node"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// `id \n event type \n published at \n data`: the event as scripts store and send it.
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
    position: u64,
    /// Each topic of this node the event was appended to, with its sequence number.
    routes: Vec<(TopicName, u64)>,
    event: Event,
}

/// `position \n topic seq \n ... \n\n event`, as the append script publishes it.
fn parse_delivery(payload: &[u8]) -> Option<Delivery> {
    let split = payload.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&payload[..split]).ok()?;
    let mut lines = head.lines();
    let position = lines.next()?.parse().ok()?;
    let routes = lines
        .map(|line| {
            let (topic, seq) = line.split_once(' ')?;
            Some((TopicName::from_stored(topic)?, seq.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Delivery {
        position,
        routes,
        event: decode_event(&payload[split + 2..])?,
    })
}

/// `seq position event`, a history entry.
fn parse_history(topic: &TopicName, entry: &[u8]) -> Option<TopicEvent> {
    let mut parts = entry.splitn(3, |&b| b == b' ');
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let position = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let event = decode_event(parts.next()?)?;
    Some(TopicEvent::new(
        topic.clone(),
        seq,
        position,
        Arc::new(event),
    ))
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
            self.resync(node).await?;
            spawn_tasks(self);
            return Ok(());
        }
        self.beat(node).await.map(|_| ())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let now = unix_millis().to_string();
        let flat = values(
            self.run(
                &self.shared.scripts.nodes,
                vec![self.prefix().to_owned(), now],
            )
            .await?,
        );
        Ok(flat
            .chunks_exact(5)
            .map(|n| NodeRecord {
                id: text(&n[0]).into(),
                hostname: text(&n[1]),
                advertise_host: text(&n[2]),
                started_at: number(&n[3]),
                connections: number(&n[4]) as usize,
            })
            .collect())
    }

    async fn add_connection(&self, connection: &ConnectionRecord) -> Result<(), StoreError> {
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
        let tenant = removed.as_ref().map_or("", tenant_of).to_owned();
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
        let mut flat = values(
            self.run(
                &self.shared.scripts.connections,
                vec![self.prefix().to_owned(), start, stop, tenant],
            )
            .await?,
        )
        .into_iter();
        let total = flat.next().as_ref().map_or(0, number) as usize;
        let items = flat
            .filter_map(|v| v.as_str().and_then(|json| serde_json::from_str(&json).ok()))
            .collect();
        Ok(Paged {
            items,
            page: page.page,
            page_size: page.page_size,
            total,
        })
    }

    async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, StoreError> {
        let (start, stop) = range(&page);
        let tenant = page.tenant.as_ref().map_or("", |t| t.as_str()).to_owned();
        let now = unix_millis().to_string();
        let flat = values(
            self.run(
                &self.shared.scripts.topics,
                vec![self.prefix().to_owned(), now, start, stop, tenant],
            )
            .await?,
        );
        let total = flat.first().map_or(0, number) as usize;
        let items = flat
            .get(1..)
            .unwrap_or_default()
            .chunks_exact(5)
            .filter_map(|t| {
                Some(TopicRecord {
                    name: TopicName::from_stored(&text(&t[0]))?,
                    connections: number(&t[1]) as usize,
                    events: number(&t[2]),
                    created_at: number(&t[3]),
                    last_event_at: text(&t[4]).parse().ok(),
                })
            })
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
            unix_millis().to_string(),
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
            unix_millis().to_string(),
            self.grace_ms(),
        ];
        self.run(&self.shared.scripts.leave, args).await.map(|_| ())
    }

    async fn live(&self, topics: &TopicList) -> Result<Vec<TopicName>, StoreError> {
        let mut args = vec![self.prefix().to_owned(), unix_millis().to_string()];
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
            unix_millis().to_string(),
            self.shared.config.history.to_string(),
            encode_event(event),
        ];
        args.extend(topics.iter().map(TopicName::to_string));
        let flat = values(self.run(&self.shared.scripts.append, args).await?);
        let position = flat.first().map_or(0, number);
        Ok(flat
            .get(1..)
            .unwrap_or_default()
            .chunks_exact(2)
            .filter_map(|pair| {
                let topic = TopicName::from_stored(&text(&pair[0]))?;
                Some(Arc::new(TopicEvent::new(
                    topic,
                    number(&pair[1]),
                    position,
                    event.clone(),
                )))
            })
            .collect())
    }

    async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, StoreError> {
        let limit = limit.clamp(1, i32::MAX as usize).to_string();
        let args = vec![
            self.prefix().to_owned(),
            unix_millis().to_string(),
            topic.to_string(),
            limit,
        ];
        let mut flat = values(self.run(&self.shared.scripts.tail, args).await?).into_iter();
        if flat.next().as_ref().map(number) != Some(1) {
            return Ok(None);
        }
        Ok(Some(
            flat.filter_map(|entry| {
                entry
                    .as_bytes()
                    .and_then(|e| parse_history(topic, e))
                    .map(Arc::new)
            })
            .collect(),
        ))
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
        self.shared.client.is_connected() && self.shared.healthy.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let payload = format!("7\na 3\nb/c 9\n\n{blob}");
        let delivery = parse_delivery(payload.as_bytes()).unwrap();
        assert_eq!(delivery.position, 7);
        assert_eq!(
            delivery.routes,
            [
                (TopicName::parse("a").unwrap(), 3),
                (TopicName::parse("b/c").unwrap(), 9)
            ]
        );
        assert_eq!(delivery.event.data.as_str(), "line one\nline two\n\n");
        let entry = format!("3 7 {blob}");
        let stored = parse_history(&TopicName::parse("a").unwrap(), entry.as_bytes()).unwrap();
        assert_eq!((stored.seq, stored.position), (3, 7));
        assert!(parse_delivery(b"garbage").is_none());
        assert!(decode_event(b"id\n\nnot-a-number\ndata").is_none());
    }
}
