//! The store conformance suite against the Redis store and a real `redis-server`.

use tideway_store_redis::{RedisConfig, RedisStore};
use tideway_test_util::{RedisServer, conformance::Settings};

async fn make(settings: Settings) -> (RedisStore, RedisServer) {
    let server = RedisServer::start();
    let store = RedisStore::connect(RedisConfig {
        url: server.url(),
        history: settings.history,
        topic_grace: settings.topic_grace,
        ..RedisConfig::default()
    })
    .await
    .expect("connect to the test's redis-server");
    (store, server)
}

tideway_test_util::conformance_tests!(make);
