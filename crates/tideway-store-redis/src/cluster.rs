//! The Redis Cluster mode (`--redis-cluster`): the same store on a sharded Redis.
//!
//! Each topic is its own object on its own shard: its keys share the hash tag
//! `{t:<topic>}`, every topic message is one script on that slot, and the topic is its own
//! sequencer ([`Order::PerTopic`]): its events are numbered within the topic's epoch and
//! published, inside the append script, on the topic's sharded channel (`SPUBLISH`). A
//! node subscribes (`SSUBSCRIBE`) to the channels of the topics its connections follow,
//! so a publish reaches exactly the nodes that follow the topic, with no cluster-wide
//! fan-out. The directory (nodes, connections, the index of live topics) lives under the
//! `{dir}` tag and is never on the publish path.
//!
//! Continuity, per topic: a node expects each topic's next message to carry the next
//! sequence number of the same epoch. A skipped number (a message lost while the
//! subscription reconnected, a lagging buffer) is filled from the topic's history
//! ([`Inbox::recover_topic`]); a number that goes back (a failover that lost writes) or a
//! hole history cannot fill ends that topic's streams so clients resume; another epoch
//! (the topic's keys started again) reaches the subscriptions, which tell their clients.
//! After the subscription connection reconnects, every local topic is checked the same
//! way, since a lost message is otherwise noticed only when the next one comes.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
};

use fred::{
    clients::SubscriberClient,
    prelude::{Client, ClientLike, Config, EventInterface, PubsubInterface, ServerConfig},
    types::{Value, scripts::Script},
};
use tideway_core::{
    ConnectionId, ConnectionRecord, Event, HistoryRead, Inbox, Interruption, NodeRecord, Order,
    Page, Paged, Store, StoreError, TopicEvent, TopicHistory, TopicRecord, spawn_heartbeat,
    unix_millis,
};
use tideway_protocol::{EventId, PrehashedMap, TopicList, TopicName};

use crate::{
    RedisConfig, clients, cluster_scripts::ClusterScripts, decode_event, encode_event,
    epoch_candidate, epoch_number, number, parse_connections, parse_nodes, range, step_replies,
    tenant_of, text, topic_record, unavailable, values,
};

/// The Redis Cluster store. Cloning bumps a reference count.
#[derive(Clone)]
pub struct RedisClusterStore {
    shared: Arc<Shared>,
}

struct Shared {
    config: RedisConfig,
    client: Client,
    subscriber: SubscriberClient,
    scripts: ClusterScripts,
    inbox: OnceLock<Inbox>,
    node: OnceLock<NodeRecord>,
    /// This node's connections, to register again after the directory lost them.
    mirror: Mutex<HashMap<ConnectionId, Arc<ConnectionRecord>>>,
    /// The topics this node's connections follow. A std mutex: one map operation per
    /// critical section, never across an await.
    local: Mutex<PrehashedMap<TopicName, Local>>,
    /// Held while a topic's channel is subscribed or unsubscribed, so the two never
    /// cross for one topic.
    listening: tokio::sync::Mutex<()>,
    /// Whether the last heartbeat reached the directory's shard.
    healthy: AtomicBool,
    /// Which primary serves which slots, as the last heartbeat saw it (a digest).
    layout: Mutex<Option<u64>>,
    /// Tells the delivery task to subscribe to every local topic again and catch up.
    recheck: Arc<tokio::sync::Notify>,
    /// What a topic's channel name starts with (`<prefix>{t:`), built once: delivery
    /// takes the topic out of every message's channel name.
    channel_start: String,
    /// The revocations channel (`<prefix>{dir}:revocations`), built once.
    revocations: String,
}

/// What a topic's channel name ends with, after the topic.
const CHANNEL_END: &str = "}:events";

/// One topic this node follows.
#[derive(Debug, Default)]
struct Local {
    /// This node's connections that joined it.
    connections: usize,
    /// Whether its channel is subscribed.
    subscribed: bool,
    /// The epoch and sequence number of the last of its events this node delivered.
    last: Option<(u64, u64)>,
    /// Messages of this epoch at or below this number were published before this node's
    /// first connection joined the topic: nobody here waits for them.
    joined_at: Option<(u64, u64)>,
    /// The numbers and ids of the newest events repairs delivered (at most
    /// [`RECOVERED`]): their own messages may still come and are skipped.
    recovered: std::collections::VecDeque<(u64, EventId)>,
}

/// Events delivered by repairs remembered per topic, to know their messages when they
/// come after all.
const RECOVERED: usize = 1024;

/// What to do with a topic's next message.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Deliver it.
    Deliver,
    /// Already delivered (by a repair), or published before anybody here joined.
    Skip,
    /// Messages before it went missing: read back what follows the last delivered.
    Hole { after: u64 },
    /// Its number goes back within the epoch: the shard lost writes (a failover).
    WentBack,
}

impl Local {
    /// The epoch and number the next message follows: the last delivered, or where the
    /// topic stood when this node's first connection joined it.
    fn baseline(&self) -> Option<(u64, u64)> {
        self.last.or(self.joined_at)
    }

    /// Where the message numbered `seq` in `epoch`, with id `id`, stands.
    fn verdict(&self, epoch: u64, seq: u64, id: &EventId) -> Verdict {
        if self
            .joined_at
            .is_some_and(|(e, s)| e == epoch && seq <= s && self.last.is_none())
        {
            return Verdict::Skip;
        }
        match self.baseline() {
            None => Verdict::Deliver,
            Some((last_epoch, _)) if last_epoch != epoch => Verdict::Deliver,
            Some((_, last)) if seq == last + 1 => Verdict::Deliver,
            Some((_, last)) if seq > last + 1 => Verdict::Hole { after: last },
            Some(_) if self.recovered.iter().any(|(s, i)| *s == seq && i == id) => Verdict::Skip,
            Some(_) => Verdict::WentBack,
        }
    }
}

impl RedisClusterStore {
    /// Connects to the cluster through its seed nodes (`config.url`: one or more
    /// `redis://[user:password@]host:port`, comma-separated); fails if none can be
    /// reached now.
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        if config.prefix.contains(['{', '}']) {
            return Err(StoreError::Unavailable(
                "a Redis Cluster key prefix cannot hold '{' or '}' (they would change which shard holds each key)".into(),
            ));
        }
        let seeds: Vec<&str> = config.url.split(',').map(str::trim).collect();
        let mut redis = crate::redis_config(seeds[0], config.ca_cert.as_deref())?;
        let mut hosts = Vec::new();
        for seed in &seeds {
            let one = Config::from_url(seed).map_err(unavailable)?;
            hosts.extend(
                one.server
                    .hosts()
                    .into_iter()
                    .map(|s| (s.host.to_string(), s.port)),
            );
        }
        redis.server = ServerConfig::new_clustered(hosts);
        let (client, subscriber) = clients(redis).await?;
        let channel_start = format!("{}{{t:", config.prefix);
        let revocations = format!("{}{{dir}}:revocations", config.prefix);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                client,
                subscriber,
                scripts: ClusterScripts::default(),
                inbox: OnceLock::new(),
                node: OnceLock::new(),
                mirror: Mutex::new(HashMap::new()),
                local: Mutex::new(PrehashedMap::new()),
                listening: tokio::sync::Mutex::new(()),
                healthy: AtomicBool::new(true),
                layout: Mutex::new(None),
                recheck: Arc::new(tokio::sync::Notify::new()),
                channel_start,
                revocations,
            }),
        })
    }

    fn prefix(&self) -> &str {
        &self.shared.config.prefix
    }

    fn node_id(&self) -> &str {
        self.shared.node.get().map_or("", |node| &node.id)
    }

    fn grace_ms(&self) -> String {
        self.shared.config.topic_grace.as_millis().to_string()
    }

    /// The topic's sharded channel: `<prefix>{t:<topic>}:events`.
    fn channel(&self, topic: &TopicName) -> String {
        format!("{}{topic}{CHANNEL_END}", self.shared.channel_start)
    }

    /// The topic whose channel is `channel`, if it is a topic's.
    fn topic_of(&self, channel: &str) -> Option<TopicName> {
        channel
            .strip_prefix(self.shared.channel_start.as_str())
            .and_then(|rest| rest.strip_suffix(CHANNEL_END))
            .and_then(TopicName::from_stored)
    }

    fn revocations(&self) -> &str {
        &self.shared.revocations
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Arc<ConnectionRecord>>> {
        // One map operation per critical section: a poisoned lock holds a whole map.
        self.shared
            .mirror
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, PrehashedMap<TopicName, Local>> {
        // As above.
        self.shared
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a topic script on the topic's shard: `ARGV` is the prefix, the topic, `args`.
    async fn topic(
        &self,
        script: &Script,
        topic: &TopicName,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        let routing = format!("{}{{t:{topic}}}:meta", self.prefix());
        let mut argv = vec![self.prefix().to_owned(), topic.to_string()];
        argv.extend(args);
        script
            .evalsha_with_reload::<Value, _, _>(&self.shared.client, vec![routing], argv)
            .await
            .map_err(unavailable)
    }

    /// Runs a directory script on the directory's shard: `ARGV` is the prefix, `args`.
    async fn directory(&self, script: &Script, args: Vec<String>) -> Result<Value, StoreError> {
        let routing = format!("{}{{dir}}:nodes", self.prefix());
        let mut argv = vec![self.prefix().to_owned()];
        argv.extend(args);
        script
            .evalsha_with_reload::<Value, _, _>(&self.shared.client, vec![routing], argv)
            .await
            .map_err(unavailable)
    }

    /// Records in the directory's index what became of `topic` for `node` after a leave
    /// or a node's removal (the reply of a script ending in `orphan_or_forget`).
    async fn index_after(
        &self,
        node: &str,
        topic: &TopicName,
        state: &[Value],
    ) -> Result<(), StoreError> {
        let mut args = vec![node.to_owned(), topic.to_string()];
        match state.first().map(number) {
            Some(1) => {
                args.push("orphan".into());
                args.push(state.get(1).map_or(0, number).to_string());
            }
            Some(2) => args.push("gone".into()),
            _ => args.push("unfollow".into()),
        }
        self.directory(&self.shared.scripts.directory.index, args)
            .await
            .map(|_| ())
    }

    /// Subscribes to `topic`'s channel unless this node already does, counting one more
    /// local connection on it. Listening comes first: once the topic counts this node,
    /// its events are published, and a channel nobody hears drops them.
    async fn follow(&self, topic: &TopicName) -> Result<bool, StoreError> {
        {
            let mut local = self.local();
            let entry = local.entry(topic.clone()).or_default();
            entry.connections += 1;
            if entry.subscribed {
                return Ok(false);
            }
        }
        let _guard = self.shared.listening.lock().await;
        if self.local().get(topic).is_some_and(|l| l.subscribed) {
            return Ok(false);
        }
        if let Err(err) = self.shared.subscriber.ssubscribe(self.channel(topic)).await {
            self.unfollow(topic);
            return Err(unavailable(err));
        }
        if let Some(entry) = self.local().get_mut(topic) {
            entry.subscribed = true;
        }
        Ok(true)
    }

    /// Counts one local connection less on `topic`; its channel is unsubscribed by the
    /// heartbeat once no connection has followed it for a whole beat.
    fn unfollow(&self, topic: &TopicName) {
        if let Some(entry) = self.local().get_mut(topic) {
            entry.connections = entry.connections.saturating_sub(1);
        }
    }

    /// Unsubscribes the channels of topics no local connection follows. Each is marked
    /// unsubscribed first, under the lock that `follow` takes to subscribe: a connection
    /// joining meanwhile waits, then subscribes again.
    async fn unsubscribe_idle(&self) {
        let _guard = self.shared.listening.lock().await;
        let idle: Vec<TopicName> = {
            let mut local = self.local();
            local
                .iter_mut()
                .filter(|(_, l)| l.connections == 0 && l.subscribed)
                .map(|(t, l)| {
                    l.subscribed = false;
                    t.clone()
                })
                .collect()
        };
        for topic in idle {
            if let Err(err) = self
                .shared
                .subscriber
                .sunsubscribe(self.channel(&topic))
                .await
            {
                // Its messages keep coming and are dropped; nobody here wants them.
                tracing::debug!(topic = %topic, error = %err, "unsubscribing failed");
            }
        }
        self.local()
            .retain(|_, l| l.connections > 0 || l.subscribed);
    }

    /// Refreshes this node's registration (registering its connections again when the
    /// directory had forgotten it), then removes dead nodes and expired topics.
    async fn heartbeat(&self) -> Result<(), StoreError> {
        let Some(node) = self.shared.node.get() else {
            return Ok(());
        };
        let existed = self.beat(node).await?;
        if !existed {
            tracing::warn!(node = %node.id, "the directory did not know this node (restart, outage or lapsed registration): registering its connections again");
            self.restore(node).await?;
        }
        self.reap(None).await?;
        self.unsubscribe_idle().await;
        self.watch_layout().await?;
        Ok(())
    }

    /// Asks the cluster which primary serves which slots; when that changed since the
    /// last beat (a reshard, a failover), has the delivery task subscribe again and catch
    /// up. Redis unsubscribes a node from the channels of a slot that moves away (fred
    /// does not pass that on), and a node whose own commands never touch the moved slot
    /// would not notice otherwise.
    async fn watch_layout(&self) -> Result<(), StoreError> {
        let command = fred::types::CustomCommand::new_static(
            "CLUSTER",
            fred::types::ClusterHash::Random,
            false,
        );
        let slots: Value = self
            .shared
            .client
            .custom(command, vec!["SLOTS"])
            .await
            .map_err(unavailable)?;
        let digest = layout_digest(slots);
        let changed = {
            let mut layout = self
                .shared
                .layout
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let changed = layout.is_some_and(|before| before != digest);
            *layout = Some(digest);
            changed
        };
        if changed {
            tracing::warn!(
                "the Redis Cluster's slots moved: subscribing to this node's topics again and reading back what they may have missed"
            );
            self.shared.recheck.notify_one();
        }
        Ok(())
    }

    async fn beat(&self, node: &NodeRecord) -> Result<bool, StoreError> {
        let ttl = self.shared.config.node_ttl.as_millis() as u64;
        let args = vec![
            node.id.to_string(),
            ttl.to_string(),
            node.hostname.clone(),
            node.advertise_host.clone(),
            node.started_at.to_string(),
        ];
        let reply = values(
            self.directory(&self.shared.scripts.directory.heartbeat, args)
                .await?,
        );
        Ok(reply.first().map(number) == Some(1))
    }

    /// Registers this node's connections and their topics again. Joining again changes
    /// nothing where the topic kept them; a topic that started again meanwhile has a
    /// new epoch, and its subscriptions are told by its next event.
    async fn restore(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let connections: Vec<Arc<ConnectionRecord>> = self.mirror().values().cloned().collect();
        for connection in &connections {
            self.add(connection).await?;
            for topic in &connection.topics {
                self.index(&node.id, topic, "follow").await?;
                self.topic(
                    &self.shared.scripts.topic.join,
                    topic,
                    vec![
                        node.id.to_string(),
                        connection.id.to_string(),
                        epoch_candidate(),
                    ],
                )
                .await?;
            }
            self.beat(node).await?;
        }
        tracing::info!(node = %node.id, connections = connections.len(), "registered again");
        Ok(())
    }

    async fn index(&self, node: &str, topic: &TopicName, what: &str) -> Result<(), StoreError> {
        let args = vec![node.to_owned(), topic.to_string(), what.to_owned()];
        self.directory(&self.shared.scripts.directory.index, args)
            .await
            .map(|_| ())
    }

    async fn add(&self, connection: &ConnectionRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(connection).unwrap_or_default();
        let args = vec![
            connection.id.to_string(),
            connection.node.to_string(),
            json,
            tenant_of(connection).to_owned(),
        ];
        self.directory(&self.shared.scripts.directory.add_connection, args)
            .await
            .map(|_| ())
    }

    /// Removes dead nodes (or `also`, a node clearing its own leftovers) from their topics
    /// and the directory, and forgets topics whose grace ran out. Each topic is changed
    /// on its own shard before the directory forgets the node, so a reap cut short is
    /// done again by the next one.
    async fn reap(&self, also: Option<&str>) -> Result<(), StoreError> {
        let mut args = Vec::new();
        args.extend(also.map(str::to_owned));
        let reply = values(
            self.directory(&self.shared.scripts.directory.dead, args)
                .await?,
        );
        let mut parts = reply.into_iter();
        let dead = parts.next().map(values).unwrap_or_default();
        let expired = parts.next().map(values).unwrap_or_default();
        for entry in dead {
            let mut entry = values(entry).into_iter();
            let node = entry.next().as_ref().map(text).unwrap_or_default();
            for topic in entry.next().map(values).unwrap_or_default() {
                let Some(topic) = TopicName::from_stored(&text(&topic)) else {
                    continue;
                };
                let state = values(
                    self.topic(
                        &self.shared.scripts.topic.drop_node,
                        &topic,
                        vec![node.clone(), self.grace_ms()],
                    )
                    .await?,
                );
                self.index_after(&node, &topic, &state).await?;
            }
            self.directory(
                &self.shared.scripts.directory.forget_node,
                vec![node.clone()],
            )
            .await?;
            tracing::info!(node = %node, "removed a node whose heartbeat stopped");
        }
        for topic in expired {
            let Some(topic) = TopicName::from_stored(&text(&topic)) else {
                continue;
            };
            let gone = self
                .topic(&self.shared.scripts.topic.sweep, &topic, Vec::new())
                .await?;
            let what = if number(&gone) == 1 { "gone" } else { "follow" };
            // A topic that lives again is scored 0 again by `follow` (for no node: its
            // joins recorded their nodes).
            self.index("", &topic, what).await?;
        }
        Ok(())
    }

    /// Hands a message of a topic's channel to the inbox, after filling (or telling
    /// subscribers of) any hole before it.
    async fn deliver(&self, channel: &str, payload: &[u8]) {
        let Some(inbox) = self.shared.inbox.get() else {
            return;
        };
        let Some(topic) = self.topic_of(channel) else {
            tracing::warn!(channel, "a message on an unknown channel");
            return;
        };
        let Some((epoch, seq, event)) = parse_message(payload) else {
            tracing::warn!(topic = %topic, "an unreadable message from Redis");
            inbox.interrupt_topics(Interruption::DeliveryLost, std::slice::from_ref(&topic));
            return;
        };
        let verdict = match self.local().get(&topic) {
            Some(local) => local.verdict(epoch, seq, &event.id),
            // Nobody here follows it any more (its channel is going).
            None => return,
        };
        match verdict {
            Verdict::Skip => return,
            Verdict::Deliver => {}
            Verdict::WentBack => {
                tracing::warn!(topic = %topic, seq, "a topic's sequence went back (a failover lost writes): its streams end so clients resume");
                inbox.interrupt_topics(Interruption::DeliveryLost, std::slice::from_ref(&topic));
            }
            Verdict::Hole { after } => {
                self.repair(inbox, &topic, epoch, after).await;
                let caught_up = self
                    .local()
                    .get(&topic)
                    .and_then(|l| l.last)
                    .is_some_and(|(e, s)| e == epoch && s >= seq);
                if caught_up {
                    return;
                }
            }
        }
        if let Some(local) = self.local().get_mut(&topic) {
            local.last = Some((epoch, seq));
        }
        let event = TopicEvent::new(topic, seq, epoch, seq, Arc::new(event));
        drop(inbox.deliver(&[Arc::new(event)]));
    }

    /// Reads back what `topic`'s channel brought this node after `after` (in `epoch`) and
    /// delivers it, or tells its subscribers where history cannot fill the hole.
    async fn repair(&self, inbox: &Inbox, topic: &TopicName, epoch: u64, after: u64) {
        tracing::warn!(topic = %topic, after, "messages of a topic went missing; reading them back from history");
        let read = self
            .topic(
                &self.shared.scripts.topic.read_after,
                topic,
                vec![after.to_string()],
            )
            .await;
        let history = match read {
            Ok(reply) => parse_history_read(topic, reply).filter(|h| h.epoch == epoch),
            Err(err) => {
                tracing::warn!(error = %err, "could not read the hole back from Redis");
                None
            }
        };
        let Some(history) = history else {
            inbox.interrupt_topics(Interruption::DeliveryLost, std::slice::from_ref(topic));
            return;
        };
        inbox.recover_topic(after, &history);
        if let Some(local) = self.local().get_mut(topic) {
            for event in &history.events {
                if event.seq > after {
                    local
                        .recovered
                        .push_back((event.seq, event.event.id.clone()));
                }
            }
            while local.recovered.len() > RECOVERED {
                local.recovered.pop_front();
            }
            if let Some(newest) = history.events.last() {
                local.last = Some((epoch, newest.seq));
            }
        }
    }

    /// After a subscription connection came back: subscribes to every local topic's
    /// channel (and the revocations') again, then catches up.
    async fn resubscribe(&self) {
        let _guard = self.shared.listening.lock().await;
        let mut channels: Vec<String> = self
            .local()
            .iter()
            .filter(|(_, l)| l.subscribed)
            .map(|(t, _)| self.channel(t))
            .collect();
        channels.push(self.revocations().to_owned());
        // One command per channel: each goes to the shard that owns its slot.
        for channel in channels {
            if let Err(err) = self.shared.subscriber.ssubscribe(channel.clone()).await {
                tracing::warn!(channel, error = %err, "subscribing again failed");
            }
        }
    }

    /// Reads every local topic back from what this node last delivered of it: after a
    /// subscription connection came back or the delivery buffer overflowed, since a
    /// message lost meanwhile would show only when the topic's next one comes.
    async fn catch_up(&self) {
        let Some(inbox) = self.shared.inbox.get() else {
            return;
        };
        let topics: Vec<(TopicName, (u64, u64))> = self
            .local()
            .iter()
            .filter_map(|(t, l)| Some((t.clone(), l.baseline()?)))
            .collect();
        for (topic, (epoch, after)) in topics {
            self.repair(inbox, &topic, epoch, after).await;
        }
    }
}

/// A digest of `CLUSTER SLOTS`: each slot range with the address of its primary.
fn layout_digest(slots: Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut ranges: Vec<(u64, u64, String)> = values(slots)
        .into_iter()
        .filter_map(|range| {
            let mut fields = values(range).into_iter();
            let start = number(&fields.next()?);
            let end = number(&fields.next()?);
            let primary = values(fields.next()?);
            let address = format!(
                "{}:{}",
                primary.first().map(text).unwrap_or_default(),
                primary.get(1).map_or(0, number)
            );
            Some((start, end, address))
        })
        .collect();
    ranges.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ranges.hash(&mut hasher);
    hasher.finish()
}

/// `epoch seq shared \n event`: a topic's channel message, as the append script sends it.
fn parse_message(payload: &[u8]) -> Option<(u64, u64, Event)> {
    let end = payload.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&payload[..end]).ok()?;
    let mut fields = header.split(' ');
    let epoch = epoch_number(fields.next()?);
    let seq = fields.next()?.parse().ok()?;
    Some((epoch, seq, decode_event(&payload[end + 1..])?))
}

/// `seq shared event`: a history entry of the cluster mode, with the other topics of its
/// publish.
fn parse_entry(
    topic: &TopicName,
    epoch: u64,
    entry: &[u8],
) -> Option<(TopicEvent, Vec<TopicName>)> {
    let mut parts = entry.splitn(3, |&b| b == b' ');
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let shared = std::str::from_utf8(parts.next()?).ok()?;
    let event = decode_event(parts.next()?)?;
    let shared = shared
        .split(',')
        .filter(|t| *t != "-")
        .filter_map(TopicName::from_stored)
        .collect();
    Some((
        TopicEvent::new(topic.clone(), seq, epoch, seq, Arc::new(event)),
        shared,
    ))
}

fn parse_entries(topic: &TopicName, epoch: u64, entries: Value) -> Vec<Arc<TopicEvent>> {
    values(entries)
        .into_iter()
        .filter_map(|e| parse_entry(topic, epoch, e.as_bytes()?).map(|(e, _)| Arc::new(e)))
        .collect()
}

/// `{1, epoch, evictedThrough, head, entries}` (or `{0}`: not live), a repair's read.
fn parse_history_read(topic: &TopicName, reply: Value) -> Option<TopicHistory> {
    let mut fields = values(reply).into_iter();
    if fields.next().as_ref().map(number) != Some(1) {
        return None;
    }
    let epoch = epoch_number(&text(&fields.next()?));
    let evicted_through = number(&fields.next()?);
    let head = number(&fields.next()?);
    Some(TopicHistory {
        topic: topic.clone(),
        epoch,
        created_after: 0,
        evicted_through,
        head,
        matches: Vec::new(),
        shared_with: Vec::new(),
        events: parse_entries(topic, epoch, fields.next()?),
    })
}

/// The heartbeat and delivery tasks of a node; both end when the store is dropped.
fn spawn_tasks(store: &RedisClusterStore) {
    spawn_heartbeat(
        Arc::downgrade(&store.shared),
        store.shared.config.node_ttl / 5,
        "the Redis Cluster",
        |shared| &shared.healthy,
        |shared| async move { RedisClusterStore { shared }.heartbeat().await },
    );
    let weak: Weak<Shared> = Arc::downgrade(&store.shared);
    let mut messages = store.shared.subscriber.message_rx();
    let mut reconnects = store.shared.subscriber.reconnect_rx();
    // Its own handle: the task must not keep the store alive while it waits.
    let recheck = store.shared.recheck.clone();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            // One task for messages and catching up after a reconnect: a topic's events
            // are delivered by one task, in order.
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) => {
                        let Some(shared) = weak.upgrade() else { return };
                        let store = RedisClusterStore { shared };
                        let Some(bytes) = message.value.as_bytes() else {
                            tracing::warn!("a message from Redis had no bytes");
                            continue;
                        };
                        if *message.channel == *store.revocations() {
                            if let Some(inbox) = store.shared.inbox.get() {
                                inbox.revoke_token(&String::from_utf8_lossy(bytes));
                            }
                        } else {
                            store.deliver(&message.channel, bytes).await;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // Each topic's next message shows its hole, filled from history
                        // then; catching up now finds the quiet ones too.
                        tracing::error!(missed, "delivery fell behind the Redis Cluster; messages to this node were lost");
                        let Some(shared) = weak.upgrade() else { return };
                        RedisClusterStore { shared }.catch_up().await;
                    }
                    Err(RecvError::Closed) => return,
                },
                () = recheck.notified() => {
                    let Some(shared) = weak.upgrade() else { return };
                    let store = RedisClusterStore { shared };
                    store.resubscribe().await;
                    store.catch_up().await;
                }
                reconnect = reconnects.recv() => match reconnect {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        let Some(shared) = weak.upgrade() else { return };
                        let store = RedisClusterStore { shared };
                        store.resubscribe().await;
                        store.catch_up().await;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
}

impl Store for RedisClusterStore {
    const LIVE_IS_REMOTE: bool = true;
    const ORDER: Order = Order::PerTopic;

    fn attach(&self, inbox: Inbox) {
        // The first attach wins; a second would be a programming error of the caller.
        let _ = self.shared.inbox.set(inbox);
    }

    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        if self.shared.node.set(node.clone()).is_ok() {
            // fred's own resubscription sends a SUBSCRIBE with no channels when only
            // sharded ones are tracked, and fails: the delivery task subscribes again.
            self.shared
                .subscriber
                .ssubscribe(self.revocations().to_owned())
                .await
                .map_err(unavailable)?;
            // Clears what an earlier process with this node id left.
            self.reap(Some(&node.id)).await?;
            self.beat(node).await?;
            spawn_tasks(self);
            return Ok(());
        }
        self.beat(node).await.map(|_| ())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Ok(parse_nodes(
            self.directory(&self.shared.scripts.directory.nodes, Vec::new())
                .await?,
        ))
    }

    async fn add_connection(&self, connection: &Arc<ConnectionRecord>) -> Result<(), StoreError> {
        self.mirror()
            .insert(connection.id.clone(), connection.clone());
        self.add(connection).await
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        let removed = self.mirror().remove(id);
        let tenant = removed.as_deref().map_or("", tenant_of).to_owned();
        let args = vec![id.to_string(), self.node_id().to_owned(), tenant];
        self.directory(&self.shared.scripts.directory.remove_connection, args)
            .await
            .map(|_| ())
    }

    async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, StoreError> {
        let (start, stop) = range(&page);
        let tenant = page.tenant.as_ref().map_or("", |t| t.as_str()).to_owned();
        let reply = self
            .directory(
                &self.shared.scripts.directory.connections,
                vec![start, stop, tenant],
            )
            .await?;
        Ok(parse_connections(reply, &page))
    }

    async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, StoreError> {
        let (start, stop) = range(&page);
        let tenant = page.tenant.as_ref().map_or("", |t| t.as_str()).to_owned();
        let mut flat = values(
            self.directory(
                &self.shared.scripts.directory.topics,
                vec![start, stop, tenant],
            )
            .await?,
        )
        .into_iter();
        let total = flat.next().as_ref().map_or(0, number) as usize;
        let names: Vec<TopicName> = flat
            .filter_map(|n| TopicName::from_stored(&text(&n)))
            .collect();
        let infos = futures_util::future::try_join_all(
            names
                .iter()
                .map(|t| self.topic(&self.shared.scripts.topic.info, t, Vec::new())),
        )
        .await?;
        let items = names
            .into_iter()
            .zip(infos)
            .filter_map(|(name, info)| {
                let info = values(info);
                // Gone since the index was read: the next reap takes it out of the index.
                (info.len() == 4).then(|| topic_record(name, &info))
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
        let first = self.follow(topic).await?;
        let joined = async {
            // The directory first: a node that dies after it is taken out of the topic
            // by the reaper; one that died before it would stay in the topic forever.
            self.index(&connection.node, topic, "follow").await?;
            self.topic(
                &self.shared.scripts.topic.join,
                topic,
                vec![
                    connection.node.to_string(),
                    connection.id.to_string(),
                    epoch_candidate(),
                ],
            )
            .await
        }
        .await;
        let reply = match joined {
            Ok(reply) => values(reply),
            Err(err) => {
                self.unfollow(topic);
                return Err(err);
            }
        };
        if first {
            let epoch = epoch_number(&reply.get(1).map(text).unwrap_or_default());
            let seq = reply.get(2).map_or(0, number);
            if let Some(local) = self.local().get_mut(topic) {
                local.joined_at = Some((epoch, seq));
            }
        }
        Ok(())
    }

    async fn leave(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        self.unfollow(topic);
        let state = values(
            self.topic(
                &self.shared.scripts.topic.leave,
                topic,
                vec![
                    connection.node.to_string(),
                    self.grace_ms(),
                    connection.id.to_string(),
                ],
            )
            .await?,
        );
        if state.first().map(number) == Some(0) {
            self.index_after(&connection.node, topic, state.get(1..).unwrap_or_default())
                .await?;
        }
        Ok(())
    }

    async fn live(&self, topics: &TopicList) -> Result<Vec<TopicName>, StoreError> {
        let flags = futures_util::future::try_join_all(
            topics
                .iter()
                .map(|t| self.topic(&self.shared.scripts.topic.live, t, Vec::new())),
        )
        .await?;
        Ok(topics
            .iter()
            .zip(flags)
            .filter(|(_, live)| number(live) == 1)
            .map(|(topic, _)| topic.clone())
            .collect())
    }

    async fn append(
        &self,
        topics: &TopicList,
        event: &Arc<Event>,
    ) -> Result<Vec<Arc<TopicEvent>>, StoreError> {
        let blob = encode_event(event);
        let at = unix_millis().to_string();
        let keep = self.shared.config.history.to_string();
        let replies = futures_util::future::try_join_all(topics.iter().map(|topic| {
            let shared: Vec<&str> = topics
                .iter()
                .filter(|t| *t != topic)
                .map(TopicName::as_str)
                .collect();
            let shared = if shared.is_empty() {
                "-".to_owned()
            } else {
                shared.join(",")
            };
            self.topic(
                &self.shared.scripts.topic.append,
                topic,
                vec![
                    keep.clone(),
                    blob.clone(),
                    event.id.to_string(),
                    at.clone(),
                    shared,
                ],
            )
        }))
        .await?;
        Ok(topics
            .iter()
            .zip(replies)
            .filter_map(|(topic, reply)| topic_appended(topic, reply, event))
            .collect())
    }

    /// A batch's consecutive events to one topic alone (a queue of one topic replayed)
    /// go in one script per [`APPEND_CHUNK`](crate::APPEND_CHUNK) of them, on that
    /// topic's shard; any other event is appended as `append` does. One step after
    /// another, ending at the first that fails (every event of a failed script answered
    /// with its error).
    async fn append_all(
        &self,
        events: &[(TopicList, Arc<Event>)],
    ) -> Vec<Result<Vec<Arc<TopicEvent>>, StoreError>> {
        let mut answers = Vec::with_capacity(events.len());
        let mut rest = events;
        while let Some((topics, event)) = rest.first() {
            let run = one_topic_run(rest);
            let (step, after) = rest.split_at(run.max(1));
            rest = after;
            if run < 2 {
                let answer = self.append(topics, event).await;
                let failed = answer.is_err();
                answers.push(answer);
                if failed {
                    break;
                }
                continue;
            }
            let topic = &topics.names()[0];
            let mut args = vec![
                self.shared.config.history.to_string(),
                unix_millis().to_string(),
            ];
            for (_, event) in step {
                args.push(encode_event(event));
                args.push(event.id.to_string());
            }
            let reply = self
                .topic(&self.shared.scripts.topic.append_run, topic, args)
                .await;
            match step_replies(reply, step.len()) {
                Ok(replies) => {
                    answers.extend(replies.into_iter().zip(step).map(|(reply, (_, event))| {
                        Ok(topic_appended(topic, reply, event).into_iter().collect())
                    }));
                }
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
        let mut flat = values(
            self.topic(&self.shared.scripts.topic.tail, topic, vec![limit])
                .await?,
        )
        .into_iter();
        if flat.next().as_ref().map(number) != Some(1) {
            return Ok(None);
        }
        // The tail is for reading, not resuming: its events carry no epoch of their own.
        Ok(Some(
            flat.filter_map(|entry| {
                parse_entry(topic, 0, entry.as_bytes()?).map(|(e, _)| Arc::new(e))
            })
            .collect(),
        ))
    }

    async fn read_since(
        &self,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> Result<HistoryRead, StoreError> {
        let replies = futures_util::future::try_join_all(topics.iter().map(|topic| {
            self.topic(
                &self.shared.scripts.topic.read_since,
                topic,
                vec![last_event_id.to_string()],
            )
        }))
        .await?;
        let topics = topics
            .iter()
            .zip(replies)
            .filter_map(|(topic, reply)| {
                let mut fields = values(reply).into_iter();
                if fields.next().as_ref().map(number) != Some(1) {
                    return None;
                }
                let epoch = epoch_number(&text(&fields.next()?));
                let evicted_through = number(&fields.next()?);
                let head = number(&fields.next()?);
                let matches = values(fields.next()?).iter().map(number).collect();
                let shared_with = values(fields.next()?)
                    .iter()
                    .filter_map(|t| TopicName::from_stored(&text(t)))
                    .collect();
                Some(TopicHistory {
                    topic: topic.clone(),
                    epoch,
                    created_after: 0,
                    evicted_through,
                    head,
                    matches,
                    shared_with,
                    events: parse_entries(topic, epoch, fields.next()?),
                })
            })
            .collect();
        Ok(HistoryRead { epoch: 0, topics })
    }

    async fn revoke_token(&self, id: &str, until: u64) -> Result<(), StoreError> {
        let ttl = until.saturating_sub(unix_millis()).to_string();
        self.directory(
            &self.shared.scripts.directory.revoke,
            vec![id.to_owned(), ttl],
        )
        .await
        .map(|_| ())
    }

    async fn token_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let key = format!("{}{{dir}}:revoked:{id}", self.prefix());
        let exists: i64 = fred::interfaces::KeysInterface::exists(&self.shared.client, key)
            .await
            .map_err(unavailable)?;
        Ok(exists == 1)
    }

    async fn ready(&self) -> bool {
        self.shared.client.is_connected() && self.shared.healthy.load(Relaxed)
    }
}

/// How many of `events`, from the first, go to one and the same topic alone (at most
/// [`APPEND_CHUNK`](crate::APPEND_CHUNK)); 0 when the first goes to several topics.
fn one_topic_run(events: &[(TopicList, Arc<Event>)]) -> usize {
    let Some(((first, _), _)) = events.split_first() else {
        return 0;
    };
    if first.len() != 1 {
        return 0;
    }
    events
        .iter()
        .take(crate::APPEND_CHUNK)
        .take_while(|(topics, _)| topics.names() == first.names())
        .count()
}

/// What the topic's append script answered for `event`: its copy, or none when the topic
/// is not live.
fn topic_appended(topic: &TopicName, reply: Value, event: &Arc<Event>) -> Option<Arc<TopicEvent>> {
    let reply = values(reply);
    if reply.first().map(number).unwrap_or(0) == 0 {
        return None;
    }
    let epoch = epoch_number(&text(reply.get(1)?));
    let seq = number(reply.get(2)?);
    Some(Arc::new(TopicEvent::new(
        topic.clone(),
        seq,
        epoch,
        seq,
        event.clone(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> EventId {
        EventId::parse(text.as_bytes()).unwrap()
    }

    fn batch(lists: &[&str]) -> Vec<(TopicList, Arc<Event>)> {
        lists
            .iter()
            .enumerate()
            .map(|(n, list)| {
                let event = Event {
                    id: id(&format!("e{n}")),
                    event_type: None,
                    data: tideway_protocol::EventData::parse("x".into()).unwrap(),
                    published_at: 0,
                };
                (
                    TopicList::parse(list.as_bytes(), 8).unwrap(),
                    Arc::new(event),
                )
            })
            .collect()
    }

    #[test]
    fn a_run_is_the_first_events_to_one_topic_alone_at_most_100() {
        assert_eq!(one_topic_run(&batch(&[])), 0);
        assert_eq!(
            one_topic_run(&batch(&["a,b", "a", "a"])),
            0,
            "several topics"
        );
        assert_eq!(one_topic_run(&batch(&["a", "a", "b", "a"])), 2);
        assert_eq!(one_topic_run(&batch(&["a", "a,b"])), 1);
        assert_eq!(one_topic_run(&batch(&["a"; 100])), 100);
        assert_eq!(one_topic_run(&batch(&["a"; 101])), 100, "past 100 events");
    }

    #[test]
    fn a_topics_messages_are_delivered_skipped_or_repaired() {
        let mut local = Local::default();
        assert_eq!(
            local.verdict(7, 3, &id("a")),
            Verdict::Deliver,
            "the first sets the count"
        );
        local.last = Some((7, 3));
        assert_eq!(local.verdict(7, 4, &id("b")), Verdict::Deliver);
        assert_eq!(local.verdict(7, 6, &id("d")), Verdict::Hole { after: 3 });
        assert_eq!(
            local.verdict(9, 1, &id("x")),
            Verdict::Deliver,
            "another epoch is the subscriptions' to tell"
        );
        local.recovered = [(4, id("b")), (5, id("c"))].into();
        local.last = Some((7, 5));
        assert_eq!(
            local.verdict(7, 5, &id("c")),
            Verdict::Skip,
            "a repair delivered it"
        );
        assert_eq!(
            local.verdict(7, 5, &id("other")),
            Verdict::WentBack,
            "the same number with another event: writes were lost"
        );
        assert_eq!(local.verdict(7, 2, &id("z")), Verdict::WentBack);
        let joined = Local {
            joined_at: Some((7, 10)),
            ..Local::default()
        };
        assert_eq!(
            joined.verdict(7, 10, &id("old")),
            Verdict::Skip,
            "published before anybody here joined"
        );
        assert_eq!(joined.verdict(7, 11, &id("new")), Verdict::Deliver);
        assert_eq!(
            joined.verdict(7, 13, &id("later")),
            Verdict::Hole { after: 10 },
            "the first message after the join shows a hole as well"
        );
    }

    #[test]
    fn channel_messages_and_entries_parse() {
        let event = Event {
            id: id("e1"),
            event_type: None,
            data: tideway_protocol::EventData::parse(bytes::Bytes::from("x\ny")).unwrap(),
            published_at: 5,
        };
        let blob = encode_event(&event);
        let (epoch, seq, back) = parse_message(format!("42 7 a,b\n{blob}").as_bytes()).unwrap();
        assert_eq!((epoch, seq, back.data.as_str()), (42, 7, "x\ny"));
        let topic = TopicName::parse("t").unwrap();
        let (entry, shared) = parse_entry(&topic, 42, format!("7 a,b {blob}").as_bytes()).unwrap();
        assert_eq!((entry.seq, entry.position, entry.epoch), (7, 7, 42));
        assert_eq!(
            shared,
            [
                TopicName::parse("a").unwrap(),
                TopicName::parse("b").unwrap()
            ]
        );
        let (_, none) = parse_entry(&topic, 42, format!("8 - {blob}").as_bytes()).unwrap();
        assert!(none.is_empty());
        assert!(parse_message(b"garbage").is_none());
    }
}
