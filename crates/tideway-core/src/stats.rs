//! Counters and a latency histogram of this node, read by `/metrics`.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use crate::Transport;

/// Upper bounds of the publish latency histogram's buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Counters of this node. Relaxed atomics: each is a tally, never used to synchronise.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    /// Open connections by transport: SSE, WebSocket.
    pub(crate) open_by_transport: [AtomicU64; 2],
    pub(crate) events_published: AtomicU64,
    pub(crate) events_dropped_no_subscribers: AtomicU64,
    pub(crate) events_delivered: AtomicU64,
    pub(crate) events_dropped_slow_consumer: AtomicU64,
    pub(crate) slow_consumers_cut: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) delivery_interruptions: AtomicU64,
    pub(crate) gaps_reported: AtomicU64,
    pub(crate) delivery_repairs: AtomicU64,
    pub(crate) events_recovered: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Publish→enqueue latency: counts per bucket (the last is +Inf), sum in µs.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

/// A histogram as `/metrics` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Cumulative counts at each bound of [`LATENCY_BUCKETS_US`], then the total.
    pub cumulative: Vec<u64>,
    /// The sum of all observations, in microseconds.
    pub sum_us: u64,
}

fn slot(transport: Transport) -> usize {
    match transport {
        Transport::Sse => 0,
        Transport::WebSocket => 1,
    }
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
    /// Connections open now over `transport`.
    pub fn open(&self, transport: Transport) -> u64 {
        self.open_by_transport[slot(transport)].load(Relaxed)
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
    /// Events not queued to a subscriber because its queue was full (it was cut off).
    pub fn events_dropped_slow_consumer(&self) -> u64 {
        self.events_dropped_slow_consumer.load(Relaxed)
    }
    /// Subscribers cut off because their queue was full.
    pub fn slow_consumers_cut(&self) -> u64 {
        self.slow_consumers_cut.load(Relaxed)
    }
    /// Calls to the store that failed.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Relaxed)
    }
    /// Times the store found a hole in its delivery to this node.
    pub fn delivery_interruptions(&self) -> u64 {
        self.delivery_interruptions.load(Relaxed)
    }
    /// `tideway.gap` events sent to subscribers of this node.
    pub fn gaps_reported(&self) -> u64 {
        self.gaps_reported.load(Relaxed)
    }
    /// Holes in the store's delivery to this node that were filled from history.
    pub fn delivery_repairs(&self) -> u64 {
        self.delivery_repairs.load(Relaxed)
    }
    /// Events a repair took from history and queued to this node's subscribers.
    pub fn events_recovered(&self) -> u64 {
        self.events_recovered.load(Relaxed)
    }
    /// Bytes written to subscribers.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Relaxed)
    }
    /// Counts `n` bytes written to a subscriber; the transport calls it.
    pub fn add_bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn opened(&self, transport: Transport) {
        self.connections_opened.fetch_add(1, Relaxed);
        self.open_by_transport[slot(transport)].fetch_add(1, Relaxed);
    }

    pub(crate) fn closed(&self, transport: Transport) {
        self.connections_closed.fetch_add(1, Relaxed);
        self.open_by_transport[slot(transport)].fetch_sub(1, Relaxed);
    }

    /// Records how long one publish took from its body being read to its event being
    /// appended and handed to every node's queues.
    pub(crate) fn observe_publish(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }

    /// The publish→enqueue latency histogram.
    pub fn publish_latency(&self) -> Histogram {
        let mut running = 0;
        let cumulative = self
            .latency_buckets
            .iter()
            .map(|count| {
                running += count.load(Relaxed);
                running
            })
            .collect();
        Histogram {
            cumulative,
            sum_us: self.latency_sum_us.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let stats = Stats::default();
        for us in [10, 50, 51, 3_000, 1_000_000] {
            stats.observe_publish(Duration::from_micros(us));
        }
        let histogram = stats.publish_latency();
        assert_eq!(histogram.cumulative[0], 2, "≤ 50 µs");
        assert_eq!(histogram.cumulative[1], 3, "≤ 100 µs");
        assert_eq!(histogram.cumulative[6], 4, "≤ 5 ms");
        assert_eq!(
            histogram.cumulative[LATENCY_BUCKETS_US.len()],
            5,
            "+Inf holds all"
        );
        assert_eq!(histogram.sum_us, 10 + 50 + 51 + 3_000 + 1_000_000);
    }
}
