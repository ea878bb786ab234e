//! The store conformance suite against the in-memory store.

use tideway_store_memory::{MemoryConfig, MemoryStore};
use tideway_test_util::conformance::Settings;

async fn make(settings: Settings) -> (MemoryStore, ()) {
    let store = MemoryStore::new(MemoryConfig {
        history: settings.history,
        topic_grace: settings.topic_grace,
    });
    (store, ())
}

tideway_test_util::conformance_tests!(make);
