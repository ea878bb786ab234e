//! The store conformance suite against the Worker (`worker/`) on workerd, Cloudflare's
//! runtime, started by the test with its storage in a temporary directory.

use tideway_store_do::{WorkerConfig, WorkerStore};
use tideway_test_util::{WORKER_SECRET, Worker, conformance::Settings};

async fn make(settings: Settings) -> (WorkerStore, Worker) {
    let worker = tokio::task::spawn_blocking(Worker::start)
        .await
        .expect("start the Worker");
    let store = WorkerStore::connect(WorkerConfig {
        url: worker.url(),
        secret: WORKER_SECRET.to_owned(),
        ca_cert: None,
        history: settings.history,
        topic_grace: settings.topic_grace,
        node_ttl: std::time::Duration::from_secs(5),
    })
    .await
    .expect("connect to the test's Worker");
    (store, worker)
}

tideway_test_util::conformance_tests!(make);

/// Over https: a Worker whose certificate the system does not trust is refused, naming
/// why; trusted through `ca_cert`, the store works, its channel (a WebSocket) included.
#[tokio::test]
async fn the_worker_over_https_with_a_ca_of_its_own() {
    let worker = tokio::task::spawn_blocking(Worker::start_tls)
        .await
        .expect("start the Worker");
    let config = |ca_cert| WorkerConfig {
        url: worker.url(),
        secret: WORKER_SECRET.to_owned(),
        ca_cert,
        history: 100,
        topic_grace: std::time::Duration::ZERO,
        node_ttl: std::time::Duration::from_secs(5),
    };
    let Err(refused) = WorkerStore::connect(config(None)).await else {
        panic!("a certificate of an unknown CA was trusted");
    };
    let why = std::error::Error::source(&refused)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(why.contains("certificate"), "{why}");
    let store = WorkerStore::connect(config(Some(worker.ca())))
        .await
        .expect("connect with the test's CA");
    tideway_test_util::conformance::append_delivers_and_keeps_history(store).await;
}
