//! The keys in force, replaceable while the server runs (a keys file that changed).

use std::{
    fmt,
    sync::{Arc, PoisonError, RwLock},
};

use super::ApiKeys;

/// The keys in force. Cloning bumps a reference count.
#[derive(Clone)]
pub struct KeyRing {
    keys: Arc<RwLock<Arc<ApiKeys>>>,
    /// Counts replacements, so a watcher wakes on each (see [`KeyRing::changes`]).
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for KeyRing {
    fn default() -> Self {
        Self::new(ApiKeys::default())
    }
}

impl KeyRing {
    /// A ring holding `keys`.
    pub fn new(keys: ApiKeys) -> Self {
        Self {
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Wakes its holder each time the keys are replaced.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<ApiKeys> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `keys` in force for every request from now on.
    pub fn replace(&self, keys: ApiKeys) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        self.changed.send_modify(|n| *n += 1);
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({} keys)", self.current().len())
    }
}
