//! `GET /metrics`: this node's counters in the Prometheus text format.

use std::fmt::Write;

use http::StatusCode;
use tideway_core::{Gateway, Store};

use crate::response::{Response, full};

pub(crate) fn render<S: Store>(gateway: &Gateway<S>) -> Response {
    let stats = gateway.stats();
    let node = gateway.node().id.replace(['\\', '"', '\n'], "_");
    let metrics: [(&str, &str, &str, u64); 9] = [
        (
            "connections",
            "gauge",
            "Subscriber connections open on this node.",
            gateway.open_connections(),
        ),
        (
            "topics",
            "gauge",
            "Topics with a subscriber on this node.",
            gateway.local_topics() as u64,
        ),
        (
            "connections_opened_total",
            "counter",
            "Subscriber connections opened.",
            stats.connections_opened(),
        ),
        (
            "events_published_total",
            "counter",
            "Publishes delivered to at least one live topic.",
            stats.events_published(),
        ),
        (
            "events_dropped_total",
            "counter",
            "Publishes dropped because no topic had a subscriber.",
            stats.events_dropped_no_subscribers(),
        ),
        (
            "events_delivered_total",
            "counter",
            "Events queued to a subscriber of this node.",
            stats.events_delivered(),
        ),
        (
            "slow_consumers_total",
            "counter",
            "Subscribers cut off because their queue was full.",
            stats.slow_consumers_cut(),
        ),
        (
            "bytes_out_total",
            "counter",
            "Bytes written to subscribers.",
            stats.bytes_out(),
        ),
        (
            "draining",
            "gauge",
            "1 while this node drains.",
            u64::from(gateway.is_draining()),
        ),
    ];
    let mut text = String::with_capacity(2048);
    for (name, kind, help, value) in metrics {
        // Writing into a String cannot fail.
        let _ = write!(
            text,
            "# HELP tideway_{name} {help}\n# TYPE tideway_{name} {kind}\ntideway_{name}{{node=\"{node}\"}} {value}\n"
        );
    }
    full(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    )
}
