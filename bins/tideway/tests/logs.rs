//! What `tideway --log-format json` writes: one JSON object per line, with the fields an
//! operator needs, and never a key.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use tideway_test_util::Client;

#[tokio::test]
async fn json_logs_name_connections_drops_and_auth_failures_without_secrets() {
    let port = tideway_test_util::free_port();
    let addr = format!("127.0.0.1:{port}");
    let secret = "very-secret-key-123";
    let mut child = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args([
            "--listen",
            &addr,
            "--api-keys",
            secret,
            "--log-format",
            "json",
            "--node-id",
            "logger",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start tideway");
    tideway_test_util::wait_listening(&addr);
    let client = Client {
        addr: addr.parse().unwrap(),
    };
    let sse = client.subscribe("/v1/stream?topic=logged", &[]).await;
    drop(sse);
    let headers = [
        format!("authorization: Bearer {secret}"),
        "x-sse-topic: nowhere".into(),
        "x-sse-id: lost-1".into(),
    ];
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let reply = client
        .raw(tideway_test_util::request("POST", "/v1/publish", &headers, b"x").as_bytes())
        .await;
    assert_eq!(reply.json()["status"], "dropped");
    client
        .get(
            "/v1/admin/topics",
            &["authorization: Bearer wrong-guess-456"],
        )
        .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();

    let stderr = child.stderr.take().expect("stderr");
    let lines: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    let _ = child.wait();
    let logs: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |message: &str| {
        logs.iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"))
            .clone()
    };
    let opened = find("connection opened");
    assert_eq!(opened["fields"]["topics"], "logged");
    let closed = find("connection closed");
    assert_eq!(
        closed["fields"]["connection"],
        opened["fields"]["connection"]
    );
    assert!(closed["fields"]["duration_s"].is_number());
    let dropped = find("dropped: no subscribers");
    assert_eq!(
        (
            dropped["fields"]["topic"].as_str(),
            dropped["fields"]["id"].as_str()
        ),
        (Some("nowhere"), Some("lost-1"))
    );
    let refused = find("auth failure");
    assert_eq!(refused["level"], "WARN");
    for line in &lines {
        assert!(
            !line.contains(secret) && !line.contains("wrong-guess-456"),
            "a key was logged: {line}"
        );
    }
}
