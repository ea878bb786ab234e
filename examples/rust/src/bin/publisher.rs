//! Publishes one event, or a batch of them.
//!
//!     TIDEWAY_URL=http://127.0.0.1:8080 TIDEWAY_API_KEY=... \
//!         cargo run -p tideway-example --bin publisher -- TOPIC ID DATA [EVENT]
//!     ... cargo run -p tideway-example --bin publisher -- --batch TOPIC < events.jsonl
//!
//! Prints `accepted` or `dropped` (no topic had a subscriber); exits 1 on an error. With
//! `--batch`, reads one JSON object `{"id", "data", "event"?}` per line of stdin,
//! publishes them all to TOPIC in one request, and prints each one's outcome on its own
//! line (`accepted`, `dropped`, or the error code).

use std::{io::Read, process::ExitCode};

use tideway_client::{BatchEvent, BatchOutcome, Client, Published};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = std::env::var("TIDEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("TIDEWAY_API_KEY").ok();
    let client = match Client::new(&url, key.as_deref()) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("publisher: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let [flag, topic] = args.as_slice()
        && flag == "--batch"
    {
        return batch(&client, topic).await;
    }
    let [topic, id, data, rest @ ..] = args.as_slice() else {
        eprintln!("usage: publisher TOPIC ID DATA [EVENT] | --batch TOPIC");
        return ExitCode::from(2);
    };
    match client
        .publish(&[topic], id, rest.first().map(String::as_str), data)
        .await
    {
        Ok(Published::Accepted(_)) => println!("accepted"),
        Ok(Published::Dropped) => println!("dropped"),
        Err(err) => {
            eprintln!("publisher: {err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Publishes the events of stdin to `topic` in one request.
async fn batch(client: &Client, topic: &str) -> ExitCode {
    let mut input = String::new();
    if let Err(err) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("publisher: could not read stdin: {err}");
        return ExitCode::FAILURE;
    }
    let mut lines = Vec::new();
    for line in input.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => lines.push(value),
            Err(err) => {
                eprintln!("publisher: a line of stdin is not an event: {err}");
                return ExitCode::from(2);
            }
        }
    }
    let topics = [topic];
    let events: Vec<BatchEvent<'_>> = lines
        .iter()
        .map(|value| BatchEvent {
            topics: &topics,
            id: value["id"].as_str().unwrap_or_default(),
            event: value["event"].as_str(),
            data: value["data"].as_str().unwrap_or_default(),
        })
        .collect();
    match client.publish_batch(&events, false).await {
        Ok(outcomes) => {
            for outcome in outcomes {
                match outcome {
                    BatchOutcome::Published(Published::Accepted(_)) => println!("accepted"),
                    BatchOutcome::Published(Published::Dropped) => println!("dropped"),
                    BatchOutcome::Refused { code, .. } => println!("{code}"),
                    BatchOutcome::Skipped => println!("skipped"),
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("publisher: {err}");
            ExitCode::FAILURE
        }
    }
}
