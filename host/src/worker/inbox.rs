//! The worker's inbox: messages fetched from every lane of every queue, waiting
//! locally for a free slot, and the choice of which one runs next.
//!
//! This is the seam between fetching and running. Fetchers fill one buffer per lane,
//! each bounded by the worker's prefetch; the run loop takes the next message with
//! [`Inbox::next`], which picks by [`pick_lane`]: the most urgent lane first, queues
//! of the same urgency in turn. A message that waits here long enough to risk its
//! `ack_wait` is extended with a progress ack by [`Inbox::extend_waiting`], so nothing
//! fetched is redelivered elsewhere while it waits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use jobbox::nats::Lane;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest wait for a more urgent lane's refill before a less urgent job runs.
/// A refill is one round trip to a local server, well under a millisecond; the bound
/// only matters when another worker took the backlog meanwhile.
const REFILL_WAIT: Duration = Duration::from_millis(20);

/// A fetched message and where it came from.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The JetStream message.
    pub message: Message,
    /// The queue it was fetched from (the consumer's, not what the job claims).
    pub queue: Arc<str>,
    /// Its lane.
    pub lane: Lane,
    /// The `ack_wait` of the consumer it came from.
    pub ack_wait: Duration,
    /// When it was received or last extended.
    held_since: Instant,
}

impl Fetched {
    /// A message received now.
    pub fn new(message: Message, queue: Arc<str>, lane: Lane, ack_wait: Duration) -> Self {
        Self {
            message,
            queue,
            lane,
            ack_wait,
            held_since: Instant::now(),
        }
    }
}

/// One lane's buffer and its fetch credit.
#[derive(Debug)]
struct LaneBuffer {
    lane: Lane,
    waiting: VecDeque<Fetched>,
    /// Messages asked of the server and not yet received.
    requested: usize,
    /// Whether the lane's first pull has answered or waited long enough.
    primed: bool,
    /// Messages the server said were still pending for the lane when it delivered
    /// the last one: a refill is on its way.
    backlog: u64,
}

#[derive(Debug)]
struct State {
    lanes: Vec<LaneBuffer>,
    /// Where round-robin among lanes of equal urgency resumes.
    cursor: usize,
    closed: bool,
}

/// Fetched messages waiting for a slot, by lane. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    /// Most messages one lane holds (waiting plus requested).
    prefetch: usize,
    /// Woken when a message arrives or the inbox closes.
    arrived: Notify,
    /// Woken when a message leaves, so fetchers may ask for more.
    taken: Notify,
    /// Woken when a lane's first pull has answered (see [`Inbox::primed`]).
    primed: Notify,
}

/// Identifies one lane's buffer in the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaneId(usize);

impl Inbox {
    /// An empty inbox whose lanes hold at most `prefetch` messages each.
    pub fn new(prefetch: usize) -> Self {
        Self {
            state: Mutex::new(State {
                lanes: Vec::new(),
                cursor: 0,
                closed: false,
            }),
            prefetch: prefetch.max(1),
            arrived: Notify::new(),
            taken: Notify::new(),
            primed: Notify::new(),
        }
    }

    /// Adds a lane buffer (one per consumer).
    pub fn add_lane(&self, lane: Lane) -> LaneId {
        let mut state = self.lock();
        state.lanes.push(LaneBuffer {
            lane,
            waiting: VecDeque::new(),
            requested: 0,
            primed: false,
            backlog: 0,
        });
        LaneId(state.lanes.len() - 1)
    }

    /// How many more messages the fetcher of `id` should ask for now, reserving them;
    /// waits until that is worth a pull request (half the prefetch is free, or the
    /// lane is empty). `None` once the inbox is closed.
    pub async fn reserve(&self, id: LaneId) -> Option<usize> {
        loop {
            let taken = self.taken.notified();
            {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                let buffer = &mut state.lanes[id.0];
                let held = buffer.waiting.len() + buffer.requested;
                let free = self.prefetch.saturating_sub(held);
                let worth_it = free > 0 && (free * 2 >= self.prefetch || held == 0);
                if worth_it {
                    buffer.requested += free;
                    return Some(free);
                }
            }
            taken.await;
        }
    }

    /// Stores a message the fetcher of `id` received.
    pub fn push(&self, id: LaneId, fetched: Fetched) {
        {
            let mut state = self.lock();
            let buffer = &mut state.lanes[id.0];
            buffer.requested = buffer.requested.saturating_sub(1);
            buffer.backlog = fetched.message.info().map_or(0, |i| i.pending);
            buffer.waiting.push_back(fetched);
        }
        self.arrived.notify_one();
    }

    /// Marks the lane's first pull as answered (a message came, or none did within
    /// the priming wait).
    pub fn prime(&self, id: LaneId) {
        self.lock().lanes[id.0].primed = true;
        self.primed.notify_waiters();
    }

    /// Waits until every lane's first pull has answered, so that a worker starting on
    /// a backlog takes the most urgent job first rather than whichever lane answered
    /// first.
    pub async fn primed(&self) {
        loop {
            let primed = self.primed.notified();
            if self.lock().lanes.iter().all(|b| b.primed) {
                return;
            }
            primed.await;
        }
    }

    /// Gives back the credit of a pull request that ended with `unused` messages
    /// not delivered.
    pub fn release(&self, id: LaneId, unused: usize) {
        let mut state = self.lock();
        let buffer = &mut state.lanes[id.0];
        buffer.requested = buffer.requested.saturating_sub(unused);
    }

    /// The next message to run, waiting for one; `None` once closed.
    ///
    /// When a more urgent lane is empty here but its refill is on its way (the
    /// server said more were pending), waits up to [`REFILL_WAIT`] for it rather
    /// than run a less urgent job first.
    pub async fn next(&self) -> Option<Fetched> {
        let mut refill_deadline: Option<Instant> = None;
        loop {
            let arrived = self.arrived.notified();
            let mut wait = None;
            {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                let sizes: Vec<(Lane, usize)> = state
                    .lanes
                    .iter()
                    .map(|b| (b.lane, b.waiting.len()))
                    .collect();
                if let Some(index) = pick_lane(&sizes, state.cursor) {
                    let picked = state.lanes[index].lane;
                    let refill_due = state
                        .lanes
                        .iter()
                        .any(|b| b.lane > picked && b.waiting.is_empty() && b.backlog > 0);
                    let deadline =
                        *refill_deadline.get_or_insert_with(|| Instant::now() + REFILL_WAIT);
                    if refill_due && Instant::now() < deadline {
                        wait = Some(deadline);
                    } else {
                        state.cursor = index + 1;
                        let fetched = state.lanes[index].waiting.pop_front();
                        drop(state);
                        self.taken.notify_waiters();
                        if fetched.is_some() {
                            return fetched;
                        }
                        continue;
                    }
                }
            }
            match wait {
                Some(deadline) => {
                    let _ = tokio::time::timeout_at(deadline, arrived).await;
                }
                None => arrived.await,
            }
        }
    }

    /// Stops handing out messages and returns every waiting one, for hand-back.
    pub fn close(&self) -> Vec<Fetched> {
        let drained = {
            let mut state = self.lock();
            state.closed = true;
            state
                .lanes
                .iter_mut()
                .flat_map(|b| b.waiting.drain(..))
                .collect()
        };
        self.arrived.notify_waiters();
        self.taken.notify_waiters();
        drained
    }

    /// Sends a progress ack for every message that has waited here a third of its
    /// `ack_wait`, so that it is not redelivered while it waits. Returns how many.
    pub fn extend_waiting(&self) -> usize {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut state = self.lock();
            for buffer in &mut state.lanes {
                for fetched in &mut buffer.waiting {
                    if now.duration_since(fetched.held_since) >= fetched.ack_wait / 3 {
                        fetched.held_since = now;
                        due.push(fetched.message.clone());
                    }
                }
            }
        }
        let count = due.len();
        if count > 0 {
            tokio::spawn(async move {
                for message in due {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "failed to extend a waiting message");
                    }
                }
            });
        }
        count
    }

    /// Messages waiting now.
    pub fn waiting(&self) -> usize {
        self.lock().lanes.iter().map(|b| b.waiting.len()).sum()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which lane buffer to take from: among the non-empty ones, the most urgent lane;
/// among equally urgent ones, the first at or after `cursor` (round-robin, so one busy
/// queue cannot starve another of the same urgency). `sizes` is (lane, waiting) per
/// buffer.
pub(crate) fn pick_lane(sizes: &[(Lane, usize)], cursor: usize) -> Option<usize> {
    let most_urgent = sizes
        .iter()
        .filter(|(_, waiting)| *waiting > 0)
        .map(|(lane, _)| *lane)
        .max()?;
    let n = sizes.len();
    (0..n)
        .map(|offset| (cursor + offset) % n)
        .find(|&i| sizes[i].0 == most_urgent && sizes[i].1 > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_urgent_non_empty_lane_goes_first() {
        let sizes = [(Lane::High, 0), (Lane::Normal, 3), (Lane::Low, 9)];
        assert_eq!(pick_lane(&sizes, 0), Some(1));
        let sizes = [(Lane::High, 1), (Lane::Normal, 3), (Lane::Low, 9)];
        assert_eq!(pick_lane(&sizes, 2), Some(0));
        let sizes = [(Lane::High, 0), (Lane::Normal, 0), (Lane::Low, 1)];
        assert_eq!(pick_lane(&sizes, 1), Some(2));
    }

    #[test]
    fn nothing_to_pick_from_empty_lanes() {
        assert_eq!(pick_lane(&[], 0), None);
        assert_eq!(pick_lane(&[(Lane::High, 0), (Lane::Low, 0)], 5), None);
    }

    #[test]
    fn queues_of_equal_urgency_take_turns() {
        // Two queues, each with a normal lane that has work.
        let sizes = [
            (Lane::High, 0),
            (Lane::Normal, 5),
            (Lane::High, 0),
            (Lane::Normal, 5),
        ];
        let first = pick_lane(&sizes, 0).expect("some");
        let second = pick_lane(&sizes, first + 1).expect("some");
        let third = pick_lane(&sizes, second + 1).expect("some");
        assert_eq!((first, second, third), (1, 3, 1));
    }

    #[test]
    fn idle_lanes_do_not_change_the_choice() {
        // Twenty-nine idle queues and one busy one: the busy one is always picked.
        let mut sizes = vec![(Lane::Normal, 0); 30];
        sizes[17] = (Lane::Normal, 4);
        for cursor in 0..30 {
            assert_eq!(pick_lane(&sizes, cursor), Some(17));
        }
    }
}
