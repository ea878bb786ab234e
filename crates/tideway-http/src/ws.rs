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
    Frame, OpCode, Payload, Role, WebSocketError, after_handshake_split,
    upgrade::{UpgradeFut, is_upgrade_request, upgrade},
};
use futures_util::FutureExt as _;
use http::Request;
use http_body_util::BodyExt;
use hyper::{body::Incoming, upgrade::Upgraded};
use hyper_util::rt::TokioIo;
use tideway_core::{Encoding, EndReason, Next, Store, Subscription, Transport};
use tokio::{
    io::{AsyncWriteExt as _, WriteHalf},
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

type Writer = WriteHalf<TokioIo<Upgraded>>;

/// Most bytes of frames written in one batch; what else is ready waits for the next turn of
/// the loop, which looks at pings, the client's frames and its close in between: a
/// subscriber whose queue never empties must not starve them.
const MAX_BATCH: usize = 64 * 1024;

async fn serve<S: Store>(
    upgrade: UpgradeFut,
    mut subscription: Subscription<S>,
    settings: Settings,
) -> Result<(), WebSocketError> {
    let socket = upgrade.await?;
    // fastwebsockets reads the client's frames; the gateway writes its own (a server's
    // frame is a header and the unmasked payload), each batch of events built in one buffer
    // and sent with one write: several ready events share a write and a TCP segment, and
    // an idle connection holds no write buffer.
    let (read, mut writer) = tokio::io::split(socket.into_inner());
    let (mut reader, _) = after_handshake_split(read, tokio::io::sink(), Role::Server);
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
                // This event and those already queued behind it, in one write.
                let mut out = Vec::new();
                let mut next = Some(next);
                let mut ended = false;
                while let Some(item) = next.take() {
                    ended = frames(&mut out, item, &subscription);
                    if !ended && out.len() < MAX_BATCH {
                        // The rest waits for the next turn of the loop (cancel-safe).
                        next = subscription.next().now_or_never();
                    }
                }
                if let Err(err) = send(&mut writer, &out, settings).await {
                    break Err(err);
                }
                if ended {
                    break Ok(());
                }
            }
            control = controls.recv() => match control {
                Some(Control::Send(frame)) => {
                    let mut out = Vec::new();
                    encode(&mut out, frame.opcode, &frame.payload);
                    if let Err(err) = send(&mut writer, &out, settings).await {
                        break Err(err);
                    }
                    if frame.opcode == OpCode::Close {
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
                let mut out = Vec::new();
                encode(&mut out, OpCode::Ping, b"");
                if let Err(err) = send(&mut writer, &out, settings).await {
                    break Err(err);
                }
            }
        }
    };
    reading.abort();
    result
}

/// Appends the frames of `next` to `out`; says whether they end the connection (a
/// farewell and the close frame).
fn frames<S: Store>(out: &mut Vec<u8>, next: Next, subscription: &Subscription<S>) -> bool {
    match next {
        Next::Event(event) => {
            let bytes = event.encoded(Encoding::Json);
            subscription.gateway().stats().add_bytes_out(bytes.len());
            encode(out, OpCode::Text, bytes);
            false
        }
        Next::Gap(gap) => {
            encode(out, OpCode::Text, System::Gap(&gap).envelope().as_bytes());
            false
        }
        Next::End(reason) => {
            let (code, why) = match reason {
                EndReason::Draining => (1001u16, "drain"),
                EndReason::SlowConsumer => (1008, "slow_consumer"),
                EndReason::Revoked(_) => (1008, "revoked"),
                // Service Restart: the client should reconnect (and resume) at once.
                EndReason::Interrupted => (1012, "resync"),
            };
            encode(out, OpCode::Text, System::End(reason).envelope().as_bytes());
            let mut payload = Vec::with_capacity(2 + why.len());
            payload.extend_from_slice(&code.to_be_bytes());
            payload.extend_from_slice(why.as_bytes());
            encode(out, OpCode::Close, &payload);
            true
        }
    }
}

/// Appends one whole server frame (RFC 6455 §5.2: FIN set, no mask) of `opcode` carrying
/// `payload`.
fn encode(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.reserve(10 + payload.len());
    out.push(0x80 | opcode as u8);
    match payload.len() {
        // The length in the 7-bit field, or 126 and 16 bits, or 127 and 64 bits.
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Writes `out`, giving up when the client has not taken it within the write timeout.
async fn send(writer: &mut Writer, out: &[u8], settings: Settings) -> Result<(), WebSocketError> {
    match tokio::time::timeout(settings.write_timeout, writer.write_all(out)).await {
        Ok(result) => result.map_err(WebSocketError::IoError),
        Err(_) => Err(WebSocketError::ConnectionClosed),
    }
}

#[cfg(test)]
mod tests {
    use fastwebsockets::WebSocket;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// What `encode` writes, read back by fastwebsockets as a client reads it: every length
    /// on both sides of each of the three length encodings, and a close with its code.
    #[tokio::test]
    async fn frames_are_read_back_whole_by_an_independent_client() {
        let lengths = [0, 1, 125, 126, 127, 1000, 0xffff, 0x1_0000, 70_000];
        let mut out = Vec::new();
        for (n, &len) in lengths.iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + ((i + n) % 26) as u8).collect();
            encode(&mut out, OpCode::Text, &payload);
        }
        encode(&mut out, OpCode::Ping, b"");
        encode(&mut out, OpCode::Close, &[0x03, 0xf0, b'b', b'y', b'e']);
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let writing = tokio::spawn(async move { server.write_all(&out).await });
        let mut ws = WebSocket::after_handshake(client, Role::Client);
        ws.set_auto_pong(false);
        ws.set_auto_close(false);
        for (n, &len) in lengths.iter().enumerate() {
            let frame = ws.read_frame().await.expect("a text frame");
            assert!(frame.fin);
            assert_eq!(frame.opcode, OpCode::Text);
            let expected: Vec<u8> = (0..len).map(|i| b'a' + ((i + n) % 26) as u8).collect();
            assert_eq!(
                &frame.payload[..],
                &expected[..],
                "a payload of {len} bytes"
            );
        }
        let ping = ws.read_frame().await.expect("the ping");
        assert_eq!((ping.opcode, ping.payload.len()), (OpCode::Ping, 0));
        let close = ws.read_frame().await.expect("the close");
        assert_eq!(close.opcode, OpCode::Close);
        assert_eq!(&close.payload[..], &[0x03, 0xf0, b'b', b'y', b'e']);
        writing.await.unwrap().unwrap();
    }
}
