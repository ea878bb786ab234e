//! The store conformance suite against the Redis Cluster mode and a real six-process
//! Redis Cluster.
//!
//! One cluster serves the tests that run at the same time (each under its own key
//! prefix), and goes when the last of them ends: starting six processes per test would
//! cost more than the tests.

use std::sync::{
    Arc, Mutex, Weak,
    atomic::{AtomicUsize, Ordering::Relaxed},
};

use tideway_store_redis::{RedisClusterStore, RedisConfig};
use tideway_test_util::{RedisCluster, conformance::Settings};

static CLUSTER: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
static PREFIXES: AtomicUsize = AtomicUsize::new(0);

fn cluster() -> Arc<RedisCluster> {
    let mut shared = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(RedisCluster::start());
    *shared = Arc::downgrade(&cluster);
    cluster
}

async fn make(settings: Settings) -> (RedisClusterStore, Arc<RedisCluster>) {
    let cluster = tokio::task::spawn_blocking(cluster)
        .await
        .expect("start the Redis Cluster");
    let store = RedisClusterStore::connect(RedisConfig {
        url: cluster.urls(),
        prefix: format!("t{}:", PREFIXES.fetch_add(1, Relaxed)),
        history: settings.history,
        topic_grace: settings.topic_grace,
        ..RedisConfig::default()
    })
    .await
    .expect("connect to the test's Redis Cluster");
    (store, cluster)
}

tideway_test_util::conformance_tests!(make);
