//! Publishes one event.
//!
//!     TIDEWAY_URL=http://127.0.0.1:8080 TIDEWAY_API_KEY=... \
//!         cargo run -p tideway-example --bin publisher -- TOPIC ID DATA [EVENT]
//!
//! Prints `accepted` or `dropped` (no topic had a subscriber); exits 1 on an error.

use std::process::ExitCode;

use tideway_client::{Client, Published};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [topic, id, data, rest @ ..] = args.as_slice() else {
        eprintln!("usage: publisher TOPIC ID DATA [EVENT]");
        return ExitCode::from(2);
    };
    let url = std::env::var("TIDEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("TIDEWAY_API_KEY").ok();
    let client = match Client::new(&url, key.as_deref()) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("publisher: {err}");
            return ExitCode::FAILURE;
        }
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
