//! What the store records about nodes, connections and topics, as the admin API shows it.

use std::{
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tideway_protocol::{Tenant, TopicList, TopicName};

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A connection's id, unique in the cluster: the node id, `/`, and a counter of the node.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    /// The id of the `n`th connection of `node`.
    pub fn new(node: &str, n: u64) -> Self {
        Self(Arc::from(format!("{node}/{n}")))
    }

    /// An id as a store recorded it.
    pub fn from_stored(id: &str) -> Self {
        Self(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// How a subscriber is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Server-Sent Events, `GET /v1/stream`.
    Sse,
    /// WebSocket, `GET /v1/ws`.
    WebSocket,
}

/// One subscriber connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRecord {
    /// Unique in the cluster.
    pub id: ConnectionId,
    /// The node that holds the connection.
    pub node: Arc<str>,
    /// The topics it subscribed to.
    pub topics: TopicList,
    /// The subscriber's own label (its `x-sse-id` header), if it sent one.
    pub label: Option<String>,
    /// SSE or WebSocket.
    pub transport: Transport,
    /// The peer's IP address.
    pub remote: Option<String>,
    /// When it connected, in milliseconds since the Unix epoch.
    pub connected_at: u64,
}

/// One live topic, as the store sees it across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicRecord {
    /// The topic's name.
    pub name: TopicName,
    /// How many connections subscribe to it.
    pub connections: usize,
    /// How many events it received since it came into being.
    pub events: u64,
    /// When its first subscriber made it, in milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When its last event was published, if any.
    pub last_event_at: Option<u64>,
}

/// One gateway node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Unique in the cluster.
    pub id: Arc<str>,
    /// The host's name.
    pub hostname: String,
    /// The address other nodes and operators reach it at.
    pub advertise_host: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: u64,
    /// How many connections it holds.
    pub connections: usize,
    /// How many topics its connections follow.
    pub topics: usize,
    /// When the store last heard its heartbeat, in milliseconds since the Unix epoch (by
    /// the store's clock); `None` for a store without heartbeats (one process).
    pub last_heartbeat: Option<u64>,
}

/// A request for one page of a list: 1-based `page`, `page_size` items per page, of one
/// tenant's items or of all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number.
    pub page: usize,
    /// Items per page, at least 1.
    pub page_size: usize,
    /// Only this tenant's topics and connections; `None` lists every one.
    pub tenant: Option<Tenant>,
}

impl Page {
    /// Whether `topic` is listed on pages of this tenant.
    pub fn lists(&self, topic: &TopicName) -> bool {
        self.tenant
            .as_ref()
            .is_none_or(|tenant| topic.tenant() == Some(tenant.as_str()))
    }

    /// Whether `connection` is listed on pages of this tenant (by its first topic: a
    /// connection's topics all belong to one tenant).
    pub fn lists_connection(&self, connection: &ConnectionRecord) -> bool {
        connection
            .topics
            .names()
            .first()
            .is_some_and(|t| self.lists(t))
    }

    /// This page of `all` (in listing order): only what the page's tenant may see,
    /// counted, then cut. The one rule of tenant filtering and paging for stores that
    /// list in this process; [`crate::Gateway`] checks every store's answer against
    /// [`Listed::listed_on`] again.
    pub fn select<T: Listed + Clone>(&self, all: impl IntoIterator<Item = T>) -> Paged<T> {
        let listed: Vec<T> = all.into_iter().filter(|i| i.listed_on(self)).collect();
        Paged {
            items: self.slice(&listed),
            page: self.page,
            page_size: self.page_size,
            total: listed.len(),
        }
    }

    /// The items of `all` (already in their listing order) on this page.
    pub fn slice<T: Clone>(&self, all: &[T]) -> Vec<T> {
        let start = self
            .page
            .saturating_sub(1)
            .saturating_mul(self.page_size)
            .min(all.len());
        let end = start.saturating_add(self.page_size).min(all.len());
        all[start..end].to_vec()
    }
}

/// Something a [`Page`] lists, which belongs to one tenant or to none.
pub trait Listed {
    /// Whether it is listed on `page` (a tenant's page lists only the tenant's).
    fn listed_on(&self, page: &Page) -> bool;
}

impl Listed for TopicName {
    fn listed_on(&self, page: &Page) -> bool {
        page.lists(self)
    }
}

impl Listed for TopicRecord {
    fn listed_on(&self, page: &Page) -> bool {
        page.lists(&self.name)
    }
}

impl Listed for ConnectionRecord {
    fn listed_on(&self, page: &Page) -> bool {
        page.lists_connection(self)
    }
}

/// One page of a list, and how long the whole list is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Paged<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// The 1-based page number.
    pub page: usize,
    /// The page size used.
    pub page_size: usize,
    /// How many items the whole list holds.
    pub total: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cut_the_list() {
        let all: Vec<u32> = (0..10).collect();
        let page = |page, page_size| {
            Page {
                page,
                page_size,
                tenant: None,
            }
            .slice(&all)
        };
        assert_eq!(page(1, 4), [0, 1, 2, 3]);
        assert_eq!(page(3, 4), [8, 9]);
        assert_eq!(page(4, 4), Vec::<u32>::new());
        assert_eq!(page(usize::MAX, usize::MAX), Vec::<u32>::new());
    }
}
