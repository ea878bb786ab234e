//! `GET /metrics`: this node's counters in the Prometheus text format, `tideway_`-prefixed,
//! each labelled with the node.

use std::fmt::Write;

use http::StatusCode;
use tideway_core::{LATENCY_BUCKETS_US, Store, Transport};

use crate::{
    app::App,
    response::{Response, full},
};

pub(crate) fn render<S: Store>(app: &App<S>) -> Response {
    let gateway = &app.gateway;
    let stats = gateway.stats();
    let node = gateway.node().id.replace(['\\', '"', '\n'], "_");
    let mut out = Text {
        text: String::with_capacity(4096),
        node,
    };
    out.family(
        "connections",
        "gauge",
        "Subscriber connections open on this node, by transport.",
    );
    out.sample(
        "connections",
        "transport=\"sse\"",
        stats.open(Transport::Sse),
    );
    out.sample(
        "connections",
        "transport=\"websocket\"",
        stats.open(Transport::WebSocket),
    );
    out.simple(
        "topics",
        "gauge",
        "Topics with a subscriber on this node.",
        gateway.local_topics() as u64,
    );
    out.family(
        "connections_accepted_total",
        "counter",
        "TCP connections accepted, by the protocol they speak.",
    );
    for protocol in crate::server::Protocol::ALL {
        let label = format!("protocol=\"{}\"", protocol.label());
        out.sample(
            "connections_accepted_total",
            &label,
            app.protocols.get(protocol),
        );
    }
    out.family(
        "direct_requests_total",
        "counter",
        "Requests served without hyper (the direct path for plain HTTP/1.1), by route.",
    );
    for (route, count) in [
        ("/v1/stream", &app.direct.stream),
        ("/v1/publish", &app.direct.publish),
    ] {
        out.sample(
            "direct_requests_total",
            &format!("route=\"{route}\""),
            count.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    out.simple(
        "connections_opened_total",
        "counter",
        "Subscriber connections opened.",
        stats.connections_opened(),
    );
    out.simple(
        "events_published_total",
        "counter",
        "Publishes delivered to at least one live topic.",
        stats.events_published(),
    );
    out.family(
        "events_dropped_total",
        "counter",
        "Events not delivered, by reason.",
    );
    out.sample(
        "events_dropped_total",
        "reason=\"no_subscribers\"",
        stats.events_dropped_no_subscribers(),
    );
    out.sample(
        "events_dropped_total",
        "reason=\"slow_consumer\"",
        stats.events_dropped_slow_consumer(),
    );
    out.simple(
        "events_delivered_total",
        "counter",
        "Events queued to a subscriber of this node.",
        stats.events_delivered(),
    );
    out.simple(
        "slow_consumers_total",
        "counter",
        "Subscribers cut off because their queue was full.",
        stats.slow_consumers_cut(),
    );
    out.simple(
        "delivery_interruptions_total",
        "counter",
        "Times subscribers of this node were told of a hole in the store's delivery it could not fill (a gap, or their streams ended).",
        stats.delivery_interruptions(),
    );
    out.simple(
        "delivery_repairs_total",
        "counter",
        "Holes in the store's delivery to this node filled from history (no stream was ended).",
        stats.delivery_repairs(),
    );
    out.simple(
        "events_recovered_total",
        "counter",
        "Events a repair took from history and queued to subscribers of this node.",
        stats.events_recovered(),
    );
    out.simple(
        "gaps_total",
        "counter",
        "tideway.gap events sent to subscribers: they may have missed events and were told.",
        stats.gaps_reported(),
    );
    out.simple(
        "bytes_out_total",
        "counter",
        "Bytes written to subscribers.",
        stats.bytes_out(),
    );
    out.simple(
        "store_errors_total",
        "counter",
        "Calls to the state store (adapter) that failed; each event of a batch it failed counts.",
        stats.store_errors(),
    );
    out.family(
        "auth_failures_total",
        "counter",
        "Requests refused for their credentials, by error code.",
    );
    for (code, count) in app.auth_failures.snapshot() {
        out.sample("auth_failures_total", &format!("code=\"{code}\""), count);
    }
    out.simple(
        "draining",
        "gauge",
        "1 while this node drains.",
        u64::from(gateway.is_draining()),
    );

    let histogram = stats.publish_latency();
    out.family(
        "publish_enqueue_seconds",
        "histogram",
        "Time from a publish's body being read to its event being appended and queued.",
    );
    for (bound, count) in LATENCY_BUCKETS_US.iter().zip(&histogram.cumulative) {
        let le = format!("le=\"{}\"", *bound as f64 / 1e6);
        out.sample("publish_enqueue_seconds_bucket", &le, *count);
    }
    let total = histogram.cumulative.last().copied().unwrap_or(0);
    out.sample("publish_enqueue_seconds_bucket", "le=\"+Inf\"", total);
    out.float("publish_enqueue_seconds_sum", histogram.sum_us as f64 / 1e6);
    out.sample("publish_enqueue_seconds_count", "", total);
    full(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out.text,
    )
}

/// The exposition text being written. Writing into a String cannot fail.
struct Text {
    text: String,
    node: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(
            self.text,
            "# HELP tideway_{name} {help}\n# TYPE tideway_{name} {kind}"
        );
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        let sep = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(
            self.text,
            "tideway_{name}{{node=\"{}\"{sep}{labels}}} {value}",
            self.node
        );
    }

    fn float(&mut self, name: &str, value: f64) {
        let _ = writeln!(
            self.text,
            "tideway_{name}{{node=\"{}\"}} {value}",
            self.node
        );
    }

    fn simple(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}
