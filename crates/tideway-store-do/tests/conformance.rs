//! The store conformance suite against the Durable-Object emulation: as it runs by
//! default, and in its test mode (every idle object evicted and started again from its
//! storage, messages interleaved at every await between objects).

use tideway_store_do::{DoConfig, DoStore};
use tideway_test_util::conformance::Settings;

fn store(settings: &Settings, base: DoConfig) -> DoStore {
    DoStore::new(DoConfig {
        history: settings.history,
        topic_grace: settings.topic_grace,
        ..base
    })
}

mod default {
    use super::*;

    async fn make(settings: Settings) -> (DoStore, ()) {
        (store(&settings, DoConfig::default()), ())
    }

    tideway_test_util::conformance_tests!(make);
}

mod evicting_and_interleaving {
    use super::*;

    async fn make(settings: Settings) -> (DoStore, ()) {
        (store(&settings, DoConfig::testing()), ())
    }

    tideway_test_util::conformance_tests!(make);
}
