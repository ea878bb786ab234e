//! Counters of this node, read by `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of this node. Relaxed atomics: each is a tally, never used to synchronise.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) events_published: AtomicU64,
    pub(crate) events_dropped_no_subscribers: AtomicU64,
    pub(crate) events_delivered: AtomicU64,
    pub(crate) slow_consumers_cut: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

impl Stats {
    /// Connections opened since start.
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened.load(Relaxed)
    }
    /// Connections closed since start.
    pub fn connections_closed(&self) -> u64 {
        self.connections_closed.load(Relaxed)
    }
    /// Publishes accepted (at least one topic live).
    pub fn events_published(&self) -> u64 {
        self.events_published.load(Relaxed)
    }
    /// Publishes dropped because no topic had a subscriber.
    pub fn events_dropped_no_subscribers(&self) -> u64 {
        self.events_dropped_no_subscribers.load(Relaxed)
    }
    /// Events queued to a subscriber of this node.
    pub fn events_delivered(&self) -> u64 {
        self.events_delivered.load(Relaxed)
    }
    /// Subscribers cut off because their queue was full.
    pub fn slow_consumers_cut(&self) -> u64 {
        self.slow_consumers_cut.load(Relaxed)
    }
    /// Bytes written to subscribers.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Relaxed)
    }
    /// Counts `n` bytes written to a subscriber; the transport calls it.
    pub fn add_bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }
}
