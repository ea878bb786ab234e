//! The store conformance suite against the Durable-Object emulation: as it runs by
//! default, and in its test mode (every idle object evicted and started again from its
//! storage, messages interleaved at every await between objects).

use tideway_store_do::{DoConfig, DoStore};
use tideway_test_util::conformance::Settings;

mod default {
    use super::*;

    async fn make(settings: Settings) -> (DoStore, ()) {
        let store = DoStore::new(DoConfig {
            history: settings.history,
            topic_grace: settings.topic_grace,
            ..DoConfig::default()
        });
        (store, ())
    }

    tideway_test_util::conformance_tests!(make);
}

mod evicting_and_interleaving {
    use super::*;

    async fn make(settings: Settings) -> (DoStore, ()) {
        let store = DoStore::new(DoConfig {
            history: settings.history,
            topic_grace: settings.topic_grace,
            ..DoConfig::testing()
        });
        (store, ())
    }

    tideway_test_util::conformance_tests!(make);
}
