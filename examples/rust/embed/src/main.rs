//! A shop's own HTTP service (plain hyper) that embeds Tideway: its handlers and Tideway's
//! routes on one port, one process, no separate gateway to run.
//!
//!     EMBED_LISTEN=127.0.0.1:3000 cargo run -p tideway-embed-example
//!
//! - `GET /` is the shop's own page.
//! - `POST /orders` is the shop's own handler: it records an order and publishes an
//!   `order.created` event on topic `orders` straight into the embedded engine, without
//!   an HTTP round trip or an API key.
//! - Everything under `/v1/`, `/admin`, `/healthz`, `/readyz`, `/metrics` is Tideway:
//!   `curl -N 'http://127.0.0.1:3000/v1/stream?topic=orders'` receives the orders.

use std::{convert::Infallible, net::SocketAddr, sync::atomic::AtomicU64, sync::atomic::Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tideway_core::{CoreConfig, Event, Gateway, NodeRecord, Route, unix_millis};
use tideway_http::{ApiKeys, HttpConfig, KeyRing, Tideway};
use tideway_protocol::{EventData, EventId, EventType, TopicList};
use tideway_store_memory::{MemoryConfig, MemoryStore};
use tokio::net::TcpListener;

type Shop = Tideway<MemoryStore>;

static ORDERS: AtomicU64 = AtomicU64::new(0);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("EMBED_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let node = NodeRecord {
        id: "shop-1".into(),
        hostname: "shop".into(),
        advertise_host: listen.clone(),
        started_at: unix_millis(),
        ..NodeRecord::default()
    };
    let gateway = Gateway::start(
        MemoryStore::new(MemoryConfig::default()),
        node,
        CoreConfig::default(),
    )
    .await?;
    // Publishing over HTTP still needs a key; the shop's own handlers publish in process.
    let key = std::env::var("SSE_PUBLISHER_API_KEYS").unwrap_or_default();
    let config = HttpConfig {
        api_keys: KeyRing::new(ApiKeys::parse(&key)),
        ..HttpConfig::default()
    };
    let tideway = Tideway::new(gateway, config);
    let listener = TcpListener::bind(&listen).await?;
    eprintln!("shop listening on {listen}");
    loop {
        let (stream, peer) = listener.accept().await?;
        let tideway = tideway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| route(tideway.clone(), request, peer));
            // `with_upgrades` lets Tideway's /v1/ws take over its connections.
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(err) = connection.await {
                eprintln!("connection from {peer}: {err}");
            }
        });
    }
}

async fn route(
    tideway: Shop,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<tideway_http::Body>, Infallible> {
    let path = request.uri().path();
    let ours = path == "/" || path == "/orders";
    if !ours {
        return Ok(tideway.handle(request, peer).await);
    }
    let response = match (request.method(), path) {
        (&Method::GET, "/") => text(
            StatusCode::OK,
            "The shop. Orders stream at /v1/stream?topic=orders\n",
        ),
        (&Method::POST, "/orders") => create_order(&tideway, request).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    };
    Ok(response)
}

/// The shop's own handler: records the order, then tells every subscriber of `orders`.
async fn create_order(tideway: &Shop, request: Request<Incoming>) -> Response<tideway_http::Body> {
    let Ok(body) = request.into_body().collect().await else {
        return text(StatusCode::BAD_REQUEST, "could not read the order\n");
    };
    let Ok(details) = String::from_utf8(body.to_bytes().to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "an order is UTF-8 text\n");
    };
    let number = ORDERS.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("order-{number}");
    let gateway = tideway.gateway();
    let (Ok(topics), Ok(event_id), Ok(event_type), Ok(data)) = (
        TopicList::parse(b"orders", 1),
        EventId::parse(id.as_bytes()),
        EventType::parse(b"order.created"),
        EventData::parse(Bytes::from(details)),
    ) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not build the event\n",
        );
    };
    // Nobody listening: nothing to publish, as the gateway's own drop path does.
    let delivered = match gateway.route(&topics, &event_id).await {
        Ok(Route::Live(live)) => {
            let event = Event {
                id: event_id,
                event_type: Some(event_type),
                data,
                published_at: unix_millis(),
            };
            gateway
                .publish(live, event)
                .await
                .is_ok_and(|p| !p.copies.is_empty())
        }
        Ok(Route::Dropped) | Err(_) => false,
    };
    let reply = serde_json::json!({ "order": id, "announced": delivered }).to_string();
    let mut response = text(StatusCode::CREATED, &reply);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: &str) -> Response<tideway_http::Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())).boxed_unsync());
    *response.status_mut() = status;
    response
}
