//! The job: what a client enqueues and a worker runs.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::limits::{HandlerLimits, JobLimits};
use crate::model::route::{DIGEST_PREFIX, is_valid_digest};
use crate::wire::{self, CONTENT_TYPE_JSON, NATS_MAX_PAYLOAD, WireError};

/// The queue a job goes to unless it names one.
pub const DEFAULT_QUEUE: &str = "default";

/// The priority a job gets unless it sets one: the middle of `0..=MAX_PRIORITY`.
pub const DEFAULT_PRIORITY: u8 = 5;

/// The highest priority. Priorities run `0..=MAX_PRIORITY`; a scheduling hint: where a
/// worker has a choice (jobs it has fetched), higher runs first. JetStream itself
/// delivers in publish order.
pub const MAX_PRIORITY: u8 = 9;

/// Longest `id`, `queue` or `job_type`, in bytes.
///
/// Why: they become NATS subject tokens and KV keys; 128 is far above a ULID (26) or
/// UUID (36) and keeps subjects short.
pub const MAX_NAME_LEN: usize = 128;

/// Longest free-text field of a job (`content_type`, `tenant`, `created_by`, `handler`),
/// in bytes.
pub const MAX_FIELD_LEN: usize = 1024;

/// Largest total size of `metadata` (keys plus values), in bytes: 16 KiB.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Largest payload, in bytes: 1 MiB − 64 KiB = 960 KiB.
///
/// Why: the whole encoded [`Job`] must fit in one NATS message ([`NATS_MAX_PAYLOAD`],
/// 1 MiB by default). The 64 KiB headroom covers the headers, metadata
/// ([`MAX_METADATA_BYTES`]), the free-text fields (4 × [`MAX_FIELD_LEN`]), the names
/// (3 × [`MAX_NAME_LEN`]) and the field keys.
pub const MAX_PAYLOAD_BYTES: usize = NATS_MAX_PAYLOAD - 64 * 1024;

/// A fresh, time-sortable id (a ULID, 26 characters of Crockford base32).
#[must_use]
pub fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

/// True if `s` can be used as a queue name, job type or job id: 1 to [`MAX_NAME_LEN`]
/// bytes of ASCII letters, digits, `_` and `-`, so that it is a valid NATS subject token
/// and KV key.
#[must_use]
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_owned()
}

fn default_content_type() -> String {
    CONTENT_TYPE_JSON.to_owned()
}

const fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

const fn default_attempt() -> u32 {
    1
}

/// A unit of work: run the handler routed for `job_type` on `payload`.
///
/// Published to `jobbox.jobs.<queue>` with header `Nats-Msg-Id: <id>`, so enqueueing
/// the same job twice inside the stream's duplicate window runs it once.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// let job = jobbox::Job::json("resize", &serde_json::json!({ "w": 64 }))?
///     .queue("images")
///     .priority(7)
///     .timeout(Duration::from_secs(5));
/// job.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id: a ULID (or UUIDv7) string. Also the idempotency key of the enqueue.
    pub id: String,
    /// The queue, a subject token (default [`DEFAULT_QUEUE`]).
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Selects the handler through the route of the same name.
    pub job_type: String,
    /// The input handed to the handler, opaque bytes (MessagePack `bin`).
    #[serde(default, with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Media type of `payload` (default [`CONTENT_TYPE_JSON`]).
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// `0..=MAX_PRIORITY`, higher runs first (default [`DEFAULT_PRIORITY`]).
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Retries after the first attempt; `None` uses the route's `max_retries`
    /// (3 unless the route says otherwise). Never more than the route allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Which attempt this is, starting at 1 for the first run (default 1).
    ///
    /// A message redelivered by JetStream keeps the value it was published with; workers
    /// take the larger of this and the delivery count.
    #[serde(default = "default_attempt")]
    pub attempt: u32,
    /// Run no earlier than this.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::timestamp::utc_option"
    )]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When the job was created.
    #[serde(deserialize_with = "super::timestamp::utc")]
    pub created_at: DateTime<Utc>,
    /// Who created the job (free text: user, service, schedule id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Tenant the job belongs to, for accounting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Free-form string labels, passed to the handler and copied into results.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Per-job limits request, clamped by the route's ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<JobLimits>,
    /// Wall-clock timeout in milliseconds (shorthand for `limits.timeout_ms`; the
    /// smaller wins when both are set). Clamped by the route's ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Pin the job to a handler: a digest `sha256:<hex>` or a version label. `None`
    /// runs whatever the route points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// The batch this job belongs to (its id is then `<batch_id>-<n>`), set by
    /// `Client::enqueue_batch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Job ids that must have COMPLETED before this job runs. Checked at enqueue
    /// (unknown ids and cycles are refused) and again by the worker before each run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// What happens to this job when a dependency ends in any status but COMPLETED
    /// (default: the job is cancelled).
    #[serde(default, skip_serializing_if = "DependencyFailure::is_default")]
    pub on_dependency_failure: DependencyFailure,
    /// How many times a worker found the dependencies unfinished and put the job back
    /// (drives the growing wait between checks). Not a delivery, not an attempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dependency_checks: u32,
    /// The W3C trace context the job belongs to. Not part of the encoded job: it
    /// travels in the message's `traceparent` / `tracestate` headers, and a worker
    /// sets it from them (see [`crate::trace`]).
    #[serde(skip)]
    pub trace: Option<crate::trace::TraceContext>,
}

/// Most dependencies one job may have.
///
/// Why: the worker reads one result per dependency before each run; a few hundred
/// keeps that check cheap, and 128 × [`MAX_NAME_LEN`] (16 KiB) fits in the 64 KiB
/// headroom of [`MAX_PAYLOAD_BYTES`] next to the metadata.
pub const MAX_DEPENDENCIES: usize = 128;

/// What a job does when one of its dependencies fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DependencyFailure {
    /// The job is recorded CANCELLED without running (the default).
    #[default]
    Cancel,
    /// The job is recorded FAILED without running.
    Fail,
}

impl DependencyFailure {
    fn is_default(&self) -> bool {
        *self == Self::Cancel
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Job {
    /// A job with a fresh id, `created_at` now, and defaults everywhere else.
    #[must_use]
    pub fn new(job_type: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            id: new_id(),
            queue: default_queue(),
            job_type: job_type.into(),
            payload: payload.into(),
            content_type: default_content_type(),
            priority: DEFAULT_PRIORITY,
            max_retries: None,
            attempt: 1,
            scheduled_at: None,
            created_at: Utc::now(),
            created_by: None,
            tenant: None,
            metadata: BTreeMap::new(),
            limits: None,
            timeout_ms: None,
            handler: None,
            batch_id: None,
            depends_on: Vec::new(),
            on_dependency_failure: DependencyFailure::Cancel,
            dependency_checks: 0,
            trace: None,
        }
    }

    /// A job whose payload is `value` serialized as JSON (content type
    /// [`CONTENT_TYPE_JSON`]).
    ///
    /// # Errors
    ///
    /// [`WireError::Json`] if `value` cannot be serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(
        job_type: impl Into<String>,
        value: &T,
    ) -> Result<Self, WireError> {
        Ok(Self::new(job_type, wire::to_json(value)?))
    }

    /// Parses the payload as JSON.
    ///
    /// # Errors
    ///
    /// [`WireError::Json`] if the payload is not JSON of type `T`.
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T, WireError> {
        wire::from_json(&self.payload)
    }

    /// Sets the id (use a stable id to make an enqueue idempotent).
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the queue.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the priority (`0..=MAX_PRIORITY`; checked by [`Job::validate`]).
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the number of retries after the first attempt.
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Runs the job no earlier than `delay` from now.
    #[must_use]
    pub fn delay(self, delay: Duration) -> Self {
        let at = TimeDelta::from_std(delay)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.scheduled_at(at)
    }

    /// Runs the job no earlier than `at`.
    #[must_use]
    pub fn scheduled_at(mut self, at: DateTime<Utc>) -> Self {
        self.scheduled_at = Some(at);
        self
    }

    /// Adds one metadata entry (replacing an existing one with the same key).
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Requests limits (each clamped by the route's ceiling).
    #[must_use]
    pub fn limits(mut self, limits: JobLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Sets the wall-clock timeout (millisecond resolution, clamped by the route).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sets the tenant.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the trace the job belongs to: the job is sent with this `traceparent`,
    /// the worker's span is its child, and the job's result and events carry its
    /// trace id.
    #[must_use]
    pub fn trace(mut self, context: crate::trace::TraceContext) -> Self {
        self.trace = Some(context);
        self
    }

    /// The job's trace id, if it belongs to a trace.
    #[must_use]
    pub fn trace_id(&self) -> Option<&str> {
        self.trace
            .as_ref()
            .map(crate::trace::TraceContext::trace_id)
    }

    /// Sets who created the job.
    #[must_use]
    pub fn created_by(mut self, created_by: impl Into<String>) -> Self {
        self.created_by = Some(created_by.into());
        self
    }

    /// Pins the job to a handler digest (`sha256:<hex>`) or version label.
    #[must_use]
    pub fn handler(mut self, handler: impl Into<String>) -> Self {
        self.handler = Some(handler.into());
        self
    }

    /// Makes the job wait until every job in `ids` has COMPLETED.
    #[must_use]
    pub fn depends_on<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Sets what happens when a dependency fails for good.
    #[must_use]
    pub fn on_dependency_failure(mut self, policy: DependencyFailure) -> Self {
        self.on_dependency_failure = policy;
        self
    }

    /// Sets the payload's content type.
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// The limits this job asks for: `limits` with `timeout_ms` folded in (the smaller
    /// timeout wins).
    #[must_use]
    pub fn requested_limits(&self) -> JobLimits {
        let mut limits = self.limits.unwrap_or_default();
        limits.timeout_ms = match (limits.timeout_ms, self.timeout_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        limits
    }

    /// The limits this job runs under on a route with `ceiling`: the request clamped to
    /// the ceiling, and `max_retries` likewise (a job may ask for less, never more).
    #[must_use]
    pub fn effective_limits(&self, ceiling: &HandlerLimits) -> HandlerLimits {
        let mut limits = self.requested_limits().clamp_to(ceiling);
        if let Some(retries) = self.max_retries {
            limits.max_retries = retries.min(ceiling.max_retries);
        }
        limits
    }

    /// Checks what the rest of jobbox relies on: `id`, `queue` and `job_type` are valid
    /// names ([`is_valid_name`]), priority is in range, `attempt` ≥ 1, and sizes are
    /// within [`MAX_PAYLOAD_BYTES`], [`MAX_METADATA_BYTES`] and [`MAX_FIELD_LEN`].
    ///
    /// # Errors
    ///
    /// The first problem found, as an [`InvalidJob`].
    pub fn validate(&self) -> Result<(), InvalidJob> {
        check_name("id", &self.id)?;
        check_name("queue", &self.queue)?;
        check_name("job_type", &self.job_type)?;
        if self.priority > MAX_PRIORITY {
            return Err(InvalidJob::Priority(self.priority));
        }
        if self.attempt == 0 {
            return Err(InvalidJob::ZeroAttempt);
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(InvalidJob::PayloadTooLarge {
                size: self.payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let metadata_bytes: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if metadata_bytes > MAX_METADATA_BYTES {
            return Err(InvalidJob::MetadataTooLarge {
                size: metadata_bytes,
                max: MAX_METADATA_BYTES,
            });
        }
        if self.content_type.is_empty() {
            return Err(InvalidJob::Empty {
                field: "content_type",
            });
        }
        check_len("content_type", &self.content_type)?;
        for (field, value) in [
            ("created_by", &self.created_by),
            ("tenant", &self.tenant),
            ("handler", &self.handler),
        ] {
            if let Some(value) = value {
                check_len(field, value)?;
            }
        }
        if let Some(batch_id) = &self.batch_id {
            check_name("batch_id", batch_id)?;
        }
        if self.depends_on.len() > MAX_DEPENDENCIES {
            return Err(InvalidJob::TooManyDependencies {
                count: self.depends_on.len(),
                max: MAX_DEPENDENCIES,
            });
        }
        for dependency in &self.depends_on {
            check_name("depends_on", dependency)?;
            if *dependency == self.id {
                return Err(InvalidJob::DependsOnItself(self.id.clone()));
            }
        }
        if let Some(handler) = &self.handler {
            if handler.is_empty() {
                return Err(InvalidJob::Empty { field: "handler" });
            }
            if handler.starts_with(DIGEST_PREFIX) && !is_valid_digest(handler) {
                return Err(InvalidJob::BadDigest(handler.clone()));
            }
        }
        Ok(())
    }
}

pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), InvalidJob> {
    if value.is_empty() {
        return Err(InvalidJob::Empty { field });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(InvalidJob::TooLong {
            field,
            len: value.len(),
            max: MAX_NAME_LEN,
        });
    }
    if !is_valid_name(value) {
        return Err(InvalidJob::BadName {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn check_len(field: &'static str, value: &str) -> Result<(), InvalidJob> {
    if value.len() > MAX_FIELD_LEN {
        return Err(InvalidJob::TooLong {
            field,
            len: value.len(),
            max: MAX_FIELD_LEN,
        });
    }
    Ok(())
}

/// Why a [`Job`] failed [`Job::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidJob {
    /// A required field is empty.
    #[error("{field} is empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A name field has characters that cannot appear in a NATS subject token or KV key.
    #[error("{field} {value:?} may contain only ASCII letters, digits, '_' and '-'")]
    BadName {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A field is longer than allowed.
    #[error("{field} is {len} bytes long, more than {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_DEPENDENCIES`] entries in `depends_on`.
    #[error("depends_on has {count} job ids, more than {max}")]
    TooManyDependencies {
        /// Entries in `depends_on`.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The job names itself in `depends_on` (the smallest cycle).
    #[error("job {0} depends on itself")]
    DependsOnItself(String),
    /// Priority above [`MAX_PRIORITY`].
    #[error("priority {0} is out of range 0..={MAX_PRIORITY}")]
    Priority(u8),
    /// `attempt` is 0 (attempts count from 1).
    #[error("attempt is 0, attempts count from 1")]
    ZeroAttempt,
    /// Payload larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload is {size} bytes, more than {max}")]
    PayloadTooLarge {
        /// Payload size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Metadata larger than [`MAX_METADATA_BYTES`].
    #[error("metadata is {size} bytes, more than {max}")]
    MetadataTooLarge {
        /// Metadata size in bytes (keys plus values).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// `handler` starts with `sha256:` but is not a well-formed digest.
    #[error("handler {0:?} is not a valid digest (sha256:<64 lowercase hex digits>)")]
    BadDigest(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job::new("echo", b"{}".to_vec())
    }

    #[test]
    fn new_has_documented_defaults() {
        let j = job();
        assert_eq!(j.queue, DEFAULT_QUEUE);
        assert_eq!(j.priority, DEFAULT_PRIORITY);
        assert_eq!(j.content_type, CONTENT_TYPE_JSON);
        assert_eq!(j.attempt, 1);
        assert_eq!(j.id.len(), 26);
        assert!(ulid::Ulid::from_string(&j.id).is_ok());
        assert_eq!(j.validate(), Ok(()));
        assert_ne!(j.id, job().id);
    }

    #[test]
    fn builders_set_fields() {
        let limits = JobLimits {
            fuel: Some(5),
            ..JobLimits::default()
        };
        let before = Utc::now();
        let j = job()
            .id("my-id")
            .queue("q1")
            .priority(MAX_PRIORITY)
            .max_retries(7)
            .delay(Duration::from_secs(60))
            .metadata("k", "v")
            .limits(limits)
            .timeout(Duration::from_millis(1500))
            .tenant("t")
            .created_by("me")
            .handler("v2")
            .content_type("text/plain");
        assert_eq!(j.id, "my-id");
        assert_eq!(j.queue, "q1");
        assert_eq!(j.priority, 9);
        assert_eq!(j.max_retries, Some(7));
        let at = j.scheduled_at.expect("delay sets scheduled_at");
        assert!(at >= before + TimeDelta::seconds(60));
        assert_eq!(j.metadata.get("k").map(String::as_str), Some("v"));
        assert_eq!(j.limits, Some(limits));
        assert_eq!(j.timeout_ms, Some(1500));
        assert_eq!(j.tenant.as_deref(), Some("t"));
        assert_eq!(j.created_by.as_deref(), Some("me"));
        assert_eq!(j.handler.as_deref(), Some("v2"));
        assert_eq!(j.content_type, "text/plain");
        assert_eq!(j.validate(), Ok(()));
    }

    #[test]
    fn huge_delay_saturates() {
        let j = job().delay(Duration::MAX);
        assert_eq!(j.scheduled_at, Some(DateTime::<Utc>::MAX_UTC));
        let j = job().timeout(Duration::MAX);
        assert_eq!(j.timeout_ms, Some(u64::MAX));
    }

    #[test]
    fn a_wire_job_with_a_naive_timestamp_says_so() {
        let mut map = serde_json::to_value(job()).expect("to json");
        map["created_at"] = serde_json::json!("2026-12-02T10:00:00");
        let bytes = rmp_serde::to_vec_named(&map).expect("encode");
        let error = crate::wire::decode::<Job>(&bytes).expect_err("refused");
        assert!(error.to_string().contains("has no UTC offset"), "{error}");
        map["created_at"] = serde_json::json!("2026-12-02T10:00:00+01:00");
        let bytes = rmp_serde::to_vec_named(&map).expect("encode");
        let decoded = crate::wire::decode::<Job>(&bytes).expect("decodes");
        assert_eq!(decoded.created_at.to_rfc3339(), "2026-12-02T09:00:00+00:00");
    }

    #[test]
    fn json_payload_round_trips() {
        let j = Job::json("echo", &serde_json::json!({"a": [1, 2]})).expect("json");
        assert_eq!(j.payload, br#"{"a":[1,2]}"#);
        let v: serde_json::Value = j.payload_json().expect("payload is json");
        assert_eq!(v["a"][1], 2);
        assert!(job().content_type("x").payload_json::<u32>().is_err());
    }

    #[test]
    fn validate_rejects_bad_jobs() {
        let cases: Vec<(Job, &str)> = vec![
            (job().id(""), "id is empty"),
            (Job::new("", Vec::new()), "job_type is empty"),
            (job().queue(""), "queue is empty"),
            (job().queue("a.b"), "queue \"a.b\" may contain only"),
            (job().queue("a b"), "queue"),
            (job().queue("a*"), "queue"),
            (job().queue("a>"), "queue"),
            (job().queue("é"), "queue"),
            (Job::new("x.y", Vec::new()), "job_type \"x.y\""),
            (job().id("a/b"), "id \"a/b\""),
            (
                job().id("x".repeat(MAX_NAME_LEN + 1)),
                "id is 129 bytes long",
            ),
            (
                job().priority(MAX_PRIORITY + 1),
                "priority 10 is out of range 0..=9",
            ),
            (job().priority(u8::MAX), "priority 255"),
            (
                Job::new("echo", vec![0; MAX_PAYLOAD_BYTES + 1]),
                "payload is",
            ),
            (
                job().metadata("k", "v".repeat(MAX_METADATA_BYTES)),
                "metadata is",
            ),
            (job().content_type(""), "content_type is empty"),
            (job().tenant("t".repeat(MAX_FIELD_LEN + 1)), "tenant is"),
            (job().handler(""), "handler is empty"),
            (job().handler("sha256:abc"), "not a valid digest"),
            (
                job().handler(format!("sha256:{}", "A".repeat(64))),
                "not a valid digest",
            ),
        ];
        for (j, want) in cases {
            let err = j.validate().expect_err(want);
            assert!(err.to_string().contains(want), "{err} vs {want}");
        }
        let mut zero = job();
        zero.attempt = 0;
        assert_eq!(zero.validate(), Err(InvalidJob::ZeroAttempt));
    }

    #[test]
    fn validate_accepts_edge_values() {
        assert_eq!(job().priority(0).validate(), Ok(()));
        assert_eq!(job().priority(MAX_PRIORITY).validate(), Ok(()));
        assert_eq!(
            Job::new("echo", vec![0; MAX_PAYLOAD_BYTES]).validate(),
            Ok(())
        );
        assert_eq!(job().id("x".repeat(MAX_NAME_LEN)).validate(), Ok(()));
        assert_eq!(
            job().id("0190b7e2-8c5a-7cc0-9d4e-1a2b3c4d5e6f").validate(),
            Ok(())
        );
        assert_eq!(job().queue("Q_1-a").validate(), Ok(()));
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(job().handler(digest).validate(), Ok(()));
        assert_eq!(job().handler("v1.2.3").validate(), Ok(()));
    }

    #[test]
    fn effective_limits_never_exceed_the_route() {
        let ceiling = HandlerLimits::DEFAULT;
        let j = job()
            .max_retries(100)
            .timeout(Duration::from_secs(3600))
            .limits(JobLimits {
                fuel: Some(10),
                timeout_ms: Some(2_000),
                ..JobLimits::default()
            });
        let got = j.effective_limits(&ceiling);
        assert_eq!(got.max_retries, ceiling.max_retries);
        assert_eq!(got.fuel, 10);
        assert_eq!(got.timeout_ms, 2_000);
        assert_eq!(
            job().max_retries(1).effective_limits(&ceiling).max_retries,
            1
        );
        let t = job().timeout(Duration::from_millis(250));
        assert_eq!(t.effective_limits(&ceiling).timeout_ms, 250);
        assert_eq!(job().effective_limits(&ceiling), ceiling);
    }
}
