//! Subscribes and prints each event as one JSON line: `{"topic","id","event","data"}`.
//!
//!     TIDEWAY_URL=http://127.0.0.1:8080 cargo run -p tideway-example --bin subscriber -- TOPICS [COUNT]
//!
//! TOPICS is comma-separated. With COUNT it exits after that many events. It reconnects by
//! itself and resumes where it left off. A gap (events of some topics may be missing) is
//! printed on stdout too, as `{"gap":{"reason","topics"}}`; the gateway's other messages
//! and the connection's state go to stderr.
//!
//! For private topics, set TIDEWAY_TOKEN_KEY to an API key with the `sign` scope: the
//! example then plays its own backend, asking the gateway for a token (valid
//! TIDEWAY_TOKEN_TTL seconds, default 300) whenever the client needs a new one.

use std::{process::ExitCode, sync::Arc, time::Duration};

use tideway_client::{Client, Message, SubscriptionOptions, TokenProvider};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(topics) = args.first() else {
        eprintln!("usage: subscriber TOPICS [COUNT]");
        return ExitCode::from(2);
    };
    let count: Option<usize> = args.get(1).and_then(|c| c.parse().ok());
    let url = std::env::var("TIDEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let topics: Vec<String> = topics.split(',').map(str::to_owned).collect();
    let options = SubscriptionOptions {
        token_provider: token_provider(&url, &topics),
        on_state: Some(Arc::new(|state| eprintln!("state: {state}"))),
        ..SubscriptionOptions::default()
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let subscribed = match Client::new(&url, None) {
        Ok(client) => client.subscribe_with(&names, options).await,
        Err(err) => Err(err),
    };
    let mut subscription = match subscribed {
        Ok(subscription) => subscription,
        Err(err) => {
            eprintln!("subscriber: {err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("subscribed to {}", topics.join(","));
    let mut seen = 0;
    while count.is_none_or(|count| seen < count) {
        match subscription.next().await {
            Ok(Some(Message::Event {
                topic,
                id,
                event,
                data,
            })) => {
                println!(
                    "{}",
                    serde_json::json!({ "topic": topic, "id": id, "event": event, "data": data })
                );
                seen += 1;
            }
            Ok(Some(gap @ Message::Gap { .. })) => {
                if let Message::Gap { reason, topics, .. } = &gap {
                    println!(
                        "{}",
                        serde_json::json!({ "gap": { "reason": reason, "topics": topics } })
                    );
                }
                eprintln!("gateway: {gap:?}");
            }
            Ok(Some(other)) => eprintln!("gateway: {other:?}"),
            Ok(None) => break,
            Err(err) => {
                eprintln!("subscriber: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Asks the gateway for subscriber tokens with TIDEWAY_TOKEN_KEY, as a backend would.
fn token_provider(url: &str, topics: &[String]) -> Option<TokenProvider> {
    let key = std::env::var("TIDEWAY_TOKEN_KEY").ok()?;
    let ttl = std::env::var("TIDEWAY_TOKEN_TTL")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(300);
    let signer = Client::new(url, Some(&key)).ok()?;
    let topics = topics.to_vec();
    Some(Arc::new(move || {
        let (signer, topics) = (signer.clone(), topics.clone());
        Box::pin(async move {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let token = signer
                .create_token("example-subscriber", &names, Duration::from_secs(ttl))
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("token: fetched a new one");
            Ok(token)
        })
    }))
}
