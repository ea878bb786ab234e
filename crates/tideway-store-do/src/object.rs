//! The Durable Object programming model, in-process: named objects, each with its own
//! durable storage and alarm, handling one message at a time — up to its first `await`.
//!
//! As on Cloudflare:
//! - A namespace creates an object on its first message (as `idFromName` then `get` does).
//!   The object starts from its storage ([`ObjectState::load`]), so everything it must not
//!   lose is written there by the message that changed it (write-through, as the Worker's
//!   classes do).
//! - An object that took no message for a whole [`Options::evict_after`] is evicted (so
//!   after one to two periods idle): its memory goes, its storage stays, and its next message (or alarm) starts it again from storage. One whose storage
//!   is empty is evicted at once — there is nothing to keep.
//! - Messages start in the order they were sent and run alone until they `await`; at an
//!   await on another object, the next message may start (Durable Objects' input gates
//!   open on outgoing calls, not on storage). An object that must not interleave there
//!   holds a turn across the await, as the Worker's `Turn` does. Storage calls here are
//!   synchronous, so they never open the gate.
//! - [`Storage::set_alarm`] wakes the object later through the namespace's alarm handler,
//!   even if it was evicted meanwhile.
//!
//! [`Options::jitter`] is the test mode: every call between objects yields a few times
//! before and after it, so the interleavings a network between objects would cause
//! happen here too. With `evict_after` zero, every object is evicted whenever it is idle,
//! so every message after the first starts from storage.

use std::{
    any::Any,
    collections::{BTreeMap, HashMap},
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    task::Poll,
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

/// An object's durable storage, as Durable Objects' storage API: keys in order, each
/// with a value, and one alarm. Cloudflare stores a structured clone of each value; here
/// a value is moved in and cloned out (an `Arc` of an immutable event is its own clone).
#[derive(Default)]
pub(crate) struct Storage {
    entries: BTreeMap<String, Arc<dyn Any + Send + Sync>>,
    alarm: Option<Instant>,
}

/// A stored value that is not what its reader expects: written by other code, or a bug.
#[derive(Debug, thiserror::Error)]
#[error("the stored value of {key:?} is not {reason}")]
pub(crate) struct Damaged {
    key: String,
    reason: String,
}

impl Damaged {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl Storage {
    /// The value under `key`.
    pub(crate) fn get<T: Clone + 'static>(&self, key: &str) -> Result<Option<T>, Damaged> {
        self.entries
            .get(key)
            .map(|value| read(key, value.as_ref()))
            .transpose()
    }

    /// The entries whose keys start with `prefix`, in key order, with the rest of the key.
    pub(crate) fn list<T: Clone + 'static>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, Damaged> {
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| Ok((key[prefix.len()..].to_owned(), read(key, value.as_ref())?)))
            .collect()
    }

    /// Writes `value` under `key`.
    pub(crate) fn put<T: Send + Sync + 'static>(&mut self, key: String, value: T) {
        self.entries.insert(key, Arc::new(value));
    }

    /// Deletes `key`.
    pub(crate) fn delete(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Deletes every entry (not the alarm, as on Cloudflare).
    pub(crate) fn delete_all(&mut self) {
        self.entries.clear();
    }

    /// Wakes the object at `at` (replacing any alarm set before).
    pub(crate) fn set_alarm(&mut self, at: Instant) {
        self.alarm = Some(at);
    }

    /// Cancels the alarm.
    pub(crate) fn delete_alarm(&mut self) {
        self.alarm = None;
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.alarm.is_none()
    }
}

fn read<T: Clone + 'static>(key: &str, value: &(dyn Any + Send + Sync)) -> Result<T, Damaged> {
    value
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| Damaged::new(key, format!("a {}", std::any::type_name::<T>())))
}

/// An object's state in memory: how it starts from its storage.
pub(crate) trait ObjectState: Send + 'static {
    /// The object as its storage holds it (empty storage: a new object). It may write,
    /// as a constructor's `blockConcurrencyWhile` may.
    fn load(storage: &mut Storage) -> Result<Self, Damaged>
    where
        Self: Sized;
}

/// Why a message got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Gone {
    #[error("the object stopped")]
    Stopped,
    #[error(transparent)]
    Damaged(#[from] Damaged),
}

/// How a namespace treats its objects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// How long an object may be idle before it is evicted (zero: as soon as it is idle).
    pub(crate) evict_after: Duration,
    /// Test mode: calls between objects yield before and after, so messages interleave
    /// at awaits as they would over a network.
    pub(crate) jitter: bool,
}

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What an alarm calls: the namespace's owner, with the object's name.
type AlarmHandler = Box<dyn Fn(String) + Send + Sync>;

/// Objects of one kind, addressed by name.
pub(crate) struct Namespace<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    options: Options,
    /// A std mutex: it guards the map and the non-blocking send of a message, never an
    /// await.
    objects: Mutex<HashMap<String, Entry<S>>>,
    on_alarm: OnceLock<AlarmHandler>,
}

/// An object's storage, and the object itself while it is in memory.
struct Entry<S> {
    storage: Arc<Mutex<Storage>>,
    running: Option<Running<S>>,
}

struct Running<S> {
    mailbox: mpsc::UnboundedSender<Job>,
    object: Arc<Object<S>>,
}

/// One object in memory.
struct Object<S> {
    name: String,
    /// Loaded from storage by its first message.
    state: Mutex<Option<S>>,
    storage: Arc<Mutex<Storage>>,
    /// Messages sent and not yet finished. Incremented under the namespace's lock, so an
    /// eviction never races a message on its way.
    in_flight: AtomicUsize,
    namespace: Weak<Inner<S>>,
}

/// What a message gets: its object's state and storage, between awaits.
pub(crate) struct Ctx<S> {
    object: Arc<Object<S>>,
}

impl<S: ObjectState> Ctx<S> {
    /// Runs `f` on the object's state and storage; no other message runs meanwhile.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut S, &mut Storage) -> R) -> Result<R, Gone> {
        self.object.with(f)
    }
}

impl<S: ObjectState> Object<S> {
    fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut S, &mut Storage) -> R) -> Result<R, Gone> {
        // Lock order: storage, then state (and the namespace's map is never taken
        // under either).
        let mut storage = lock(&self.storage);
        let mut state = lock(&self.state);
        let state = match &mut *state {
            Some(state) => state,
            None => state.insert(S::load(&mut storage)?),
        };
        let alarm = storage.alarm;
        let result = f(state, &mut storage);
        if let Some(at) = storage.alarm.filter(|at| Some(*at) != alarm) {
            self.schedule(at);
        }
        Ok(result)
    }

    /// Wakes the object at `at` through the namespace's alarm handler, unless the alarm
    /// was moved or deleted by then.
    fn schedule(&self, at: Instant) {
        let (storage, namespace, name) = (
            self.storage.clone(),
            self.namespace.clone(),
            self.name.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            {
                let mut storage = lock(&storage);
                if storage.alarm != Some(at) {
                    return;
                }
                storage.alarm = None;
            }
            if let Some(namespace) = namespace.upgrade()
                && let Some(handler) = namespace.on_alarm.get()
            {
                handler(name);
            }
        });
    }

    /// A message finished: evicts the object if nothing else is on its way and it has
    /// nothing in memory worth keeping (its storage is empty, or eviction is immediate).
    fn settle(self: &Arc<Self>, idle_for_long: bool) {
        if self.in_flight.load(SeqCst) != 0 {
            // The next message to finish decides.
            return;
        }
        let Some(namespace) = self.namespace.upgrade() else {
            return;
        };
        if !idle_for_long
            && !namespace.options.evict_after.is_zero()
            && !lock(&self.storage).is_empty()
        {
            // Kept in memory: the common case decided without the namespace's lock.
            return;
        }
        let mut objects = lock(&namespace.objects);
        let Some(entry) = objects.get_mut(&self.name) else {
            return;
        };
        let ours = entry
            .running
            .as_ref()
            .is_some_and(|running| Arc::ptr_eq(&running.object, self));
        if !ours || self.in_flight.load(SeqCst) != 0 {
            return;
        }
        let empty = lock(&entry.storage).is_empty();
        if empty || idle_for_long || namespace.options.evict_after.is_zero() {
            // Dropping the mailbox ends the object's task.
            entry.running = None;
            if empty {
                objects.remove(&self.name);
            }
        }
    }
}

impl<S: ObjectState> Namespace<S> {
    pub(crate) fn new(options: Options) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                objects: Mutex::new(HashMap::new()),
                on_alarm: OnceLock::new(),
            }),
        }
    }

    /// Sets what an object's alarm calls (once; the owner handles alarms of every object).
    pub(crate) fn on_alarm(&self, handler: impl Fn(String) + Send + Sync + 'static) {
        let _ = self.inner.on_alarm.set(Box::new(handler));
    }

    /// Sends `message` to the object `name`, creating it if it does not exist, and waits
    /// for its answer.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        name: &str,
        message: impl FnOnce(&mut S, &mut Storage) -> R + Send + 'static,
    ) -> Result<R, Gone> {
        self.send(name, true, |ctx| async move { ctx.with(message) })
            .await
            .unwrap_or(Err(Gone::Stopped))
    }

    /// Sends `message` to the object `name` only if it exists (it is in memory or has
    /// storage); `None` if it does not.
    #[cfg(test)]
    pub(crate) async fn call_existing<R: Send + 'static>(
        &self,
        name: &str,
        message: impl FnOnce(&mut S, &mut Storage) -> R + Send + 'static,
    ) -> Result<Option<R>, Gone> {
        self.send(name, false, |ctx| async move { ctx.with(message) })
            .await
            .transpose()
    }

    /// Sends an asynchronous message to the object `name` (created if `create`, else
    /// `None` if it does not exist) and waits for its answer: the message runs alone up
    /// to its first await, and other messages to the object may run at each of its
    /// awaits.
    pub(crate) async fn send<R, F, Fut>(
        &self,
        name: &str,
        create: bool,
        message: F,
    ) -> Option<Result<R, Gone>>
    where
        R: Send + 'static,
        F: FnOnce(Ctx<S>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, Gone>> + Send + 'static,
    {
        let jitter = self.inner.options.jitter;
        if jitter {
            shake().await;
        }
        let (reply, answer) = oneshot::channel();
        {
            let mut objects = lock(&self.inner.objects);
            let entry = match objects.get_mut(name) {
                Some(entry) => entry,
                None if create => objects.entry(name.to_owned()).or_insert_with(|| Entry {
                    storage: Arc::default(),
                    running: None,
                }),
                None => return None,
            };
            let running = entry
                .running
                .get_or_insert_with(|| self.start(name, entry.storage.clone()));
            let object = running.object.clone();
            object.in_flight.fetch_add(1, SeqCst);
            let job: Job = Box::pin(async move {
                let result = message(Ctx {
                    object: object.clone(),
                })
                .await;
                object.in_flight.fetch_sub(1, SeqCst);
                object.settle(false);
                let _ = reply.send(result);
            });
            if running.mailbox.send(job).is_err() {
                return Some(Err(Gone::Stopped));
            }
        }
        let result = answer.await.unwrap_or(Err(Gone::Stopped));
        if jitter {
            shake().await;
        }
        Some(result)
    }

    /// Starts the object `name` in memory: a task that takes its messages in order and
    /// runs each up to its first await before taking the next.
    fn start(&self, name: &str, storage: Arc<Mutex<Storage>>) -> Running<S> {
        let (mailbox, mut inbox) = mpsc::unbounded_channel::<Job>();
        let object = Arc::new(Object {
            name: name.to_owned(),
            state: Mutex::new(None),
            storage,
            in_flight: AtomicUsize::new(0),
            namespace: Arc::downgrade(&self.inner),
        });
        let evict_after = self.inner.options.evict_after;
        let idle = Arc::downgrade(&object);
        tokio::spawn(async move {
            // One timer for the object's life, moved on only when it goes off (not armed,
            // nor the clock read, for every message): an object that took no message in
            // a whole period is evicted, so after between one and two periods idle.
            let timer = tokio::time::sleep(evict_after);
            tokio::pin!(timer);
            let (mut taken, mut taken_before) = (0u64, 0u64);
            loop {
                let job = tokio::select! {
                    biased;
                    job = inbox.recv() => job,
                    () = &mut timer, if !evict_after.is_zero() => {
                        if taken == taken_before
                            && let Some(object) = idle.upgrade()
                        {
                            // Evicted, the mailbox is closed and the next receive ends
                            // the loop; not (busy), the next period decides.
                            object.settle(true);
                        }
                        taken_before = taken;
                        timer.as_mut().reset(Instant::now() + evict_after);
                        continue;
                    }
                };
                let Some(mut job) = job else {
                    break;
                };
                taken = taken.wrapping_add(1);
                // Up to its first await here, so messages start in the order they came;
                // the rest runs beside the next ones.
                let first = std::future::poll_fn(|cx| Poll::Ready(job.as_mut().poll(cx))).await;
                if first.is_pending() {
                    tokio::spawn(job);
                }
            }
        });
        Running { mailbox, object }
    }

    /// The names of the objects in memory now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> Vec<String> {
        let objects = lock(&self.inner.objects);
        objects
            .iter()
            .filter(|(_, entry)| entry.running.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The names of the objects that exist now (in memory or in storage).
    #[cfg(test)]
    pub(crate) fn names(&self) -> Vec<String> {
        lock(&self.inner.objects).keys().cloned().collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is a few map operations; a panic inside one leaves the data
    // as consistent as any other step would.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Yields to the scheduler zero to three times, pseudo-randomly.
async fn shake() {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    // xorshift: not for secrets, only to vary the interleavings from call to call.
    let mut x = STATE.load(SeqCst);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, SeqCst);
    for _ in 0..(x % 4) {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that keeps its count under `n`.
    #[derive(Default)]
    struct Counter(u64);

    impl ObjectState for Counter {
        fn load(storage: &mut Storage) -> Result<Self, Damaged> {
            Ok(Self(storage.get("n")?.unwrap_or(0)))
        }
    }

    fn bump(c: &mut Counter, storage: &mut Storage) -> u64 {
        c.0 += 1;
        storage.put("n".into(), c.0);
        c.0
    }

    fn namespace(evict_after: Duration) -> Arc<Namespace<Counter>> {
        Arc::new(Namespace::new(Options {
            evict_after,
            jitter: false,
        }))
    }

    #[tokio::test]
    async fn objects_are_made_on_first_use_serialise_messages_and_go_when_empty() {
        let namespace = namespace(Duration::from_secs(60));
        assert_eq!(
            namespace.call_existing("a", |c, _| c.0).await.unwrap(),
            None
        );
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let namespace = namespace.clone();
            tasks.push(tokio::spawn(async move {
                namespace.call("a", bump).await.unwrap()
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
        assert_eq!(
            namespace.running(),
            ["a"],
            "kept in memory while not idle for long"
        );
        namespace
            .call("a", |c, storage| {
                c.0 = 0;
                storage.delete_all();
            })
            .await
            .unwrap();
        assert!(namespace.names().is_empty(), "nothing stored: gone at once");
        assert_eq!(
            namespace.call_existing("a", |c, _| c.0).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn an_evicted_object_starts_again_from_its_storage() {
        let namespace = namespace(Duration::ZERO);
        for _ in 0..3 {
            namespace.call("a", bump).await.unwrap();
        }
        assert!(namespace.running().is_empty(), "evicted when idle");
        assert_eq!(namespace.names(), ["a"], "its storage stays");
        // Memory that was not written to storage is lost with the eviction.
        namespace.call("a", |c, _| c.0 = 100).await.unwrap();
        assert_eq!(namespace.call("a", bump).await.unwrap(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_idle_for_long_is_evicted_and_an_alarm_wakes_it() {
        let namespace = namespace(Duration::from_secs(10));
        let (woken, mut wakes) = mpsc::unbounded_channel();
        namespace.on_alarm(move |name| {
            let _ = woken.send(name);
        });
        namespace
            .call("a", |c, storage| {
                bump(c, storage);
                storage.set_alarm(Instant::now() + Duration::from_secs(30));
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(21)).await;
        assert!(
            namespace.running().is_empty(),
            "idle for two periods: evicted"
        );
        assert_eq!(wakes.recv().await.as_deref(), Some("a"));
        assert_eq!(namespace.call("a", bump).await.unwrap(), 2, "read back");
        // A moved alarm fires once, at its new time; a deleted one never.
        namespace
            .call("a", |_, storage| {
                storage.set_alarm(Instant::now() + Duration::from_secs(5));
                storage.set_alarm(Instant::now() + Duration::from_secs(8));
            })
            .await
            .unwrap();
        namespace
            .call("b", |c, storage| {
                bump(c, storage);
                storage.set_alarm(Instant::now() + Duration::from_secs(1));
                storage.delete_alarm();
            })
            .await
            .unwrap();
        let start = Instant::now();
        assert_eq!(wakes.recv().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), Duration::from_secs(8));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(wakes.try_recv().is_err(), "no other alarm went off");
    }

    #[tokio::test]
    async fn messages_interleave_at_awaits_and_start_in_order() {
        let namespace = namespace(Duration::from_secs(60));
        let (open, gate) = oneshot::channel::<()>();
        let first = {
            let namespace = namespace.clone();
            tokio::spawn(async move {
                namespace
                    .send("a", true, |ctx| async move {
                        let before = ctx.with(bump)?;
                        let _ = gate.await;
                        Ok((before, ctx.with(bump)?))
                    })
                    .await
                    .unwrap()
                    .unwrap()
            })
        };
        // Sent after the first started: it runs while the first waits at its await.
        tokio::task::yield_now().await;
        while namespace.call("a", |c, _| c.0).await.unwrap() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            namespace.call("a", bump).await.unwrap(),
            2,
            "ran at the await"
        );
        open.send(()).unwrap();
        assert_eq!(first.await.unwrap(), (1, 3));
    }

    #[tokio::test]
    async fn a_damaged_value_is_refused_not_read_as_empty() {
        let namespace = namespace(Duration::ZERO);
        namespace
            .call("a", |_, storage| {
                storage.put("n".into(), "not a number".to_owned())
            })
            .await
            .unwrap();
        let refused = namespace.call("a", |c, _| c.0).await;
        assert!(
            matches!(&refused, Err(Gone::Damaged(d)) if d.to_string().contains("\"n\"")),
            "{refused:?}"
        );
    }
}
