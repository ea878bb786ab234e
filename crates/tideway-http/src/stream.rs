//! `GET /v1/stream`: a Server-Sent Events subscription.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::BodyExt;
use tideway_core::{Encoding, Next, Store, Subscription, Transport};
use tideway_protocol::{query_value, sse::FrameBuilder};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::{
    app::{App, Peer},
    error::{ApiError, ErrorCode},
    response::{Response, event_stream},
    system::System,
};

/// The comment line of a heartbeat.
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

pub(crate) async fn subscribe<S: Store, B>(
    app: &App<S>,
    request: &Request<B>,
    peer: &Peer,
) -> Result<Response, ApiError> {
    let query = request.uri().query().unwrap_or("");
    let encoding = match query_value(query, "envelope").as_deref() {
        None | Some("sse") => Encoding::Sse,
        Some("json") => Encoding::SseJson,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!("envelope {other:?}: use `json`, or leave it out for plain SSE"),
            ));
        }
    };
    let subscribe = app.subscribe_request(request, peer, Transport::Sse).await?;
    let subscription = app.gateway.subscribe(subscribe).await?;

    // A subscriber cut off for falling behind gets its farewell after what is queued;
    // if it reads none of it within the write timeout, its connection is closed.
    let kill = peer.kill.clone();
    let write_timeout = app.config.write_timeout;
    subscription.on_cut(move || {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            kill.notify_one();
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(write_timeout).await;
            kill.notify_one();
        });
    });

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
    let body = SseBody {
        subscription,
        encoding,
        heartbeat: ticker,
        retry_ms: app.config.retry.as_millis() as u64,
        hello: Some(hello.finish()),
        ended: false,
    };
    Ok(event_stream(body.boxed_unsync()))
}

/// The body of one SSE response: the subscription itself, polled in place. No future is
/// parked between frames, so an idle stream costs this struct and nothing more.
struct SseBody<S: Store> {
    subscription: Subscription<S>,
    encoding: Encoding,
    heartbeat: Interval,
    retry_ms: u64,
    /// The first bytes, sent at once so the client knows the stream is open.
    hello: Option<Bytes>,
    ended: bool,
}

impl<S: Store> http_body::Body for SseBody<S> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let bytes = match this.hello.take() {
            Some(hello) => hello,
            None => match this.subscription.poll_next(cx) {
                Poll::Ready(Next::Event(event)) => event.encoded(this.encoding).clone(),
                Poll::Ready(Next::Gap(gap)) => system_frame(&System::Gap(&gap), None),
                Poll::Ready(Next::End(reason)) => {
                    this.ended = true;
                    system_frame(&System::End(reason), Some(this.retry_ms))
                }
                Poll::Pending => match this.heartbeat.poll_tick(cx) {
                    Poll::Ready(_) => Bytes::from_static(HEARTBEAT),
                    Poll::Pending => return Poll::Pending,
                },
            },
        };
        this.subscription
            .gateway()
            .stats()
            .add_bytes_out(bytes.len());
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// The SSE frame of a system message, with a `retry:` hint when it ends the stream.
fn system_frame(message: &System<'_>, retry_ms: Option<u64>) -> Bytes {
    let mut frame = FrameBuilder::default();
    if let Some(ms) = retry_ms {
        frame.retry(ms);
    }
    // System event names are constants without line breaks.
    let _ = frame.event(message.event());
    frame.data(&message.data());
    frame.finish()
}
