//! What a handler knows about the job it runs: [`Context`].

use crate::bindings::exports::jobbox::handler::handler::Job;

/// The job a handler is running (everything but the payload), and the way to
/// report progress back to the worker.
///
/// The worker hands one `Context` to each call of your handler. To unit-test a
/// handler on your own machine, build one with [`Context::new`]; outside
/// WebAssembly, progress reports and log lines go to stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    id: String,
    job_type: String,
    queue: String,
    attempt: u32,
    content_type: String,
    metadata: Vec<(String, String)>,
}

impl Context {
    /// A context for a job of `job_type`, for tests: id `"local"`, queue `"default"`,
    /// attempt 1, content type `application/json` and no metadata. Change them with the
    /// `with_*` methods.
    ///
    /// ```
    /// use jobbox_guest::Context;
    ///
    /// let ctx = Context::new("word-count").with_attempt(2).with_metadata("tenant", "acme");
    /// assert_eq!(ctx.metadata("tenant"), Some("acme"));
    /// assert_eq!(ctx.attempt(), 2);
    /// ```
    #[must_use]
    pub fn new(job_type: impl Into<String>) -> Self {
        Self {
            id: "local".to_owned(),
            job_type: job_type.into(),
            queue: "default".to_owned(),
            attempt: 1,
            content_type: crate::codec::JSON.to_owned(),
            metadata: Vec::new(),
        }
    }

    /// Sets the job id.
    #[must_use]
    pub fn with_id(self, id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..self
        }
    }

    /// Sets the queue.
    #[must_use]
    pub fn with_queue(self, queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            ..self
        }
    }

    /// Sets the attempt number (1 for the first run).
    #[must_use]
    pub fn with_attempt(self, attempt: u32) -> Self {
        Self { attempt, ..self }
    }

    /// Sets the payload's content type.
    #[must_use]
    pub fn with_content_type(self, content_type: impl Into<String>) -> Self {
        Self {
            content_type: content_type.into(),
            ..self
        }
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Splits a job as the worker sends it into its payload and its context.
    pub(crate) fn from_job(job: Job) -> (Vec<u8>, Self) {
        let Job {
            id,
            job_type,
            queue,
            attempt,
            payload,
            content_type,
            metadata,
        } = job;
        let content_type = if content_type.trim().is_empty() {
            crate::codec::JSON.to_owned()
        } else {
            content_type
        };
        let ctx = Self {
            id,
            job_type,
            queue,
            attempt,
            content_type,
            metadata,
        };
        (payload, ctx)
    }

    /// The job's unique id (a ULID).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The job type the job was routed by, e.g. `"word-count"`.
    #[must_use]
    pub fn job_type(&self) -> &str {
        &self.job_type
    }

    /// The queue the job was enqueued on.
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Which attempt this is: 1 for the first run, 2 for the first retry, and so on.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The payload's media type as the enqueuer gave it, e.g. `"application/json"` or
    /// `"application/msgpack"`; `"application/json"` when the job did not say.
    ///
    /// Typed handlers (see [`export_handler!`](crate::export_handler)) get their input
    /// decoded and their output encoded with this content type.
    #[must_use]
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The value of the metadata entry `key`, if the enqueuer attached one (the first
    /// one, if it attached several).
    #[must_use]
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All metadata entries, in the order the worker sent them.
    #[must_use]
    pub fn metadata_all(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// Reports progress: `percent` done (values above 100 count as 100), now at
    /// `step` (a short machine-friendly name such as `"resize"`; `""` for none).
    ///
    /// The worker publishes a PROGRESS event and keeps the job alive in the queue
    /// while you work. Reports are rate limited by the worker, so calling this often
    /// is cheap but not every call becomes an event.
    pub fn progress(&self, percent: u8, step: &str) {
        crate::host::report_progress(percent, step, "");
    }

    /// Like [`progress`](Self::progress), with a human-readable `message` as well.
    pub fn progress_message(&self, percent: u8, step: &str, message: &str) {
        crate::host::report_progress(percent, step, message);
    }

    /// Says what media type this job's output is in, e.g. `"text/plain"`; the result
    /// records it so that `jobbox result` and clients decode the output. Without a
    /// call the result says the job's own content type, which is what a typed handler
    /// answers in: raw handlers returning something else should call this. A value
    /// that is not a media type is ignored, with a warning in the job's log.
    pub fn set_output_content_type(&self, content_type: &str) {
        crate::host::set_output_content_type(content_type);
    }
}
