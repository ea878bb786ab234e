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
        history: settings.history,
        topic_grace: settings.topic_grace,
        node_ttl: std::time::Duration::from_secs(5),
    })
    .await
    .expect("connect to the test's Worker");
    (store, worker)
}

tideway_test_util::conformance_tests!(make);
