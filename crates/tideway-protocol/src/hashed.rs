//! Names hashed once, when parsed, and the map that uses that hash instead of hashing
//! again.
//!
//! A unicast publish looked its topic and its id up about eight times (the store's topic,
//! the id index of its history, the node's subscriber table, the index growing), and
//! each lookup ran SipHash over the text again: ~1,100 instructions of ~23,400 per event.
//! A [`HashedText`] carries the SipHash of its text, computed once with one random key
//! per process, so a client can no more choose colliding names than with std's own maps;
//! a [`PrehashedMap`] takes that hash as it is.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher, RandomState},
    ops::{Deref, DerefMut},
    sync::{Arc, OnceLock},
};

use serde::Serialize;

/// The process's SipHash key, random so that no peer can aim names at one bucket.
fn key() -> &'static RandomState {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    KEY.get_or_init(RandomState::new)
}

/// Shared text with its hash. Equal texts have equal hashes, so equality looks at the
/// hash first; order is the text's.
#[derive(Clone)]
pub(crate) struct HashedText {
    hash: u64,
    text: Arc<str>,
}

impl HashedText {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            hash: key().hash_one(text),
            text: Arc::from(text),
        }
    }

    /// The text's SipHash under the process's key.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

impl Deref for HashedText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl PartialEq for HashedText {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for HashedText {}

impl PartialOrd for HashedText {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HashedText {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl Hash for HashedText {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Serialize for HashedText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::TopicName {}
    impl Sealed for crate::EventId {}
}

/// A key whose `Hash` writes the one hash it carries ([`crate::TopicName`],
/// [`crate::EventId`]). Sealed: a key a peer could pick freely (a number, a string)
/// would reach a map's buckets unhashed.
pub trait Prehashed: Hash + Eq + sealed::Sealed {}

impl Prehashed for crate::TopicName {}
impl Prehashed for crate::EventId {}

/// Takes a [`Prehashed`] key's hash as it is. Anything else written (no key of this
/// crate writes more than its one hash) is folded in through SipHash with the process's
/// key, so it stays right. Made only by [`StoredHashes`], which only this crate can make:
/// no map of other keys (a peer's numbers) can take its keys unhashed.
pub struct StoredHash(u64);

impl Hasher for StoredHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = key().hash_one((self.0, bytes));
    }

    fn write_u64(&mut self, hash: u64) {
        // The first hash written is taken as it is (0 ^ hash).
        self.0 = self.0.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ hash;
    }
}

/// Builds [`StoredHash`]es, for [`PrehashedMap`] alone (its field keeps others from
/// making one).
#[derive(Clone, Copy, Debug)]
pub struct StoredHashes(());

impl BuildHasher for StoredHashes {
    type Hasher = StoredHash;

    fn build_hasher(&self) -> StoredHash {
        StoredHash(0)
    }
}

/// A `HashMap` keyed by names hashed when parsed: a lookup costs no hashing. Everything
/// of `HashMap` is reached through `Deref`.
pub struct PrehashedMap<K: Prehashed, V>(HashMap<K, V, StoredHashes>);

impl<K: Prehashed, V> PrehashedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self(HashMap::with_hasher(StoredHashes(())))
    }
}

impl<K: Prehashed, V> Default for PrehashedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Prehashed, V> Deref for PrehashedMap<K, V> {
    type Target = HashMap<K, V, StoredHashes>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K: Prehashed, V> DerefMut for PrehashedMap<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{EventId, TopicName};

    proptest! {
        /// Equal texts hash alike and compare equal; different texts compare unequal
        /// whatever their hashes; order is the texts'.
        #[test]
        fn equality_and_order_are_the_texts(a in "[a-z]{1,6}", b in "[a-z]{1,6}") {
            let (x, y) = (HashedText::new(&a), HashedText::new(&b));
            prop_assert_eq!(x == y, a == b);
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(HashedText::new(&a).hash, x.hash);
        }

        /// A map of names finds every name put in and nothing else, through growth and
        /// removals.
        #[test]
        fn a_map_of_names_finds_what_was_put_in(
            names in proptest::collection::vec("[a-z0-9]{1,8}", 0..200),
            gone in proptest::collection::vec(any::<prop::sample::Index>(), 0..50),
        ) {
            let mut map = PrehashedMap::new();
            let mut plain = std::collections::HashMap::new();
            for (n, name) in names.iter().enumerate() {
                map.insert(TopicName::parse(name).unwrap(), n);
                plain.insert(name.clone(), n);
            }
            for index in gone.iter().filter(|_| !names.is_empty()) {
                let name = index.get(&names);
                map.remove(&TopicName::parse(name).unwrap());
                plain.remove(name);
            }
            prop_assert_eq!(map.len(), plain.len());
            for (name, n) in &plain {
                prop_assert_eq!(map.get(&TopicName::parse(name).unwrap()), Some(n));
            }
            prop_assert!(map.get(&TopicName::parse("absent-name").unwrap()).is_none());
        }
    }

    #[test]
    fn the_hash_is_the_text_s_under_the_process_key() {
        let id = EventId::parse(b"order-1").unwrap();
        assert_eq!(StoredHashes(()).hash_one(&id), key().hash_one("order-1"));
        assert_eq!(id.prehash(), key().hash_one("order-1"));
        // More than one hash written is mixed, not the last one taken.
        let topic = TopicName::parse("t").unwrap();
        let pair = StoredHashes(()).hash_one((topic, id));
        assert_ne!(pair, key().hash_one("order-1"));
        assert_ne!(pair, key().hash_one("t"));
        // Bytes are hashed with the process key, not taken as they are.
        let mut bytes = StoredHashes(()).build_hasher();
        bytes.write(b"12345678");
        assert_ne!(bytes.finish(), u64::from_ne_bytes(*b"12345678"));
    }
}
