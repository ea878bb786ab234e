//! `cargo xtask e2e`: the examples against real gateways.
//!
//! Builds the gateway and the examples, starts a gateway for real (one node on its
//! in-memory store; then three nodes sharing a real redis-server), and runs every
//! example's subscriber against every example's publisher, checking that each event
//! arrives intact: id, event type, multi-line data, non-ASCII text. Results go to
//! `test-results/<date>-<commit>-e2e.json` and `.md`.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    packages::Installed,
    procs::{Processes, WORKER_SECRET, free_port, start_redis, start_worker, wait_listening},
};

const KEY: &str = "e2e-key";

/// The events every publisher sends: (id, data, event type).
const EVENTS: &[(&str, &str, Option<&str>)] = &[
    ("e1", "hello", None),
    ("e2", "line one\nline two\n\nline four", Some("update")),
    ("e3", "ünïcödé — 日本語 ✓", None),
];

/// One language's examples. Every example takes the same arguments:
/// `publisher TOPIC ID DATA [EVENT]` (prints `accepted` or `dropped`), `publisher --batch
/// TOPIC` (reads `{"id","data","event"}` lines on stdin, publishes them in one batch and
/// prints each one's outcome on its own line) and
/// `subscriber TOPICS COUNT` (says `subscribed` on stderr once its stream is open, then
/// prints each event as a JSON line `{"topic","id","event","data"}`).
struct Language {
    name: &'static str,
    /// The publisher's program and the arguments before the common ones.
    publisher: Vec<String>,
    /// The subscriber's program and the arguments before the common ones.
    subscriber: Vec<String>,
}

impl Language {
    fn command(program: &[String]) -> Command {
        let mut command = Command::new(&program[0]);
        command.args(&program[1..]);
        command
    }
}

/// Every language's examples, on their installed packages (see [`crate::packages`]).
fn languages(root: &Path, installed: &Installed) -> Vec<Language> {
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let python = path(installed.python.clone());
    let script = |name: &str| path(root.join("examples").join("python").join(name));
    let node = |name: &str| vec!["node".into(), path(installed.typescript.join(name))];
    vec![
        Language {
            name: "rust",
            publisher: vec![path(installed.rust_bin.join("publisher"))],
            subscriber: vec![path(installed.rust_bin.join("subscriber"))],
        },
        Language {
            name: "go",
            publisher: vec![path(installed.go_bin.join("publisher"))],
            subscriber: vec![path(installed.go_bin.join("subscriber"))],
        },
        Language {
            name: "typescript",
            publisher: node("publisher.js"),
            subscriber: node("subscriber.js"),
        },
        Language {
            name: "python",
            publisher: vec![python.clone(), script("publisher.py")],
            subscriber: vec![python, script("subscriber.py")],
        },
    ]
}

pub(crate) fn run(root: &Path) -> Result<(), String> {
    crate::run(
        root,
        "cargo",
        &[
            "build",
            "--quiet",
            "-p",
            "tideway",
            "-p",
            "tideway-embed-example",
        ],
    )?;
    let installed = crate::packages::install(root)?;
    let languages = languages(root, &installed);
    let mut results = Vec::new();

    // One node.
    let mut processes = Processes(Vec::new());
    let single = start_gateway(root, &mut processes, &[])?;
    for sub in &languages {
        for publ in &languages {
            results.push(pair("single-node", sub, publ, &single, &single, false));
        }
    }
    // Every publisher's batch call, all events in one request.
    for publ in &languages {
        results.push(pair(
            "single-node-batch",
            &languages[0],
            publ,
            &single,
            &single,
            true,
        ));
    }
    drop(processes);

    // Three nodes and Redis: subscribe on node 2, publish on node 1.
    let mut processes = Processes(Vec::new());
    let url = start_redis(&mut processes)?;
    let mut nodes = Vec::new();
    for n in 1..=3 {
        let id = format!("e2e-{n}");
        nodes.push(start_gateway(
            root,
            &mut processes,
            &["--adapter", "redis", "--redis-url", &url, "--node-id", &id],
        )?);
    }
    for sub in &languages {
        for publ in &languages {
            results.push(pair(
                "three-nodes-redis",
                sub,
                publ,
                &nodes[1],
                &nodes[0],
                false,
            ));
        }
    }
    for publ in &languages {
        let (sub, node) = (&languages[0], &nodes[1]);
        results.push(pair(
            "three-nodes-redis-batch",
            sub,
            publ,
            node,
            &nodes[0],
            true,
        ));
    }
    drop(processes);

    // Three nodes on the Durable-Object Worker (workerd): subscribe on node 2, publish
    // on node 1.
    crate::worker(root)?;
    let mut processes = Processes(Vec::new());
    let url = start_worker(root, &mut processes)?;
    let mut nodes = Vec::new();
    for n in 1..=3 {
        let id = format!("e2e-do-{n}");
        nodes.push(start_gateway(
            root,
            &mut processes,
            &[
                "--adapter",
                "do",
                "--do-url",
                &url,
                "--do-secret",
                WORKER_SECRET,
                "--node-id",
                &id,
            ],
        )?);
    }
    for sub in &languages {
        for publ in &languages {
            let setup = "three-nodes-worker";
            results.push(pair(setup, sub, publ, &nodes[1], &nodes[0], false));
        }
    }
    for publ in &languages {
        let setup = "three-nodes-worker-batch";
        results.push(pair(setup, &languages[0], publ, &nodes[1], &nodes[0], true));
    }
    drop(processes);

    results.push(embedded(root, &languages[0]));

    // Faults under every language's subscriber.
    for language in &languages {
        results.extend(crate::faults::run(
            root,
            language.name,
            &language.subscriber,
        ));
    }

    let passed = results.iter().all(|r| r["passed"] == true);
    write_results(root, &results)?;
    if passed {
        eprintln!("xtask: e2e passed ({} runs)", results.len());
        Ok(())
    } else {
        let failed: Vec<String> = results
            .iter()
            .filter(|r| r["passed"] != true)
            .map(|r| {
                format!(
                    "{} {}→{}: {}",
                    r["setup"], r["publisher"], r["subscriber"], r["error"]
                )
            })
            .collect();
        Err(format!("e2e failed:\n  {}", failed.join("\n  ")))
    }
}

fn start_gateway(root: &Path, processes: &mut Processes, flags: &[&str]) -> Result<String, String> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new(root.join("target").join("debug").join("tideway"))
        .args(["--listen", &addr, "--api-keys", KEY])
        .args(flags)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start tideway: {e}"))?;
    processes.0.push(child);
    wait_listening(&addr)?;
    Ok(format!("http://{addr}"))
}

/// Runs one subscriber against one publisher (its batch call, if `batch`) and says what
/// arrived.
fn pair(
    setup: &str,
    sub: &Language,
    publ: &Language,
    sub_url: &str,
    pub_url: &str,
    batch: bool,
) -> Value {
    let topic = format!("e2e-{setup}-{}-{}", publ.name, sub.name);
    let started = Instant::now();
    let outcome = exchange(sub, publ, sub_url, pub_url, &topic, batch);
    let (passed, error, received) = match outcome {
        Ok(received) => (true, Value::Null, received),
        Err((error, received)) => (false, Value::String(error), received),
    };
    json!({
        "setup": setup,
        "publisher": publ.name,
        "subscriber": sub.name,
        "topic": topic,
        "passed": passed,
        "error": error,
        "received": received,
        "seconds": started.elapsed().as_secs_f64(),
    })
}

fn exchange(
    sub: &Language,
    publ: &Language,
    sub_url: &str,
    pub_url: &str,
    topic: &str,
    batch: bool,
) -> Result<Vec<Value>, (String, Vec<Value>)> {
    let fail = |e: String| (e, Vec::new());
    let mut child = Language::command(&sub.subscriber)
        .args([topic.to_owned(), EVENTS.len().to_string()])
        .env("TIDEWAY_URL", sub_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("start the {} subscriber: {e}", sub.name)))?;
    let mut guard = Processes(Vec::new());
    // The subscriber says on stderr when its stream is open.
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| fail("no stderr".into()))?;
    let (ready, is_ready) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("subscribed") {
                let _ = ready.send(());
            }
        }
    });
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no stdout".into()))?;
    guard.0.push(child);
    is_ready
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| fail(format!("the {} subscriber did not connect", sub.name)))?;
    if batch {
        publish_batch(publ, pub_url, topic)
    } else {
        publish_each(publ, pub_url, topic)
    }
    .map_err(fail)?;
    let (lines, got) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut text);
        let _ = lines.send(text);
    });
    let text = got.recv_timeout(Duration::from_secs(20)).map_err(|_| {
        fail(format!(
            "the {} subscriber did not get every event in time",
            sub.name
        ))
    })?;
    let received: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let expected: Vec<Value> = EVENTS
        .iter()
        .map(|(id, data, event)| json!({ "topic": topic, "id": id, "event": event, "data": data }))
        .collect();
    if received == expected {
        Ok(received)
    } else {
        Err((
            format!(
                "received {} events, not the {} sent intact",
                received.len(),
                expected.len()
            ),
            received,
        ))
    }
}

/// Publishes every event of [`EVENTS`] to `topic`, one run of `publ`'s publisher each.
fn publish_each(publ: &Language, pub_url: &str, topic: &str) -> Result<(), String> {
    for (id, data, event) in EVENTS {
        let output = Language::command(&publ.publisher)
            .args([topic, id, data])
            .args(event)
            .env("TIDEWAY_URL", pub_url)
            .env("TIDEWAY_API_KEY", KEY)
            .output()
            .map_err(|e| format!("run the {} publisher: {e}", publ.name))?;
        let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || said != "accepted" {
            return Err(format!(
                "the {} publisher said {said:?} ({}): {}",
                publ.name,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(())
}

/// Publishes every event of [`EVENTS`] to `topic` in one batch with `publ`'s publisher.
fn publish_batch(publ: &Language, pub_url: &str, topic: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Language::command(&publ.publisher)
        .args(["--batch", topic])
        .env("TIDEWAY_URL", pub_url)
        .env("TIDEWAY_API_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run the {} publisher: {e}", publ.name))?;
    let lines: String = EVENTS
        .iter()
        .map(|(id, data, event)| format!("{}\n", json!({ "id": id, "data": data, "event": event })))
        .collect();
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(lines.as_bytes())
        .map_err(|e| format!("write the batch: {e}"))?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("run the {} publisher: {e}", publ.name))?;
    let said = String::from_utf8_lossy(&output.stdout);
    let outcomes: Vec<&str> = said.lines().map(str::trim).collect();
    if !output.status.success() || outcomes != vec!["accepted"; EVENTS.len()] {
        return Err(format!(
            "the {} publisher's batch said {outcomes:?} ({}): {}",
            publ.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// The embedding example: its own `POST /orders` publishes into the engine it embeds, and
/// a subscriber of its Tideway routes receives the order.
fn embedded(root: &Path, sub: &Language) -> Value {
    let started = Instant::now();
    let outcome = (|| -> Result<Vec<Value>, String> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut processes = Processes(Vec::new());
        let child = Command::new(
            root.join("target")
                .join("debug")
                .join("tideway-embed-example"),
        )
        .env("EMBED_LISTEN", &addr)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the embedding example: {e}"))?;
        processes.0.push(child);
        wait_listening(&addr)?;
        let mut subscriber = Language::command(&sub.subscriber)
            .args(["orders", "1"])
            .env("TIDEWAY_URL", format!("http://{addr}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the subscriber: {e}"))?;
        let stderr = subscriber.stderr.take().ok_or("no stderr")?;
        let stdout = subscriber.stdout.take().ok_or("no stdout")?;
        processes.0.push(subscriber);
        let (ready, is_ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("subscribed") {
                    let _ = ready.send(());
                }
            }
        });
        is_ready
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| "the subscriber did not connect".to_owned())?;
        let order = "2 × espresso\nto go";
        let mut stream = std::net::TcpStream::connect(&addr).map_err(|e| e.to_string())?;
        let request = format!(
            "POST /orders HTTP/1.1\r\nhost: shop\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{order}",
            order.len()
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).map_err(|e| e.to_string())?;
        if !answer.contains("\"announced\":true") {
            return Err(format!("the shop answered {answer:?}"));
        }
        let (lines, got) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = lines.send(line);
        });
        let line = got
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| "the subscriber got no order in time".to_owned())?;
        let received: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))?;
        let expected =
            json!({ "topic": "orders", "id": "order-1", "event": "order.created", "data": order });
        if received == expected {
            Ok(vec![received])
        } else {
            Err(format!("received {received}, expected {expected}"))
        }
    })();
    let (passed, error, received) = match outcome {
        Ok(received) => (true, Value::Null, received),
        Err(error) => (false, Value::String(error), Vec::new()),
    };
    json!({
        "setup": "embedded-in-a-hyper-service",
        "publisher": "embed (in process)",
        "subscriber": sub.name,
        "topic": "orders",
        "passed": passed,
        "error": error,
        "received": received,
        "seconds": started.elapsed().as_secs_f64(),
    })
}

fn write_results(root: &Path, results: &[Value]) -> Result<(), String> {
    let (date, commit) = crate::bench::run_id(root);
    let dir: PathBuf = root.join("test-results");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let stem = format!("{date}-{commit}-e2e");
    let report = json!({ "kind": "e2e", "date": date, "commit": commit, "events": EVENTS.len(), "results": results });
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(format!("{stem}.json")), text + "\n").map_err(|e| e.to_string())?;
    let mut md = format!(
        "# End-to-end run, {date} (commit {commit})\n\nEach publisher sends {} events (plain, multi-line with an event type, non-ASCII) to each subscriber.\n\n| setup | publisher | subscriber | result |\n|---|---|---|---|\n",
        EVENTS.len()
    );
    for r in results {
        let verdict = if r["passed"] == true {
            "pass".to_owned()
        } else {
            format!("FAIL: {}", r["error"].as_str().unwrap_or(""))
        };
        md.push_str(&format!(
            "| {} | {} | {} | {verdict} |\n",
            r["setup"].as_str().unwrap_or(""),
            r["publisher"].as_str().unwrap_or(""),
            r["subscriber"].as_str().unwrap_or("")
        ));
    }
    std::fs::write(dir.join(format!("{stem}.md")), md).map_err(|e| e.to_string())?;
    eprintln!("xtask: wrote test-results/{stem}.json and .md");
    Ok(())
}
