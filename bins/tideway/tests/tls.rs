//! HTTPS for real: certificates made by `openssl` at test time, a `tideway` process with
//! `--tls-cert`/`--tls-key`, and `curl` and `openssl s_client` as the clients.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tideway_test_util::{API_KEY, TestCa, TidewayProcess};

/// A directory of this test's certificates, removed with it.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tideway-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for certificates");
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Makes `<stem>.pem` and `<stem>.key`: a certificate for localhost and 127.0.0.1
    /// with common name `cn`, signed by this test's CA (`ca.pem`), which clients trust.
    fn make(&self, stem: &str, cn: &str) {
        TestCa::in_dir(&self.dir).issue(stem, cn);
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(certs: &Certs) -> TidewayProcess {
    let cert = certs.path("server.pem");
    let key = certs.path("server.key");
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    TidewayProcess::start(
        Path::new(env!("CARGO_BIN_EXE_tideway")),
        &args,
        std::iter::empty::<(&str, &str)>(),
    )
}

/// `curl` against the node over HTTPS, trusting `ca`; returns what it printed.
fn curl(ca: &Path, args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .expect("curl is installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn url(node: &TidewayProcess, path: &str) -> String {
    let port = node.addr.rsplit(':').next().unwrap();
    format!("https://localhost:{port}{path}")
}

fn publish(node: &TidewayProcess, ca: &Path, topic: &str, id: &str, version: &str) -> String {
    curl(
        ca,
        &[
            version,
            "-X",
            "POST",
            "-H",
            &format!("authorization: Bearer {API_KEY}"),
            "-H",
            &format!("x-sse-topic: {topic}"),
            "-H",
            &format!("x-sse-id: {id}"),
            "--data",
            "hello",
            "--write-out",
            " %{http_version}",
            &url(node, "/v1/publish"),
        ],
    )
}

#[test]
fn https_serves_streams_over_http2_and_http1() {
    let certs = Certs::new("serve");
    certs.make("server", "localhost");
    let node = start(&certs);
    let ca = certs.path("ca.pem");
    // Ten streams on one HTTP/2 connection (as a page's EventSources share one), read
    // for two seconds while an event is published.
    let streams: Vec<String> = (0..10)
        .map(|_| url(&node, "/v1/stream?topic=news"))
        .collect();
    let mut args = vec![
        "--http2",
        "--parallel",
        "--parallel-max",
        "10",
        "--no-buffer",
        "--max-time",
        "3",
        "--write-out",
        "\nconnects=%{num_connects}\n",
    ];
    args.extend(streams.iter().map(String::as_str));
    let reader = std::thread::spawn({
        let ca = ca.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&ca, &args)
        }
    });
    // Publish once all ten are subscribed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = curl(&ca, &["--http2", &url(&node, "/metrics")]);
        if metrics.contains("tideway_connections{node=")
            && metrics.lines().any(|l| {
                l.starts_with("tideway_connections{") && l.contains("sse") && l.ends_with(" 10")
            })
        {
            break;
        }
        assert!(Instant::now() < deadline, "ten streams open: {metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = publish(&node, &ca, "news", "h2-1", "--http2");
    assert!(
        answer.contains("\"accepted\"") && answer.ends_with(" 2"),
        "{answer}"
    );
    let read = reader.join().unwrap();
    assert_eq!(
        read.matches("id: h2-1").count(),
        10,
        "every stream of the shared connection got the event: {read}"
    );
    let metrics = curl(&ca, &["--http1.1", &url(&node, "/metrics")]);
    let accepted = |protocol: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("tideway_connections_accepted_total")
                    && l.contains(&format!("protocol=\"{protocol}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let connects: u64 = read
        .lines()
        .filter_map(|l| l.strip_prefix("connects=")?.parse::<u64>().ok())
        .sum();
    assert_eq!(connects, 1, "the ten streams shared one connection: {read}");
    assert!(accepted("h2") >= 3, "{metrics}");
    assert_eq!(accepted("http1-tls"), 1, "{metrics}");
    assert_eq!(accepted("http1"), 0, "nothing plain: {metrics}");
    // HTTP/1.1 over TLS keeps working for clients that ask for it.
    let health = curl(
        &ca,
        &[
            "--http1.1",
            "--write-out",
            " %{http_version}",
            &url(&node, "/healthz"),
        ],
    );
    assert!(health.ends_with(" 1.1"), "{health}");
}

/// The subject of the certificate the node presents to a new connection.
fn presented_subject(node: &TidewayProcess) -> String {
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &node.addr,
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut pem = String::new();
    std::io::Read::read_to_string(client.stdout.as_mut().unwrap(), &mut pem).unwrap();
    let _ = client.wait();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl x509");
    std::io::Write::write_all(x509.stdin.as_mut().unwrap(), pem.as_bytes()).unwrap();
    let output = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_replaced_certificate_is_presented_to_new_connections() {
    let certs = Certs::new("reload");
    certs.make("server", "first");
    let node = start(&certs);
    assert!(presented_subject(&node).ends_with("CN = first"));
    // A half-written replacement is not used; the certificate in use stays.
    std::fs::write(
        certs.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\ntrunc",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert!(presented_subject(&node).ends_with("CN = first"));
    // The renewed pair, written as cert-manager does: key and certificate replaced.
    certs.make("renewed", "second");
    std::fs::copy(certs.path("renewed.key"), certs.path("server.key")).unwrap();
    std::fs::copy(certs.path("renewed.pem"), certs.path("server.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !presented_subject(&node).ends_with("CN = second") {
        assert!(Instant::now() < deadline, "the renewed certificate in use");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn files_that_cannot_serve_stop_the_start_naming_the_file() {
    let certs = Certs::new("refuse");
    certs.make("server", "localhost");
    certs.make("other", "other");
    let cases = [
        (
            certs.path("server.key"),
            certs.path("server.key"),
            "holds no PEM certificate",
        ),
        (
            certs.path("server.pem"),
            certs.path("missing.key"),
            "cannot read",
        ),
        (
            certs.path("server.pem"),
            certs.path("other.key"),
            "the key is not the certificate's",
        ),
    ];
    for (cert, key, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_tideway"))
            .args(["--listen", "127.0.0.1:0", "--api-keys", "k"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output()
            .expect("run tideway");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

#[tokio::test]
async fn the_rust_client_publishes_and_subscribes_over_https() {
    let certs = Certs::new("client");
    certs.make("server", "localhost");
    let node = start(&certs);
    let port = node.addr.rsplit(':').next().unwrap();
    let base = format!("https://localhost:{port}");
    let ca = std::fs::read(certs.path("ca.pem")).unwrap();
    let client = tideway_client::Client::new(&base, Some(API_KEY))
        .unwrap()
        .trusting(&ca)
        .unwrap();
    let mut news = client
        .subscribe(&["secure-news"])
        .await
        .expect("subscribe over https");
    let published = client
        .publish(&["secure-news"], "c1", None, "over https")
        .await
        .expect("publish over https");
    assert!(
        matches!(published, tideway_client::Published::Accepted(_)),
        "{published:?}"
    );
    let message = tokio::time::timeout(Duration::from_secs(10), news.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("not the end");
    assert!(
        matches!(&message, tideway_client::Message::Event { id, data, .. } if id == "c1" && data == "over https"),
        "{message:?}"
    );
    // Without the gateway's certificate trusted, the handshake fails.
    let untrusted = tideway_client::Client::new(&base, Some(API_KEY)).unwrap();
    assert!(matches!(
        untrusted.publish(&["secure-news"], "c2", None, "x").await,
        Err(tideway_client::ClientError::Connect(_))
    ));
}
