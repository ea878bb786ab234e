//! The accept loop and graceful shutdown.

use std::{future::Future, io, sync::Arc};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tideway_core::{Gateway, Store};
use tokio::net::TcpListener;

use crate::{HttpConfig, routes::App};

/// Serves `gateway` on `listener` until `shutdown` completes, then drains.
///
/// Draining stops accepting, refuses new streams and publishes with 503, tells every
/// open stream to reconnect elsewhere (a `tideway.drain` event after its queued events),
/// lets in-flight requests finish, and returns once every connection is closed or
/// `config.drain_timeout` has passed.
pub async fn run<S: Store>(
    listener: TcpListener,
    gateway: Gateway<S>,
    config: HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let drain_timeout = config.drain_timeout;
    let header_read_timeout = config.header_read_timeout;
    let app = Arc::new(App {
        gateway: gateway.clone(),
        config,
    });
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or a peer that reset during the handshake:
                    // neither ends the server. A short pause lets descriptors free up.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Events are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |request| app.clone().handle(request, peer));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    gateway.drain();
    tracing::info!("draining: no longer accepting; telling streams to reconnect elsewhere");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(timeout = ?drain_timeout, "drain timed out; closing the remaining connections");
        }
    }
    Ok(())
}
