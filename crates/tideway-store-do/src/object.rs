//! The Durable Object programming model, in-process: named objects, each a task that owns
//! its state and handles one message at a time.
//!
//! A message is a closure run against the object's state on the object's own task; its
//! result comes back through a oneshot channel. Messages to one object run in the order
//! they were sent and never overlap, so an object needs no lock and its reads are
//! consistent — what a Durable Object guarantees. A namespace creates an object on its
//! first message (as `idFromName` then `get` does) and evicts it once it is idle and
//! empty (as Cloudflare evicts idle objects; ours keep nothing once empty).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    },
};

use tokio::sync::{mpsc, oneshot};

/// What an object's state tells its namespace after each message.
pub(crate) trait ObjectState: Default + Send + 'static {
    /// Whether the object holds nothing worth keeping, so it may be evicted when idle.
    fn is_empty(&self) -> bool;
}

type Message<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A handle to one running object.
struct Stub<S> {
    mailbox: mpsc::UnboundedSender<Message<S>>,
    /// Messages sent and not yet handled. Incremented under the namespace's lock, so an
    /// eviction never races a message on its way.
    in_flight: Arc<AtomicUsize>,
    /// The object's state was empty after its last message.
    empty: Arc<AtomicBool>,
}

impl<S: ObjectState> Stub<S> {
    fn spawn() -> Self {
        let (mailbox, mut inbox) = mpsc::unbounded_channel::<Message<S>>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let empty = Arc::new(AtomicBool::new(true));
        let (pending, is_empty) = (in_flight.clone(), empty.clone());
        tokio::spawn(async move {
            let mut state = S::default();
            while let Some(message) = inbox.recv().await {
                message(&mut state);
                is_empty.store(state.is_empty(), SeqCst);
                pending.fetch_sub(1, SeqCst);
            }
        });
        Self {
            mailbox,
            in_flight,
            empty,
        }
    }
}

/// Why a message got no answer.
#[derive(Debug)]
pub(crate) struct Gone;

/// Objects of one kind, addressed by name.
pub(crate) struct Namespace<S> {
    /// A std mutex: it guards the map and the non-blocking send of a message, never an
    /// await.
    objects: Mutex<HashMap<String, Stub<S>>>,
}

impl<S: ObjectState> Default for Namespace<S> {
    fn default() -> Self {
        Self {
            objects: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: ObjectState> Namespace<S> {
    /// Sends `message` to the object `name`, creating it if it does not exist, and waits
    /// for its answer.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        name: &str,
        message: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, Gone> {
        let answer = self.send(name, true, message).ok_or(Gone)?;
        let result = answer.await.map_err(|_| Gone);
        self.evict_if_idle(name);
        result
    }

    /// Sends `message` to the object `name` only if it exists; `None` if it does not.
    pub(crate) async fn call_existing<R: Send + 'static>(
        &self,
        name: &str,
        message: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<Option<R>, Gone> {
        let Some(answer) = self.send(name, false, message) else {
            return Ok(None);
        };
        let result = answer.await.map_err(|_| Gone).map(Some);
        self.evict_if_idle(name);
        result
    }

    fn send<R: Send + 'static>(
        &self,
        name: &str,
        create: bool,
        message: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Option<oneshot::Receiver<R>> {
        let (reply, answer) = oneshot::channel();
        let mut objects = self.lock();
        let stub = match objects.get(name) {
            Some(stub) => stub,
            None if create => objects.entry(name.to_owned()).or_insert_with(Stub::spawn),
            None => return None,
        };
        stub.in_flight.fetch_add(1, SeqCst);
        let sent = stub.mailbox.send(Box::new(move |state: &mut S| {
            let _ = reply.send(message(state));
        }));
        sent.ok().map(|()| answer)
    }

    /// Evicts the object if it is empty and no message is on its way; its task ends
    /// when the last handle to its mailbox goes.
    fn evict_if_idle(&self, name: &str) {
        let mut objects = self.lock();
        let idle = objects
            .get(name)
            .is_some_and(|stub| stub.in_flight.load(SeqCst) == 0 && stub.empty.load(SeqCst));
        if idle {
            objects.remove(name);
        }
    }

    /// The names of the objects that exist now.
    #[cfg(test)]
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stub<S>>> {
        // Each critical section is one map operation and a non-blocking send.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counter(u64);

    impl ObjectState for Counter {
        fn is_empty(&self) -> bool {
            self.0 == 0
        }
    }

    #[tokio::test]
    async fn objects_are_made_on_first_use_serialise_messages_and_are_evicted_when_empty() {
        let namespace = Arc::new(Namespace::<Counter>::default());
        assert_eq!(namespace.call_existing("a", |c| c.0).await.unwrap(), None);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let namespace = namespace.clone();
            tasks.push(tokio::spawn(async move {
                namespace
                    .call("a", |c| {
                        c.0 += 1;
                        c.0
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.unwrap());
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=100).collect::<Vec<_>>(),
            "one message at a time, none lost"
        );
        assert_eq!(namespace.names(), ["a"]);
        namespace.call("a", |c| c.0 = 0).await.unwrap();
        assert!(namespace.names().is_empty(), "evicted once empty and idle");
        assert_eq!(namespace.call_existing("a", |c| c.0).await.unwrap(), None);
    }
}
