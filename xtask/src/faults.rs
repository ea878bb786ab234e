//! `cargo xtask e2e`'s fault scenarios, run for every language's subscriber example: a
//! node drained (SIGTERM) or killed (-9) under the client, a history too short for the
//! outage, a subscriber token expiring mid-stream, and a gateway that is down when the
//! client starts. Clients reach the gateway through a small TCP proxy standing in for a
//! load balancer: it sends each new connection to the first node that accepts it, and can
//! cut every connection and refuse new ones for a while.
//!
//! Each run counts, over the ids published in order, the events lost without a gap naming
//! their topic, the duplicates and the reorders; all three must be zero, and the scenario's
//! own sign must show (the gap, the fresh tokens, the reconnect).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::procs::{Processes, free_port, start_redis, wait_listening};

const KEY: &str = "e2e-key";
const SIGNER: &str = "e2e-signer-key-0123456789";
const SECRET: &str = "e2e-token-secret-0123456789abcdef0123456789";

/// A stand-in load balancer.
struct Proxy {
    addr: String,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(backends: Vec<String>) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_up, conns) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming().map_while(Result::ok) {
                if !is_up.load(SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let Some(outbound) = backends.iter().find_map(|b| TcpStream::connect(b).ok())
                else {
                    continue;
                };
                let pairs = [(inbound.try_clone(), outbound.try_clone())];
                let [(Ok(client), Ok(server))] = pairs else {
                    continue;
                };
                if let Ok(mut list) = conns.lock() {
                    list.extend(
                        [client.try_clone().ok(), server.try_clone().ok()]
                            .into_iter()
                            .flatten(),
                    );
                }
                pump(inbound, server);
                pump(outbound, client);
            }
        });
        Ok(Self { addr, up, open })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection through it and refuses new ones, or lets them through again.
    fn set_up(&self, up: bool) {
        self.up.store(up, SeqCst);
        if !up && let Ok(mut list) = self.open.lock() {
            for conn in list.drain(..) {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` to `to` on a thread until either side ends.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// A gateway process.
struct Node {
    child: Child,
    addr: String,
}

impl Node {
    fn start(root: &std::path::Path, addr: &str, flags: &[&str]) -> Result<Self, String> {
        let child = Command::new(root.join("target").join("debug").join("tideway"))
            .args([
                "--listen",
                addr,
                "--api-keys",
                KEY,
                "--token-secret",
                SECRET,
            ])
            .args(["--topic-grace", "60s", "--drain-timeout", "2s"])
            .args(flags)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start tideway: {e}"))?;
        wait_listening(addr)?;
        Ok(Self {
            child,
            addr: addr.to_owned(),
        })
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs one event; Ok if accepted.
fn publish(addr: &str, topic: &str, id: &str) -> Result<(), String> {
    let body = format!("data of {id}");
    let request = format!(
        "POST /v1/publish HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {KEY}\r\nx-sse-topic: {topic}\r\nx-sse-id: {id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("publish {id}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("publish {id}: {e}"))?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    if answer.contains("\"status\":\"accepted\"") {
        Ok(())
    } else {
        Err(format!(
            "publish {id}: {}",
            answer.lines().last().unwrap_or("no answer")
        ))
    }
}

/// A subscriber example running, its stdout lines and stderr kept as they come.
struct Subscriber {
    _child: Processes,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
}

impl Subscriber {
    fn start(
        program: &[String],
        url: &str,
        topic: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut child = Command::new(&program[0])
            .args(&program[1..])
            .arg(topic)
            .env("TIDEWAY_URL", url)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the subscriber: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let said: Arc<Mutex<String>> = Arc::default();
        let (into, err_into) = (lines.clone(), said.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let (Ok(value), Ok(mut lines)) = (serde_json::from_str(&line), into.lock()) {
                    lines.push(value);
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut text) = err_into.lock() {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
        Ok(Self {
            _child: Processes(vec![child]),
            lines,
            stderr: said,
        })
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until `done` holds of what it printed, for up to `secs`.
    fn wait(&self, secs: u64, what: &str, done: impl Fn(&Self) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            if Instant::now() > deadline {
                let said = self.stderr();
                let tail: Vec<&str> = said.lines().rev().take(8).collect();
                return Err(format!(
                    "timed out waiting for {what}; the subscriber said, last first: {tail:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    fn wait_subscribed(&self) -> Result<(), String> {
        self.wait(30, "the subscription to open", |s| {
            s.stderr().contains("subscribed")
        })
    }

    fn wait_for(&self, id: &str) -> Result<(), String> {
        self.wait(30, &format!("event {id}"), |s| {
            s.lines().iter().any(|l| l["id"] == id)
        })
    }
}

/// What a subscriber received against what was published, in order.
#[derive(Default)]
struct Tally {
    delivered: usize,
    lost_silently: usize,
    signalled: usize,
    duplicated: usize,
    reordered: usize,
    gaps: usize,
}

fn tally(published: &[String], received: &[Value], topic: &str) -> Tally {
    let mut t = Tally::default();
    let index = |id: &str| published.iter().position(|p| p == id);
    let mut seen = std::collections::HashSet::new();
    let mut next = 0; // the index of the next event expected
    let mut gap_since_last = false;
    for line in received {
        if let Some(gap) = line.get("gap") {
            t.gaps += 1;
            let names = gap["topics"].as_array().cloned().unwrap_or_default();
            gap_since_last |= names.iter().any(|n| n == topic);
            continue;
        }
        let Some(id) = line["id"].as_str() else {
            continue;
        };
        let Some(at) = index(id) else {
            continue;
        };
        if !seen.insert(at) {
            t.duplicated += 1;
            continue;
        }
        t.delivered += 1;
        if at < next {
            t.reordered += 1;
            continue;
        }
        let skipped = at - next;
        if gap_since_last {
            t.signalled += skipped;
        } else {
            t.lost_silently += skipped;
        }
        next = at + 1;
        gap_since_last = false;
    }
    t
}

fn ids(prefix: &str, range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n}")).collect()
}

fn publish_all(addr: &str, topic: &str, ids: &[String], spacing: Duration) -> Result<(), String> {
    for id in ids {
        publish(addr, topic, id)?;
        std::thread::sleep(spacing);
    }
    Ok(())
}

type Outcome = Result<(Tally, String), String>;

/// A scenario's name and how it runs on a topic.
type Scenario<'a> = (&'static str, &'a dyn Fn(&str) -> Outcome);

/// A node drained or killed under the client, which resumes on the other node.
fn node_lost(root: &std::path::Path, program: &[String], topic: &str, signal: &str) -> Outcome {
    let mut redis = Processes(Vec::new());
    let url = start_redis(&mut redis)?;
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    let flags = |id: &'static str| {
        ["--adapter", "redis", "--redis-url", &url, "--node-id", id].map(str::to_owned)
    };
    let flags_a = flags("fault-a");
    let flags_b = flags("fault-b");
    let node_a = Node::start(
        root,
        &a,
        &flags_a.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let node_b = Node::start(
        root,
        &b,
        &flags_b.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let proxy = Proxy::start(vec![a.clone(), b.clone()])?;
    let sub = Subscriber::start(program, &proxy.url(), topic, &[])?;
    sub.wait_subscribed()?;
    let published = ids("n", 1..=20);
    publish_all(&node_b.addr, topic, &published[..10], Duration::ZERO)?;
    sub.wait_for("n10")?;
    node_a.signal(signal);
    publish_all(
        &node_b.addr,
        topic,
        &published[10..],
        Duration::from_millis(50),
    )?;
    sub.wait_for("n20")?;
    let said = sub.stderr();
    if !said.contains("state: reconnecting") {
        return Err("the client never reconnected: the fault missed it".into());
    }
    Ok((tally(&published, &sub.lines(), topic), said))
}

/// The client cut off while more events than the history holds are published.
fn short_history(root: &std::path::Path, program: &[String], topic: &str) -> Outcome {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let node = Node::start(root, &addr, &["--history", "5"])?;
    let proxy = Proxy::start(vec![addr.clone()])?;
    let sub = Subscriber::start(program, &proxy.url(), topic, &[])?;
    sub.wait_subscribed()?;
    let published = ids("h", 1..=21);
    publish_all(&node.addr, topic, &published[..3], Duration::ZERO)?;
    sub.wait_for("h3")?;
    proxy.set_up(false);
    publish_all(&node.addr, topic, &published[3..20], Duration::ZERO)?;
    proxy.set_up(true);
    // Once the client is back, one more event; what history no longer held must have
    // been named in a gap before it.
    sub.wait(30, "the client to reconnect", |s| {
        s.stderr().matches("state: open").count() >= 2
    })?;
    publish_all(&node.addr, topic, &published[20..], Duration::ZERO)?;
    sub.wait_for("h21")?;
    let t = tally(&published, &sub.lines(), topic);
    if t.gaps == 0 || t.signalled == 0 {
        return Err("no gap surfaced for the events history no longer held".into());
    }
    Ok((t, sub.stderr()))
}

/// Tokens valid 2 s on a private topic: the provider is asked again, the stream goes on.
fn token_expiry(root: &std::path::Path, program: &[String], topic: &str) -> Outcome {
    let dir = std::env::temp_dir().join(format!("tideway-e2e-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let keys = dir.join("keys.json");
    let file = json!({ "keys": [{ "name": "signer", "key": SIGNER, "scopes": ["sign"] }] });
    std::fs::write(&keys, file.to_string()).map_err(|e| e.to_string())?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let node = Node::start(root, &addr, &["--keys-file", &keys.to_string_lossy()])?;
    let env = [("TIDEWAY_TOKEN_KEY", SIGNER), ("TIDEWAY_TOKEN_TTL", "2")];
    let sub = Subscriber::start(program, &format!("http://{addr}"), topic, &env)?;
    sub.wait_subscribed()?;
    let published = ids("t", 1..=30);
    publish_all(&node.addr, topic, &published, Duration::from_millis(200))?;
    sub.wait_for("t30")?;
    let said = sub.stderr();
    let fetched = said.matches("token: fetched").count();
    if fetched < 3 {
        return Err(format!(
            "the token provider was asked {fetched} times over 6 s of 2 s tokens"
        ));
    }
    Ok((tally(&published, &sub.lines(), topic), said))
}

/// The gateway is down when the client starts, and comes up later.
fn down_at_start(root: &std::path::Path, program: &[String], topic: &str) -> Outcome {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let proxy = Proxy::start(vec![addr.clone()])?;
    let sub = Subscriber::start(program, &proxy.url(), topic, &[])?;
    std::thread::sleep(Duration::from_millis(1500));
    if sub.stderr().contains("subscribed") {
        return Err("subscribed with no gateway up".into());
    }
    let node = Node::start(root, &addr, &[])?;
    sub.wait_subscribed()?;
    let published = ids("d", 1..=5);
    publish_all(&node.addr, topic, &published, Duration::ZERO)?;
    sub.wait_for("d5")?;
    Ok((tally(&published, &sub.lines(), topic), sub.stderr()))
}

/// Every scenario for the subscriber `program` of `language`, as e2e results.
pub(crate) fn run(root: &std::path::Path, language: &str, program: &[String]) -> Vec<Value> {
    let scenarios: [Scenario; 5] = [
        ("drain", &|t| node_lost(root, program, t, "-TERM")),
        ("kill-9", &|t| node_lost(root, program, t, "-KILL")),
        ("short-history", &|t| short_history(root, program, t)),
        ("token-expiry", &|t| token_expiry(root, program, t)),
        ("down-at-start", &|t| down_at_start(root, program, t)),
    ];
    let mut results = Vec::new();
    for (name, scenario) in scenarios {
        let topic = if name == "token-expiry" {
            format!("private:fault-{name}-{language}")
        } else {
            format!("fault-{name}-{language}")
        };
        let started = Instant::now();
        let outcome = scenario(&topic);
        let (passed, error, counts, stderr) = match outcome {
            Ok((t, stderr)) => {
                let clean = t.lost_silently == 0 && t.duplicated == 0 && t.reordered == 0;
                let error = (!clean).then(|| {
                    format!(
                        "{} lost silently, {} duplicated, {} reordered",
                        t.lost_silently, t.duplicated, t.reordered
                    )
                });
                let counts = json!({
                    "delivered": t.delivered, "lost_silently": t.lost_silently,
                    "lost_with_gap": t.signalled, "duplicated": t.duplicated,
                    "reordered": t.reordered, "gaps": t.gaps,
                });
                (clean, error, counts, stderr)
            }
            Err(e) => (false, Some(e), Value::Null, String::new()),
        };
        eprintln!(
            "xtask: fault {name} with the {language} subscriber: {}",
            if passed { "passed" } else { "FAILED" }
        );
        results.push(json!({
            "setup": format!("fault-{name}"),
            "publisher": "xtask",
            "subscriber": language,
            "topic": topic,
            "passed": passed,
            "error": error,
            "counts": counts,
            "subscriber_said": stderr.lines().rev().take(20).collect::<Vec<_>>(),
            "seconds": started.elapsed().as_secs_f64(),
        }));
    }
    results
}
