//! `GET /v1/ws`: the same subscription as SSE, over WebSocket.
//!
//! Each event is one text frame holding the JSON envelope `{"topic","id","event","data"}`,
//! encoded once per event and shared by every WebSocket subscriber. The gateway pings on
//! the heartbeat interval and closes a connection that answers nothing for two intervals.
//! Close codes: 1001 when the node drains, 1008 when the subscriber fell too far behind,
//! 1000 when the client closed first; before either of the first two, a `tideway.<what>`
//! frame says why, as on SSE.

use std::time::Duration;

use fastwebsockets::{
    Frame, OpCode, Payload, WebSocketError, WebSocketWrite,
    upgrade::{UpgradeFut, is_upgrade_request, upgrade},
};
use futures_util::FutureExt as _;
use http::Request;
use http_body_util::BodyExt;
use hyper::{body::Incoming, upgrade::Upgraded};
use hyper_util::rt::TokioIo;
use tideway_core::{Encoding, EndReason, Next, Store, Subscription, Transport};
use tokio::{
    io::{BufWriter, WriteHalf},
    sync::mpsc,
    time::{Instant, MissedTickBehavior},
};

use crate::{
    app::{App, Peer},
    error::{ApiError, ErrorCode},
    response::Response,
    system::System,
};

/// Largest message a client may send; clients have nothing to say but pongs and closes.
const MAX_CLIENT_MESSAGE: usize = 4096;

pub(crate) async fn subscribe<S: Store>(
    app: &App<S>,
    mut request: Request<Incoming>,
    peer: &Peer,
) -> Result<Response, ApiError> {
    // Checked first: a page of another site learns nothing, not even whether its token
    // would have been accepted.
    let origin = request.headers().get(http::header::ORIGIN);
    if !app.config.cors.subscribe.admits(origin) {
        let shown = origin.map_or_else(String::new, |o| {
            String::from_utf8_lossy(o.as_bytes()).into_owned()
        });
        return Err(ApiError::new(
            ErrorCode::OriginNotAllowed,
            format!(
                "a WebSocket from the page origin {shown:?} is refused: it is not in the gateway's allowed subscribe origins (--cors-origins)"
            ),
        ));
    }
    if !is_upgrade_request(&request) {
        return Err(ApiError::new(
            ErrorCode::UpgradeRequired,
            "GET /v1/ws needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        ));
    }
    let subscribe = app
        .subscribe_request(&request, peer, Transport::WebSocket)
        .await?;
    let (response, upgrade) = upgrade(&mut request).map_err(|err| {
        ApiError::new(
            ErrorCode::InvalidUpgrade,
            format!("WebSocket handshake: {err}"),
        )
    })?;
    let subscription = app.gateway.subscribe(subscribe).await?;
    let settings = Settings {
        heartbeat: app.config.heartbeat.max(Duration::from_millis(1)),
        write_timeout: app.config.write_timeout,
    };
    let alive = peer.alive.clone();
    tokio::spawn(async move {
        if let Err(err) = serve(upgrade, subscription, settings).await {
            tracing::debug!(error = %err, "websocket ended with an error");
        }
        drop(alive);
    });
    Ok(response.map(|body| body.map_err(|never| match never {}).boxed_unsync()))
}

#[derive(Clone, Copy)]
struct Settings {
    heartbeat: Duration,
    write_timeout: Duration,
}

/// What the reading half tells the writing half.
enum Control {
    /// A frame the protocol obliges us to send (a pong, the echo of a close).
    Send(Frame<'static>),
    /// The client sent something: it is alive.
    Seen,
    /// The client closed, or the connection broke.
    Closed,
}

type Writer = WebSocketWrite<BufWriter<WriteHalf<TokioIo<Upgraded>>>>;

/// The write buffer of a WebSocket connection: a batch of events larger than this goes
/// out in several writes.
const WRITE_BUFFER: usize = 8 * 1024;

/// Most events written in one batch before the connection looks at its pings, its
/// client's frames and its close again: a subscriber whose queue never empties must not
/// starve them.
const MAX_BATCH: usize = 64;

async fn serve<S: Store>(
    upgrade: UpgradeFut,
    mut subscription: Subscription<S>,
    settings: Settings,
) -> Result<(), WebSocketError> {
    let socket = upgrade.await?;
    // Frames go through a buffer and out with one flush per batch: when several events
    // are ready, they share a write (and a TCP segment) instead of taking one each.
    let (mut reader, mut writer) = socket.split(|io| {
        let (read, write) = tokio::io::split(io);
        (read, BufWriter::with_capacity(WRITE_BUFFER, write))
    });
    reader.set_max_message_size(MAX_CLIENT_MESSAGE);
    let (control, mut controls) = mpsc::channel::<Control>(16);

    // The reading half runs on its own task: reads are not cancel-safe, so they must not
    // sit in the `select!` below.
    let reading = tokio::spawn(async move {
        loop {
            let obliged = control.clone();
            let mut send = move |frame: Frame<'_>| {
                let owned = Frame::new(
                    true,
                    frame.opcode,
                    None,
                    Payload::Owned(frame.payload.to_vec()),
                );
                let obliged = obliged.clone();
                async move {
                    obliged
                        .send(Control::Send(owned))
                        .await
                        .map_err(|_| WebSocketError::ConnectionClosed)
                }
            };
            match reader.read_frame(&mut send).await {
                Ok(frame) if frame.opcode == OpCode::Close => break,
                Ok(_) => {
                    if control.send(Control::Seen).await.is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = control.send(Control::Closed).await;
    });

    let start = Instant::now() + settings.heartbeat;
    let mut ping = tokio::time::interval_at(start, settings.heartbeat);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let result = loop {
        tokio::select! {
            next = subscription.next() => {
                // This event and those already queued behind it, then one flush.
                let mut next = Some(next);
                let mut ended = None;
                let mut written = Ok(());
                let mut batch = 0;
                while let Some(item) = next.take() {
                    batch += 1;
                    match frames(&mut writer, item, &subscription, settings).await {
                        Ok(true) => ended = Some(Ok(())),
                        Ok(false) if batch < MAX_BATCH => {
                            next = subscription.next().now_or_never();
                        }
                        // The rest waits for the next turn of the loop (cancel-safe).
                        Ok(false) => {}
                        Err(err) => written = Err(err),
                    }
                }
                let flushed = match written {
                    Ok(()) => flush(&mut writer, settings).await,
                    Err(err) => Err(err),
                };
                if let Err(err) = flushed {
                    break Err(err);
                }
                if let Some(end) = ended {
                    break end;
                }
            }
            control = controls.recv() => match control {
                Some(Control::Send(frame)) => {
                    let closing = frame.opcode == OpCode::Close;
                    if let Err(err) = write(&mut writer, frame, settings).await {
                        break Err(err);
                    }
                    if closing {
                        break Ok(());
                    }
                }
                Some(Control::Seen) => last_seen = Instant::now(),
                Some(Control::Closed) | None => break Ok(()),
            },
            _ = ping.tick() => {
                if last_seen.elapsed() > settings.heartbeat * 2 {
                    tracing::info!(connection = %subscription.record().id, "websocket: no answer to pings; closing");
                    break Ok(());
                }
                if let Err(err) = write(&mut writer, Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"")), settings).await {
                    break Err(err);
                }
            }
        }
    };
    reading.abort();
    result
}

/// Buffers the frames of `next`; says whether they end the connection (a farewell and
/// the close frame).
async fn frames<S: Store>(
    writer: &mut Writer,
    next: Next,
    subscription: &Subscription<S>,
    settings: Settings,
) -> Result<bool, WebSocketError> {
    match next {
        Next::Event(event) => {
            let bytes = event.encoded(Encoding::Json);
            subscription.gateway().stats().add_bytes_out(bytes.len());
            buffer(writer, Frame::text(Payload::Borrowed(bytes)), settings).await?;
            Ok(false)
        }
        Next::Gap(gap) => {
            let text = System::Gap(&gap).envelope();
            buffer(
                writer,
                Frame::text(Payload::Owned(text.into_bytes())),
                settings,
            )
            .await?;
            Ok(false)
        }
        Next::End(reason) => {
            let (code, why) = match reason {
                EndReason::Draining => (1001, "drain"),
                EndReason::SlowConsumer => (1008, "slow_consumer"),
                EndReason::Revoked(_) => (1008, "revoked"),
                // Service Restart: the client should reconnect (and resume) at once.
                EndReason::Interrupted => (1012, "resync"),
            };
            let text = System::End(reason).envelope();
            buffer(
                writer,
                Frame::text(Payload::Owned(text.into_bytes())),
                settings,
            )
            .await?;
            buffer(writer, Frame::close(code, why.as_bytes()), settings).await?;
            Ok(true)
        }
    }
}

/// Puts one frame in the write buffer (writing out what is buffered when it is full),
/// giving up when the client has not taken it within the write timeout.
async fn buffer(
    writer: &mut Writer,
    frame: Frame<'_>,
    settings: Settings,
) -> Result<(), WebSocketError> {
    match tokio::time::timeout(settings.write_timeout, writer.write_frame(frame)).await {
        Ok(result) => result,
        Err(_) => Err(WebSocketError::ConnectionClosed),
    }
}

/// Writes out what is buffered, within the write timeout.
async fn flush(writer: &mut Writer, settings: Settings) -> Result<(), WebSocketError> {
    match tokio::time::timeout(settings.write_timeout, writer.flush()).await {
        Ok(result) => result,
        Err(_) => Err(WebSocketError::ConnectionClosed),
    }
}

/// Writes one frame now.
async fn write(
    writer: &mut Writer,
    frame: Frame<'_>,
    settings: Settings,
) -> Result<(), WebSocketError> {
    buffer(writer, frame, settings).await?;
    flush(writer, settings).await
}
