//! The store trait: the gateway's shared state, shaped after Durable Objects.
//!
//! A Durable Object is a single-threaded object addressed by name that owns its state,
//! handles one message at a time and gives consistent reads. The store's state is split
//! the same way, so each adapter maps it onto what it has:
//!
//! - one **topic object** per topic name (`join`, `leave`, `live`, `append`, `tail`): its
//!   connections, the nodes they are on, and its bounded history;
//! - one **directory object** (`register_node`, `nodes`, `add_connection`,
//!   `remove_connection`, `connections`, `topics`): the cluster's nodes and connections.
//!
//! Every method is one message to one object and is atomic with respect to other messages
//! to that object; a read after a write to the same object sees the write. The in-memory
//! adapter keeps the objects in this process, the Redis adapter in Redis keys changed by
//! scripts, the DO-emulation adapter in one task per object.
//!
//! Delivery goes through the store too: [`Store::append`] records an event in the topic's
//! history and hands it to every node that holds a subscriber of the topic — to this node
//! through the [`Inbox`] given to [`Store::attach`] — in the order of the topic's sequence.

use std::{future::Future, sync::Arc};

use tideway_protocol::TopicName;

use crate::{
    ConnectionId, ConnectionRecord, Event, Inbox, NodeRecord, Page, Paged, TopicEvent, TopicRecord,
};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's backend cannot be reached; the request may succeed later.
    #[error("the state store is unreachable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The shared state of the gateway. See the module documentation for its object model.
pub trait Store: Send + Sync + 'static {
    /// Gives the store this node's inbox, on which it delivers the events of topics this
    /// node subscribes to. Called once, before any other method.
    fn attach(&self, inbox: Inbox);

    // Directory object.

    /// Records (or refreshes) this node's identity.
    fn register_node(
        &self,
        node: &NodeRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every node of the cluster, in id order.
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeRecord>, StoreError>> + Send;

    /// Records a new connection.
    fn add_connection(
        &self,
        connection: &ConnectionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets a connection.
    fn remove_connection(
        &self,
        id: &ConnectionId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of the cluster's connections, oldest first.
    fn connections(
        &self,
        page: Page,
    ) -> impl Future<Output = Result<Paged<ConnectionRecord>, StoreError>> + Send;

    /// One page of the cluster's live topics, by name.
    fn topics(
        &self,
        page: Page,
    ) -> impl Future<Output = Result<Paged<TopicRecord>, StoreError>> + Send;

    // Topic objects.

    /// Adds a connection to a topic, bringing the topic into being if it was not live.
    fn join(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a connection from a topic. A topic left with no connection is removed from
    /// every index (after the configured grace, if any).
    fn leave(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the topic has a subscriber anywhere (or is within its grace).
    fn live(&self, topic: &TopicName) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Appends an event to a live topic's history and delivers it to every node holding
    /// a subscriber of the topic. Returns `None`, and records nothing, when the topic is
    /// not live (its last subscriber left since [`Store::live`] was asked).
    fn append(
        &self,
        topic: &TopicName,
        event: &Arc<Event>,
    ) -> impl Future<Output = Result<Option<Arc<TopicEvent>>, StoreError>> + Send;

    /// The topic's last `limit` events, oldest first; `None` when the topic is not live.
    fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<Arc<TopicEvent>>>, StoreError>> + Send;

    /// Whether the store's backend answers now.
    fn ready(&self) -> impl Future<Output = bool> + Send;
}
