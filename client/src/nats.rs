//! Every NATS name jobbox uses — streams, subjects, buckets, consumers — built here
//! and nowhere else.
//!
//! | thing | kind | name |
//! |---|---|---|
//! | jobs | stream (work queue) | [`JOBS_STREAM`], `jobbox.jobs.<queue>.<lane>` |
//! | per-queue, per-lane consumer | durable pull | `jobbox-<queue>-<lane>` |
//! | events | stream (limits, max age) | [`EVENTS_STREAM`], `jobbox.events.<queue>.<job_id>.<event>` |
//! | results | KV | [`RESULTS_BUCKET`], key = job id |
//! | cancellations | KV | [`CANCELS_BUCKET`], key = job id |
//! | handler code | object store | [`HANDLERS_BUCKET`], object = `sha256-<hex>` |
//! | routes | KV with history | [`ROUTES_BUCKET`], key = job type |
//! | dead letters | stream | [`DLQ_STREAM`], `jobbox.dlq.<queue>` |
//! | workers | KV with TTL | [`WORKERS_BUCKET`], key = worker id |
//! | schedules | KV | [`SCHEDULES_BUCKET`], key = schedule id |
//! | batches | KV | [`BATCHES_BUCKET`], key = batch id |
//! | undeliverable jobs | stream (work queue) of server advisories | [`UNDELIVERABLE_STREAM`], [`UNDELIVERABLE_SUBJECTS`] |
//! | compiled handlers shared by a fleet | object store | [`ARTIFACTS_BUCKET`], object = [`artifact_name`] |
//! | compile claims | KV with TTL | [`COMPILES_BUCKET`], key = [`artifact_name`] |
//! | compile requests (deploy → a worker) | request/reply, queue group | [`COMPILE_SUBJECT`], [`COMPILE_QUEUE_GROUP`] |
//! | preload requests (deploy → every worker) | request, many replies | [`PRELOAD_SUBJECT`] |
//! | route sync (deploy → every worker) | request, many replies | [`ROUTE_SYNC_SUBJECT`] |

use crate::model::JobEventType;

/// The work-queue stream that holds jobs waiting to run.
pub const JOBS_STREAM: &str = "JOBBOX_JOBS";
/// Subjects of [`JOBS_STREAM`].
pub const JOBS_SUBJECTS: &str = "jobbox.jobs.>";
/// The stream of job events.
pub const EVENTS_STREAM: &str = "JOBBOX_EVENTS";
/// Subjects of [`EVENTS_STREAM`].
pub const EVENTS_SUBJECTS: &str = "jobbox.events.>";
/// The stream of dead-lettered jobs.
pub const DLQ_STREAM: &str = "JOBBOX_DLQ";
/// Subjects of [`DLQ_STREAM`].
pub const DLQ_SUBJECTS: &str = "jobbox.dlq.>";
/// The stream of per-queue counters (completed, failed, ...), one counter per subject.
pub const STATS_STREAM: &str = "JOBBOX_STATS";
/// Subjects of [`STATS_STREAM`].
pub const STATS_SUBJECTS: &str = "jobbox.stats.>";
/// KV bucket: job id → `JobResult`.
pub const RESULTS_BUCKET: &str = "jobbox_results";
/// KV bucket: job id → `CancelRequest`, one entry per cancelled job. Workers watch
/// it to stop running jobs; nothing is written here on the per-job path.
pub const CANCELS_BUCKET: &str = "jobbox_cancels";
/// Object store: handler components by digest.
pub const HANDLERS_BUCKET: &str = "jobbox_handlers";
/// KV bucket: job type → `Route`, with history.
pub const ROUTES_BUCKET: &str = "jobbox_routes";
/// KV bucket: worker id → `WorkerStatus`, with a TTL.
pub const WORKERS_BUCKET: &str = "jobbox_workers";
/// KV bucket: schedule id → `Schedule`.
pub const SCHEDULES_BUCKET: &str = "jobbox_schedules";
/// KV bucket: batch id → `BatchJob`.
pub const BATCHES_BUCKET: &str = "jobbox_batches";
/// Object store: native code of compiled handlers, sealed under the fleet key, one
/// object per (handler digest, engine). Written by workers only.
pub const ARTIFACTS_BUCKET: &str = "jobbox_artifacts";
/// KV bucket: artifact name → the worker compiling it (create = claim).
pub const COMPILES_BUCKET: &str = "jobbox_compiles";
/// Subject a deploy asks the fleet on to compile a handler before its route changes.
pub const COMPILE_SUBJECT: &str = "jobbox.compile";
/// Queue group of the workers answering [`COMPILE_SUBJECT`]: one answers each request.
pub const COMPILE_QUEUE_GROUP: &str = "jobbox-compilers";
/// Subject a deploy asks every worker on to load a handler the fleet has compiled,
/// before its route changes (each worker holding the fleet key answers).
pub const PRELOAD_SUBJECT: &str = "jobbox.preload";
/// Subject a deploy (or rollback) asks every worker on to install the route it just
/// wrote, and to say so: each live worker answers once the new revision is active on
/// it (or failed to load), whether or not its routes watch has delivered it yet.
pub const ROUTE_SYNC_SUBJECT: &str = "jobbox.routes.sync";

/// The work-queue stream that keeps the server's MAX_DELIVERIES advisories for the
/// jobs stream: each names a job message the server stopped delivering because it
/// reached its consumer's `max_deliver` (one no client can parse, say).
pub const UNDELIVERABLE_STREAM: &str = "JOBBOX_UNDELIVERABLE";
/// Subjects of [`UNDELIVERABLE_STREAM`]: the advisories of every consumer of
/// [`JOBS_STREAM`].
pub const UNDELIVERABLE_SUBJECTS: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JOBBOX_JOBS.*";
/// The durable consumer every worker takes undeliverable-job advisories from.
pub const UNDELIVERABLE_CONSUMER: &str = "jobbox-undeliverable";

/// The JSON message API of `stream`: a message read through it comes back as JSON,
/// its headers base64-encoded and never parsed by the client.
pub fn stream_message_get_subject(stream: &str) -> String {
    format!("$JS.API.STREAM.MSG.GET.{stream}")
}

/// The queue token of batch events: `jobbox.events._batches.<batch_id>.<event>`.
pub const BATCH_EVENTS_TOKEN: &str = "_batches";

/// Subject filters of the terminal job events (one per final status), which the
/// workers' batch trackers follow.
pub fn terminal_event_filters() -> Vec<String> {
    [
        JobEventType::Completed,
        JobEventType::Failed,
        JobEventType::DeadLettered,
        JobEventType::Cancelled,
    ]
    .into_iter()
    .map(|event| format!("jobbox.events.*.*.{}", event.as_token()))
    .collect()
}

/// The job id in an event subject `jobbox.events.<queue>.<job_id>.<event>`.
pub fn job_id_of_event_subject(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("jobbox.events.")?;
    let mut tokens = rest.split('.');
    let (_queue, job_id, _event) = (tokens.next()?, tokens.next()?, tokens.next()?);
    tokens.next().is_none().then_some(job_id)
}

/// A priority lane of a queue. Each lane is its own subject and consumer; a worker
/// takes from the highest non-empty lane first, and each lane is first in, first out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Priorities 0–2.
    Low,
    /// Priorities 3–6 (the default priority 5 is here).
    Normal,
    /// Priorities 7–9.
    High,
}

impl Lane {
    /// Lanes in the order a worker takes from them.
    pub const BY_URGENCY: [Lane; 3] = [Lane::High, Lane::Normal, Lane::Low];

    /// The lane a job of `priority` waits in.
    pub fn for_priority(priority: u8) -> Self {
        match priority {
            0..=2 => Lane::Low,
            3..=6 => Lane::Normal,
            _ => Lane::High,
        }
    }

    /// The lane's subject token.
    pub fn token(self) -> &'static str {
        match self {
            Lane::Low => "low",
            Lane::Normal => "normal",
            Lane::High => "high",
        }
    }
}

/// Subject a job of `queue` and `priority` is published on.
pub fn job_subject(queue: &str, priority: u8) -> String {
    format!(
        "jobbox.jobs.{queue}.{}",
        Lane::for_priority(priority).token()
    )
}

/// Subject filter of one lane of `queue`.
pub fn lane_subject(queue: &str, lane: Lane) -> String {
    format!("jobbox.jobs.{queue}.{}", lane.token())
}

/// Durable consumer name for one lane of `queue`.
pub fn consumer_name(queue: &str, lane: Lane) -> String {
    format!("jobbox-{queue}-{}", lane.token())
}

/// The queue a subject of the jobs stream belongs to (`jobbox.jobs.<queue>.…`).
pub fn queue_of_job_subject(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("jobbox.jobs.")?;
    let (queue, _) = rest.split_once('.')?;
    (!queue.is_empty()).then_some(queue)
}

/// Subject an event about `job_id` on `queue` is published on.
pub fn event_subject(queue: &str, job_id: &str, event: JobEventType) -> String {
    format!("jobbox.events.{queue}.{job_id}.{}", event.as_token())
}

/// Subject filter for events: all (`None, None`), one queue, or one job.
pub fn events_filter(queue: Option<&str>, job_id: Option<&str>) -> String {
    match (queue, job_id) {
        (Some(queue), Some(job)) => format!("jobbox.events.{queue}.{job}.*"),
        (None, Some(job)) => format!("jobbox.events.*.{job}.*"),
        (Some(queue), None) => format!("jobbox.events.{queue}.>"),
        (None, None) => EVENTS_SUBJECTS.to_string(),
    }
}

/// Subject a delayed job waits on until the server moves it to its lane
/// (a JetStream message schedule: one schedule per subject, so one per job).
pub fn scheduled_subject(queue: &str, job_id: &str) -> String {
    format!("jobbox.jobs.{queue}.scheduled.{job_id}")
}

/// Subject of the KV entry for `key` in `bucket` (what a KV `put` or `create`
/// publishes to), for writes that need the publish's own error kinds.
pub fn kv_subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// Subject of one counter of `queue`, e.g. `completed`.
pub fn stats_subject(queue: &str, counter: &str) -> String {
    format!("jobbox.stats.{queue}.{counter}")
}

/// Subject a dead-lettered job of `queue` is published on.
pub fn dlq_subject(queue: &str) -> String {
    format!("jobbox.dlq.{queue}")
}

/// Subject events about handlers (deploys, swaps) are published on; they belong to
/// no job, so they use the reserved queue token `_system`.
pub fn handler_event_subject(job_type: &str, event: JobEventType) -> String {
    format!("jobbox.events._system.{job_type}.{}", event.as_token())
}

/// The queue token of schedule events: `jobbox.events._schedules.<schedule_id>.<event>`.
pub const SCHEDULE_EVENTS_TOKEN: &str = "_schedules";

/// Subject events about a schedule (added, changed, failed, removed) are published on;
/// they belong to no job, so they use the reserved queue token `_schedules`.
pub fn schedule_event_subject(schedule_id: &str, event: JobEventType) -> String {
    format!(
        "jobbox.events.{SCHEDULE_EVENTS_TOKEN}.{schedule_id}.{}",
        event.as_token()
    )
}

/// Object name of a handler component with `digest` (`sha256:<hex>`).
///
/// Object names avoid `:` so they are valid in every NATS tooling.
pub fn handler_object(digest: &str) -> String {
    digest.replace(':', "-")
}

/// Hex digits of an engine id in an artifact name.
pub const ENGINE_ID_HEX: usize = 32;

/// The name of the compiled code of the handler with `digest` for the engine with
/// `engine_id` (32 lowercase hex digits, a hash of the engine's compatibility hash):
/// `sha256-<hex>.<engine id>`, both the artifact's object name and its compile claim's
/// key. `None` unless `digest` is a valid digest and `engine_id` is exactly 32
/// lowercase hex digits, so nothing unchecked becomes a key.
pub fn artifact_name(digest: &str, engine_id: &str) -> Option<String> {
    let hex_ok = engine_id.len() == ENGINE_ID_HEX
        && engine_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (crate::is_valid_digest(digest) && hex_ok)
        .then(|| format!("{}.{engine_id}", handler_object(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_are_checked() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let engine = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            artifact_name(&digest, engine),
            Some(format!("sha256-{}.{engine}", "a".repeat(64)))
        );
        assert_eq!(artifact_name("sha256:zz", engine), None);
        assert_eq!(artifact_name(&digest, "0123"), None);
        assert_eq!(artifact_name(&digest, &engine.to_uppercase()), None);
        assert_eq!(artifact_name(&digest, &format!("{}>", &engine[1..])), None);
    }

    #[test]
    fn job_subjects_name_their_queue() {
        assert_eq!(
            queue_of_job_subject("jobbox.jobs.emails.normal"),
            Some("emails")
        );
        assert_eq!(
            queue_of_job_subject("jobbox.jobs.q.scheduled.01ABC"),
            Some("q")
        );
        assert_eq!(queue_of_job_subject("jobbox.jobs..normal"), None);
        assert_eq!(queue_of_job_subject("jobbox.events.q.x"), None);
    }

    #[test]
    fn subjects_are_built_from_tokens() {
        assert_eq!(job_subject("emails", 5), "jobbox.jobs.emails.normal");
        assert_eq!(job_subject("emails", 9), "jobbox.jobs.emails.high");
        assert_eq!(job_subject("emails", 0), "jobbox.jobs.emails.low");
        assert_eq!(consumer_name("emails", Lane::High), "jobbox-emails-high");
        assert_eq!(
            event_subject("q", "01J", JobEventType::RetryScheduled),
            "jobbox.events.q.01J.retry_scheduled"
        );
        assert_eq!(events_filter(None, Some("01J")), "jobbox.events.*.01J.*");
        assert_eq!(handler_object("sha256:ab"), "sha256-ab");
        assert_eq!(
            job_id_of_event_subject("jobbox.events.q.b-7.completed"),
            Some("b-7")
        );
        assert_eq!(
            job_id_of_event_subject("jobbox.events.q.b.7.completed"),
            None
        );
        assert_eq!(terminal_event_filters()[0], "jobbox.events.*.*.completed");
    }

    #[test]
    fn lanes_cover_every_priority() {
        for priority in 0..=u8::MAX {
            let _ = Lane::for_priority(priority);
        }
        assert!(Lane::High > Lane::Normal && Lane::Normal > Lane::Low);
    }
}
