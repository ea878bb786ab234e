//! `GET /v1/stream`: a Server-Sent Events subscription.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderValue, Request, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tideway_core::{Encoding, EndReason, Next, Store, Subscribe, Subscription, Transport};
use tideway_protocol::{EventId, query_value, sse::FrameBuilder};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::{
    error::ApiError,
    response::{Response, full},
    routes::App,
};

/// The comment line of a heartbeat.
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

pub(crate) async fn subscribe<S: Store>(
    app: &App<S>,
    request: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response, ApiError> {
    let topics = app.topics(request, true)?;
    let query = request.uri().query().unwrap_or("");
    let encoding = match query_value(query, "envelope").as_deref() {
        None | Some("sse") => Encoding::Sse,
        Some("json") => Encoding::SseJson,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("envelope {other:?}: use `json`, or leave it out for plain SSE"),
            ));
        }
    };
    let label = match request.headers().get("x-sse-id") {
        None => None,
        Some(value) => Some(
            EventId::parse(value.as_bytes())
                .map_err(|err| ApiError::bad_request("invalid_id", format!("x-sse-id: {err}")))?
                .as_str()
                .to_owned(),
        ),
    };
    let subscription = app
        .gateway
        .subscribe(Subscribe {
            topics,
            label,
            transport: Transport::Sse,
            remote: Some(peer.ip().to_string()),
        })
        .await?;

    let mut hello = FrameBuilder::default();
    hello.retry(app.config.retry.as_millis() as u64);
    // A connection id is a node id and a number, which holds no line break.
    let _ = hello.comment(&format!("tideway {}", subscription.record().id));
    let heartbeat = app.config.heartbeat;
    let mut ticker = tokio::time::interval_at(
        Instant::now() + heartbeat,
        heartbeat.max(Duration::from_millis(1)),
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Stream {
        subscription,
        encoding,
        heartbeat: ticker,
        retry_ms: app.config.retry.as_millis() as u64,
        hello: Some(hello.finish()),
        ended: false,
    };
    let body = StreamBody::new(stream::unfold(state, Stream::next_frame)).boxed_unsync();

    let mut response = http::Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    // Tells nginx and similar proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    cors(app, request, &mut response);
    Ok(response)
}

/// Answers a CORS preflight of a subscribe route.
pub(crate) fn preflight<S: Store>(app: &App<S>, request: &Request<Incoming>) -> Response {
    let mut response = full(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
    if cors(app, request, &mut response) {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("x-sse-topic, x-sse-id, last-event-id, cache-control"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    response
}

/// Adds `Access-Control-Allow-Origin` when the request's origin is allowed.
fn cors<S: Store>(app: &App<S>, request: &Request<Incoming>, response: &mut Response) -> bool {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    let Some(allowed) = app.config.cors_origins.allow(origin) else {
        return false;
    };
    let headers = response.headers_mut();
    if allowed != "*" {
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    match HeaderValue::from_str(&allowed) {
        Ok(value) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            true
        }
        Err(_) => false,
    }
}

/// The state of one SSE response body.
struct Stream<S: Store> {
    subscription: Subscription<S>,
    encoding: Encoding,
    heartbeat: Interval,
    retry_ms: u64,
    /// The first bytes, sent at once so the client knows the stream is open.
    hello: Option<Bytes>,
    ended: bool,
}

impl<S: Store> Stream<S> {
    async fn next_frame(mut self) -> Option<(Result<Frame<Bytes>, Infallible>, Self)> {
        if self.ended {
            return None;
        }
        let bytes = match self.hello.take() {
            Some(hello) => hello,
            None => tokio::select! {
                next = self.subscription.next() => match next {
                    Next::Event(event) => event.encoded(self.encoding).clone(),
                    Next::End(reason) => {
                        self.ended = true;
                        self.farewell(reason)
                    }
                },
                _ = self.heartbeat.tick() => Bytes::from_static(HEARTBEAT),
            },
        };
        self.subscription
            .gateway()
            .stats()
            .add_bytes_out(bytes.len());
        Some((Ok(Frame::data(bytes)), self))
    }

    /// The system event that ends a stream, telling the client why and when to come back.
    fn farewell(&self, reason: EndReason) -> Bytes {
        let (what, message) = match reason {
            EndReason::SlowConsumer => (
                "slow_consumer",
                "this connection fell too far behind and was closed; reconnect with Last-Event-ID to resume",
            ),
            EndReason::Draining => ("drain", "this node is shutting down; reconnect to continue"),
        };
        let data = serde_json::json!({ "reason": what, "message": message }).to_string();
        let mut frame = FrameBuilder::default();
        frame.retry(self.retry_ms);
        let _ = frame.event(&format!("tideway.{what}"));
        frame.data(&data);
        frame.finish()
    }
}
