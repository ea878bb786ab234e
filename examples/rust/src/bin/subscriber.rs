//! Subscribes and prints each event as one JSON line: `{"topic","id","event","data"}`.
//!
//!     TIDEWAY_URL=http://127.0.0.1:8080 cargo run -p tideway-example --bin subscriber -- TOPICS [COUNT]
//!
//! TOPICS is comma-separated. With COUNT it exits after that many events. It reconnects by
//! itself and resumes where it left off; system messages go to stderr.

use std::process::ExitCode;

use tideway_client::{Client, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(topics) = args.first() else {
        eprintln!("usage: subscriber TOPICS [COUNT]");
        return ExitCode::from(2);
    };
    let count: Option<usize> = args.get(1).and_then(|c| c.parse().ok());
    let url = std::env::var("TIDEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let topics: Vec<&str> = topics.split(',').collect();
    let subscribed = match Client::new(&url, None) {
        Ok(client) => client.subscribe(&topics).await,
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
