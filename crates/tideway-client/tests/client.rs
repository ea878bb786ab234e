//! The client against a real gateway on a free port.

use std::time::Duration;

use tideway_client::{Client, ClientError, Message, Published, SubscriptionOptions};
use tideway_test_util::{API_KEY, TestGateway};

fn url(gw: &TestGateway) -> String {
    format!("http://{}", gw.addr)
}

#[tokio::test]
async fn publish_then_receive_with_every_field_intact() {
    let gw = TestGateway::start().await;
    let client = Client::new(&url(&gw), Some(API_KEY)).unwrap();
    assert_eq!(
        client.publish(&["news"], "early", None, "x").await.unwrap(),
        Published::Dropped
    );
    let mut subscription = client.subscribe(&["news", "logs/app:1"]).await.unwrap();
    let data = "first line\nsecond line — ünïcödé ✓\n";
    let published = client
        .publish(&["logs/app:1"], "e1", Some("update"), data)
        .await
        .unwrap();
    assert_eq!(
        published,
        Published::Accepted(vec![("logs/app:1".into(), 1)])
    );
    assert_eq!(
        subscription.next().await.unwrap(),
        Some(Message::Event {
            topic: "logs/app:1".into(),
            id: "e1".into(),
            event: Some("update".into()),
            data: data.into()
        })
    );
    assert_eq!(subscription.last_event_id(), Some("e1"));
}

#[tokio::test]
async fn errors_name_the_gateways_reason() {
    let gw = TestGateway::start().await;
    let anonymous = Client::new(&url(&gw), None).unwrap();
    match anonymous.publish(&["news"], "e", None, "x").await {
        Err(ClientError::Api {
            status: 401, code, ..
        }) => assert_eq!(code, "missing_api_key"),
        other => panic!("expected a 401, got {other:?}"),
    }
    match anonymous.subscribe(&["bad topic"]).await {
        Err(ClientError::Api {
            status: 400, code, ..
        }) => assert_eq!(code, "invalid_topic"),
        Err(other) => panic!("expected a 400, got {other:?}"),
        Ok(_) => panic!("expected a 400"),
    }
    let down = Client::new("http://127.0.0.1:9", None).unwrap();
    assert!(matches!(
        down.publish(&["a"], "e", None, "x").await,
        Err(ClientError::Connect(_))
    ));
}

/// A TCP proxy in front of the gateway that can cut every connection through it.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    /// Drops every connection open through the proxy now.
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn a_dropped_stream_reconnects_and_resumes_without_loss() {
    let gw = TestGateway::start_with(
        tideway_http::HttpConfig::default(),
        tideway_store_memory::MemoryConfig {
            topic_grace: Duration::from_secs(30),
            ..Default::default()
        },
        tideway_core::CoreConfig::default(),
    )
    .await;
    let proxy = Proxy::start(gw.addr).await;
    let publisher = Client::new(&url(&gw), Some(API_KEY)).unwrap();
    let through_proxy = Client::new(&format!("http://{}", proxy.addr), None).unwrap();
    let options = SubscriptionOptions {
        initial_backoff: Duration::from_millis(20),
        ..Default::default()
    };
    let mut subscription = through_proxy
        .subscribe_with(&["busy"], options)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..10 {
        if n == 5 {
            // The connection breaks while events keep coming; the client reconnects with
            // Last-Event-ID and gets the rest from the topic's history.
            proxy.cut();
        }
        publisher
            .publish(&["busy"], &format!("e{n}"), None, "x")
            .await
            .unwrap();
        if n < 5 {
            match subscription.next().await.unwrap().unwrap() {
                Message::Event { id, .. } => ids.push(id),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    while ids.len() < 10 {
        match subscription.next().await.unwrap().unwrap() {
            Message::Event { id, .. } => ids.push(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        ids,
        (0..10).map(|n| format!("e{n}")).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert!(
        gw.gateway.stats().connections_opened() >= 2,
        "it did reconnect"
    );
}

#[tokio::test]
async fn a_batch_reports_each_event_and_arrives_in_order() {
    use tideway_client::{BatchEvent, BatchOutcome};
    let gw = TestGateway::start().await;
    let client = Client::new(&url(&gw), Some(API_KEY)).unwrap();
    let mut subscription = client.subscribe(&["orders"]).await.unwrap();
    let event = |topics, id, data| BatchEvent {
        topics,
        id,
        event: None,
        data,
    };
    let outcomes = client
        .publish_batch(
            &[
                event(&["orders"], "b1", "one"),
                event(&["nobody"], "b2", "dropped"),
                event(&["bad topic"], "b3", "refused"),
                BatchEvent {
                    event: Some("shipped"),
                    ..event(&["orders"], "b4", "two")
                },
            ],
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes[..2],
        [
            BatchOutcome::Published(Published::Accepted(vec![("orders".into(), 1)])),
            BatchOutcome::Published(Published::Dropped),
        ]
    );
    assert!(matches!(&outcomes[2], BatchOutcome::Refused { code, .. } if code == "invalid_topic"));
    assert_eq!(
        outcomes[3],
        BatchOutcome::Published(Published::Accepted(vec![("orders".into(), 2)]))
    );
    for (id, event) in [("b1", None), ("b4", Some("shipped".to_owned()))] {
        match subscription.next().await.unwrap() {
            Some(Message::Event {
                id: got,
                event: kind,
                ..
            }) => {
                assert_eq!((got.as_str(), kind), (id, event));
            }
            other => panic!("expected {id}, got {other:?}"),
        }
    }
    // Atomic: the bad event sinks the batch, and the call says why.
    let refused = client
        .publish_batch(
            &[
                event(&["orders"], "b5", "x"),
                event(&["bad topic"], "b6", "x"),
            ],
            true,
        )
        .await;
    assert!(
        matches!(&refused, Err(ClientError::Api { status: 400, code, .. }) if code == "invalid_topic"),
        "{refused:?}"
    );
}
