//! The store conformance suite against the Durable-Object emulation.

use tideway_store_do::{DoConfig, DoStore};
use tideway_test_util::conformance::Settings;

async fn make(settings: Settings) -> (DoStore, ()) {
    let store = DoStore::new(DoConfig {
        history: settings.history,
        topic_grace: settings.topic_grace,
    });
    (store, ())
}

tideway_test_util::conformance_tests!(make);
