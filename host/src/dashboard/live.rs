//! Live updates: one follower of the events stream (from now on) feeds the page's
//! server-sent events, the recent-failures list and the throughput figures.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use jobbox::{EventsFrom, JobEvent, JobEventType};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::AppState;

/// Failures kept for the jobs page.
pub const RECENT_FAILURES: usize = 100;

/// Throughput is counted per minute for this many minutes.
pub const THROUGHPUT_MINUTES: usize = 10;

/// Events buffered per page that reads slower than they come; a page that falls
/// further behind misses some (it reloads its figures on the next one).
const LIVE_BUFFER: usize = 1024;

/// Terminal events of one queue in one minute.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Minute {
    /// The minute (Unix seconds of its start).
    pub minute: i64,
    /// COMPLETED events.
    pub completed: u64,
    /// FAILED, DEAD_LETTERED and CANCELLED events.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Book {
    failures: VecDeque<JobEvent>,
    /// Queue → the last minutes, oldest first.
    minutes: BTreeMap<String, VecDeque<Minute>>,
}

impl Book {
    fn note(&mut self, event: &JobEvent) {
        let failed = matches!(
            event.event_type,
            JobEventType::Failed | JobEventType::DeadLettered | JobEventType::Cancelled
        );
        let completed = event.event_type == JobEventType::Completed;
        if matches!(
            event.event_type,
            JobEventType::Failed | JobEventType::DeadLettered
        ) {
            if self.failures.len() == RECENT_FAILURES {
                self.failures.pop_front();
            }
            self.failures.push_back(event.clone());
        }
        if !(completed || failed) || event.queue.starts_with('_') {
            return;
        }
        let minute = event.timestamp.timestamp().div_euclid(60) * 60;
        // Queue names were validated by the worker that published the event; the
        // map is bounded by the live queues times THROUGHPUT_MINUTES.
        let minutes = self.minutes.entry(event.queue.clone()).or_default();
        if minutes.back().is_none_or(|m| m.minute < minute) {
            minutes.push_back(Minute {
                minute,
                ..Minute::default()
            });
            while minutes.len() > THROUGHPUT_MINUTES {
                minutes.pop_front();
            }
        }
        if let Some(slot) = minutes.iter_mut().rev().find(|m| m.minute == minute) {
            if completed {
                slot.completed += 1;
            } else {
                slot.failed += 1;
            }
        }
    }
}

/// What the follower has seen.
#[derive(Debug)]
pub(crate) struct Live {
    book: Mutex<Book>,
    sender: broadcast::Sender<Arc<str>>,
    since: DateTime<Utc>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            book: Mutex::default(),
            sender: broadcast::channel(LIVE_BUFFER).0,
            since: Utc::now(),
        }
    }
}

impl Live {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The recent failures, newest first.
    pub fn failures(&self) -> Vec<JobEvent> {
        self.book().failures.iter().rev().cloned().collect()
    }

    /// Queue → terminal events per minute, since the dashboard started.
    pub fn throughput(&self) -> serde_json::Value {
        let book = self.book();
        serde_json::json!({
            "since": self.since,
            "queues": book.minutes.iter().map(|(q, m)| (q.clone(), m.iter().copied().collect::<Vec<_>>())).collect::<BTreeMap<_, _>>(),
        })
    }
}

/// Follows every job event until `stop`, reconnecting after a failure.
pub(super) async fn follow(state: Arc<AppState>, stop: CancellationToken) {
    loop {
        let events = match state.client.events(None, None, EventsFrom::Now).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "dashboard: cannot follow events; trying again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        futures::pin_mut!(events);
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = events.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    state.live.book().note(&event);
                    if let Ok(json) = serde_json::to_string(&event) {
                        // No page listening is fine.
                        let _ = state.live.sender.send(Arc::from(json));
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "dashboard: unreadable event"),
                None => break,
            }
        }
    }
}

/// `GET /api/live`: every job event as it happens, one SSE `event` per job event.
pub(super) async fn stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.live.sender.subscribe();
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            Ok(json) => Some((Ok(Event::default().event("job").data(&*json)), receiver)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let data = format!("{{\"missed\":{missed}}}");
                Some((Ok(Event::default().event("lagged").data(data)), receiver))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: JobEventType, queue: &str, at: i64) -> JobEvent {
        let job = jobbox::Job::new("t", Vec::new()).queue(queue);
        let mut event = JobEvent::new(kind, &job);
        event.timestamp = DateTime::from_timestamp(at, 0).expect("time");
        event
    }

    #[test]
    fn throughput_is_per_queue_and_minute_and_bounded() {
        let mut book = Book::default();
        book.note(&event(JobEventType::Completed, "q", 60));
        book.note(&event(JobEventType::Completed, "q", 119));
        book.note(&event(JobEventType::Failed, "q", 120));
        book.note(&event(JobEventType::Started, "q", 121));
        let q = &book.minutes["q"];
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].minute, q[0].completed, q[0].failed), (60, 2, 0));
        assert_eq!((q[1].minute, q[1].completed, q[1].failed), (120, 0, 1));
        for m in 0..30 {
            book.note(&event(JobEventType::Completed, "q", 600 + m * 60));
        }
        assert_eq!(book.minutes["q"].len(), THROUGHPUT_MINUTES);
        assert_eq!(book.failures.len(), 1);
    }

    #[test]
    fn recent_failures_are_bounded() {
        let mut book = Book::default();
        for i in 0..(RECENT_FAILURES as i64 + 5) {
            book.note(&event(JobEventType::Failed, "q", i));
        }
        assert_eq!(book.failures.len(), RECENT_FAILURES);
    }
}
