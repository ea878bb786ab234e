//! A subscriber's bounded queue: the hub pushes events without waiting, the subscription
//! pops them.
//!
//! One small allocation per subscriber (a mutex over a `VecDeque`, the count of senders
//! and the reader's waker), instead of tokio's mpsc channel, whose cache-padded state and
//! first block of slots cost some 800 bytes even for a subscriber that never gets an
//! event. The reader's waker is also how anything else that ends a subscription wakes it
//! (revocation, drain): see [`QueueWaker`]. Every critical section is a few field updates;
//! wakers are woken after the lock is released — a sender's, into [`Wakes`], after the
//! caller's locks too.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

use crate::TopicEvent;

struct Shared {
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    items: VecDeque<Arc<TopicEvent>>,
    /// Live [`QueueSender`]s; none left means the hub cut the reader off.
    senders: usize,
    /// Whether the [`QueueReceiver`] still exists.
    reading: bool,
    /// The reader's waker, while it waits for something.
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each critical section leaves the fields consistent; a panic cannot break them.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        let waker = self.lock().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A queue of at most `capacity` events (at least one).
pub(crate) fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared {
        capacity: capacity.max(1),
        inner: Mutex::new(Inner {
            items: VecDeque::new(),
            senders: 1,
            reading: true,
            waker: None,
        }),
    });
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

/// Why an event was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError {
    /// The queue holds `capacity` events: the reader fell behind.
    Full,
    /// The reader is gone.
    Closed,
}

/// Readers to wake, woken when this is dropped: after the events they wait for are
/// queued and after whoever queued them let go of its own locks (the store's, the hub's).
/// Waking a task can be a system call — it may unpark a worker thread — and one made
/// while holding a lock lengthens the critical section every other publisher waits on.
#[derive(Default)]
pub struct Wakes {
    /// The first, held without allocating: a unicast publish wakes one reader.
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl Wakes {
    fn push(&mut self, waker: Waker) {
        match self.first {
            None => self.first = Some(waker),
            Some(_) => self.more.push(waker),
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        if let Some(waker) = self.first.take() {
            waker.wake();
        }
        for waker in self.more.drain(..) {
            waker.wake();
        }
    }
}

/// The hub's end: one per topic entry of a subscriber.
pub(crate) struct QueueSender(Arc<Shared>);

impl QueueSender {
    /// Queues `event` without waiting; the reader, if it waits, goes into `wakes`.
    pub(crate) fn try_send(
        &self,
        event: Arc<TopicEvent>,
        wakes: &mut Wakes,
    ) -> Result<(), TrySendError> {
        let waker = {
            let mut inner = self.0.lock();
            if !inner.reading {
                return Err(TrySendError::Closed);
            }
            if inner.items.len() >= self.0.capacity {
                return Err(TrySendError::Full);
            }
            inner.items.push_back(event);
            inner.waker.take()
        };
        if let Some(waker) = waker {
            wakes.push(waker);
        }
        Ok(())
    }

    /// Queues every one of `events` or none: they are the copies of one publish, and a
    /// reader that gets one must get them all (its cursor, the publisher's id, stands
    /// for all of them).
    pub(crate) fn try_send_all(
        &self,
        events: &[&Arc<TopicEvent>],
        wakes: &mut Wakes,
    ) -> Result<(), TrySendError> {
        let waker = {
            let mut inner = self.0.lock();
            if !inner.reading {
                return Err(TrySendError::Closed);
            }
            if inner.items.len() + events.len() > self.0.capacity.max(events.len()) {
                return Err(TrySendError::Full);
            }
            inner
                .items
                .extend(events.iter().map(|&event| event.clone()));
            inner.waker.take()
        };
        if let Some(waker) = waker {
            wakes.push(waker);
        }
        Ok(())
    }

    /// A handle that wakes the reader without being a sender.
    pub(crate) fn waker(&self) -> QueueWaker {
        QueueWaker(self.0.clone())
    }
}

impl Clone for QueueSender {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        let waker = {
            let mut inner = self.0.lock();
            inner.senders -= 1;
            if inner.senders == 0 {
                inner.waker.take()
            } else {
                None
            }
        };
        // The last sender gone is news to the reader: it was cut off.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Wakes the reader so it looks again at its subscription's flags (revoked, draining).
pub(crate) struct QueueWaker(Arc<Shared>);

impl QueueWaker {
    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}

/// The subscription's end.
pub(crate) struct QueueReceiver(Arc<Shared>);

impl QueueReceiver {
    /// The next event; `None` once the queue is empty and every sender gone. When
    /// nothing is queued, `cx`'s waker is woken by the next event, by the last sender's
    /// drop, or by a [`QueueWaker`].
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<TopicEvent>>> {
        let mut inner = self.0.lock();
        if let Some(event) = inner.items.pop_front() {
            return Poll::Ready(Some(event));
        }
        if inner.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut inner.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl QueueReceiver {
    /// Whether the next event queued is one `pick` picks.
    pub(crate) fn next_is(&self, pick: impl FnOnce(&TopicEvent) -> bool) -> bool {
        self.0.lock().items.front().is_some_and(|event| pick(event))
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.reading = false;
        // The events go now, not when the hub lets go of its senders.
        inner.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering::SeqCst},
        task::Wake,
    };

    use tideway_protocol::{EventData, EventId, TopicName};

    use super::*;
    use crate::Event;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn event(n: u64) -> Arc<TopicEvent> {
        Arc::new(TopicEvent::new(
            TopicName::parse("t").unwrap(),
            n,
            1,
            n,
            Arc::new(Event {
                id: EventId::parse(format!("e{n}").as_bytes()).unwrap(),
                event_type: None,
                data: EventData::parse(bytes::Bytes::from_static(b"x")).unwrap(),
                published_at: 0,
            }),
        ))
    }

    /// The sequence number of what `poll_recv` returns at once: `Some(None)` for the end.
    fn pop(rx: &mut QueueReceiver) -> Option<Option<u64>> {
        match rx.poll_recv(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(event) => Some(event.map(|e| e.seq)),
            Poll::Pending => None,
        }
    }

    #[test]
    fn holds_at_most_capacity_in_order() {
        let (tx, mut rx) = queue(2);
        tx.try_send(event(1), &mut Wakes::default()).unwrap();
        tx.try_send(event(2), &mut Wakes::default()).unwrap();
        assert_eq!(
            tx.try_send(event(3), &mut Wakes::default()),
            Err(TrySendError::Full)
        );
        assert_eq!(pop(&mut rx), Some(Some(1)));
        tx.try_send(event(4), &mut Wakes::default()).unwrap();
        assert_eq!(pop(&mut rx), Some(Some(2)));
        assert_eq!(pop(&mut rx), Some(Some(4)));
        assert_eq!(pop(&mut rx), None);
    }

    #[test]
    fn a_waiting_reader_is_woken_by_an_event_a_cut_or_a_waker() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = queue(4);
        let second = tx.clone();
        assert!(rx.poll_recv(&mut cx).is_pending());
        // Woken when the sender's `Wakes` goes, not before.
        let mut wakes = Wakes::default();
        tx.try_send(event(1), &mut wakes).unwrap();
        assert_eq!(count.0.load(SeqCst), 0);
        drop(wakes);
        assert_eq!(count.0.load(SeqCst), 1);
        // A busy reader (no waker registered) is not woken for nothing.
        tx.try_send(event(2), &mut Wakes::default()).unwrap();
        assert_eq!(count.0.load(SeqCst), 1);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.waker().wake();
        assert_eq!(count.0.load(SeqCst), 2);
        assert!(rx.poll_recv(&mut cx).is_pending());
        // The last sender's drop ends the queue, and says so to the waiting reader.
        drop(tx);
        assert_eq!(count.0.load(SeqCst), 2);
        drop(second);
        assert_eq!(count.0.load(SeqCst), 3);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
        assert_eq!(pop(&mut rx), Some(None));
    }

    #[test]
    fn wakes_wake_every_reader_once_when_dropped() {
        let counts: Vec<Arc<Count>> = (0..3)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let mut wakes = Wakes::default();
        let mut queues = Vec::new();
        for count in &counts {
            let (tx, mut rx) = queue(4);
            let waker = Waker::from(count.clone());
            assert!(rx.poll_recv(&mut Context::from_waker(&waker)).is_pending());
            tx.try_send_all(&[&event(1)], &mut wakes).unwrap();
            queues.push((tx, rx));
        }
        assert!(counts.iter().all(|c| c.0.load(SeqCst) == 0));
        drop(wakes);
        assert!(counts.iter().all(|c| c.0.load(SeqCst) == 1));
        for (_, rx) in &mut queues {
            assert_eq!(pop(rx), Some(Some(1)));
        }
    }

    #[test]
    fn the_copies_of_one_publish_are_queued_all_or_none() {
        let (tx, mut rx) = queue(3);
        tx.try_send(event(1), &mut Wakes::default()).unwrap();
        tx.try_send_all(&[&event(2), &event(3)], &mut Wakes::default())
            .unwrap();
        assert_eq!(
            tx.try_send_all(&[&event(4), &event(5)], &mut Wakes::default()),
            Err(TrySendError::Full),
            "room for one copy of two is no room"
        );
        assert!(rx.next_is(|e| e.seq == 1));
        assert_eq!(pop(&mut rx), Some(Some(1)));
        assert!(!rx.next_is(|e| e.seq == 1));
        assert_eq!(pop(&mut rx), Some(Some(2)));
        assert_eq!(pop(&mut rx), Some(Some(3)));
        assert_eq!(
            pop(&mut rx),
            None,
            "nothing of the refused publish was queued"
        );
        // More copies than the capacity still go to an empty queue: one publish to more
        // topics than a queue holds is not a slow reader.
        tx.try_send_all(
            &[&event(6), &event(7), &event(8), &event(9)],
            &mut Wakes::default(),
        )
        .unwrap();
        assert_eq!(pop(&mut rx), Some(Some(6)));
    }

    #[test]
    fn a_gone_reader_refuses_events() {
        let (tx, rx) = queue(4);
        drop(rx);
        assert_eq!(
            tx.try_send(event(1), &mut Wakes::default()),
            Err(TrySendError::Closed)
        );
    }
}
