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
    let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = states.clone();
    let options = SubscriptionOptions {
        min_backoff: Duration::from_millis(20),
        on_state: Some(std::sync::Arc::new(move |s| record.lock().unwrap().push(s))),
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
    use tideway_client::ConnectionState::{Closed, Open, Reconnecting};
    assert_eq!(*states.lock().unwrap(), [Open, Reconnecting, Open]);
    assert_eq!(subscription.state(), Open);
    subscription.close();
    assert_eq!(*states.lock().unwrap(), [Open, Reconnecting, Open, Closed]);
    assert!(matches!(
        subscription.next().await,
        Err(ClientError::Closed)
    ));
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

/// The `tideway_connections_accepted_total{protocol="http1"}` of the gateway.
async fn connections_accepted(gw: &TestGateway) -> u64 {
    gw.get("/metrics", &[])
        .await
        .text()
        .lines()
        .find(|l| {
            l.starts_with("tideway_connections_accepted_total") && l.contains("protocol=\"http1\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the accepted-connections counter")
}

#[tokio::test]
async fn publishes_share_one_kept_alive_connection() {
    let gw = TestGateway::start().await;
    let client = Client::new(&url(&gw), Some(API_KEY)).unwrap();
    let before = connections_accepted(&gw).await;
    for n in 0..20 {
        client
            .publish(&["nobody"], &format!("k{n}"), None, "x")
            .await
            .unwrap();
    }
    // One for the publishes, one for this question.
    assert_eq!(connections_accepted(&gw).await - before, 2);
}

#[tokio::test]
async fn a_rate_limited_publish_waits_for_retry_after_and_is_delivered_once() {
    let keys = tideway_http::ApiKeys::from_json(
        r#"{"keys": [{"name": "slow", "key": "slow-secret", "scopes": ["publish"], "publishRate": {"perSecond": 1, "burst": 1}}]}"#,
    )
    .unwrap();
    let http = tideway_http::HttpConfig {
        api_keys: tideway_http::KeyRing::new(keys),
        ..tideway_http::HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, Default::default(), Default::default()).await;
    let subscriber = Client::new(&url(&gw), None).unwrap();
    let mut news = subscriber.subscribe(&["news"]).await.unwrap();
    let slow = Client::new(&url(&gw), Some("slow-secret")).unwrap();
    assert!(matches!(
        slow.publish(&["news"], "r1", None, "first").await,
        Ok(Published::Accepted(_))
    ));
    let started = std::time::Instant::now();
    // Over the rate: answered 429 with Retry-After, waited for, sent again, accepted.
    assert!(matches!(
        slow.publish(&["news"], "r2", None, "second").await,
        Ok(Published::Accepted(_))
    ));
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited");
    let no_retries = slow.clone().retries(0);
    match no_retries.publish(&["news"], "r3", None, "x").await {
        Err(err @ ClientError::Api { status: 429, .. }) => assert!(err.is_retryable()),
        other => panic!("expected a 429, got {other:?}"),
    }
    for id in ["r1", "r2"] {
        match news.next().await.unwrap() {
            Some(Message::Event { id: got, .. }) => assert_eq!(got, id, "each once, in order"),
            other => panic!("expected {id}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_gateway_that_never_answers_times_out() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let client = Client::new(&format!("http://{addr}"), Some(API_KEY))
        .unwrap()
        .timeout(Duration::from_millis(200))
        .retries(1);
    match client.publish(&["news"], "t1", None, "x").await {
        Err(err @ ClientError::Timeout(_)) => assert!(err.is_retryable()),
        other => panic!("expected a timeout, got {other:?}"),
    }
    held.abort();
}
