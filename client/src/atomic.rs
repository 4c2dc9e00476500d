//! JetStream atomic batch publish (nats-server ≥ 2.12, a stream with `allow_atomic`):
//! up to [`MAX_ATOMIC_JOBS`] jobs stored together, or none of them.
//!
//! Every message but the last goes out without a reply subject (`Nats-Batch-Id`, a
//! fresh id per try, and `Nats-Batch-Sequence` from 1); the last carries
//! `Nats-Batch-Commit: 1` and is answered by one ack for all, or by one error after
//! which nothing of the batch is stored.

use std::time::Duration;

use async_nats::HeaderMap;
use serde::Deserialize;

use crate::error::ClientError;
use crate::model::Job;
use crate::{Client, jobs};

/// Most jobs in one atomic publish.
///
/// Why: nats-server refuses a batch of more than `jetstream.limits.batch.max_msgs`
/// messages, 1,000 unless the operator raised it.
pub const MAX_ATOMIC_JOBS: usize = 1000;

/// How long the commit's answer may take.
///
/// Why: the server stores the whole batch before it answers, and drops a batch whose
/// messages stop coming for 10 s; past that, no answer is coming.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(15);

/// What an atomic publish came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AtomicOutcome {
    /// Every job is stored.
    Stored,
    /// Not taken as a batch, for a reason that publishing one job at a time gets
    /// past: some of the jobs were stored before (a duplicate id refuses the whole
    /// batch), the stream takes no atomic batches ([`ATOMIC_DISABLED`]: `disabled`),
    /// or no answer came (the batch may be stored or not).
    OneByOne {
        /// The stream said it takes no atomic batches: do not try again.
        disabled: bool,
        /// What the server said, or why there was no answer.
        reason: String,
    },
    /// Refused, nothing of it stored (a full store, say): one at a time would store
    /// some and fail the others.
    Refused(String),
}

/// The server's `err_code` for "atomic publish is disabled" on the stream.
const ATOMIC_DISABLED: u64 = 10174;

/// The server's `err_code` for "atomic publish batch contains duplicate message id".
const DUPLICATE_MESSAGE_ID: u64 = 10201;

#[derive(Deserialize)]
struct CommitAck {
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: Option<u64>,
    #[serde(default)]
    description: String,
}

/// Publishes `jobs` (at most [`MAX_ATOMIC_JOBS`], each with `Nats-Msg-Id` = its id)
/// as one atomic batch.
pub(crate) async fn publish_jobs(
    client: &Client,
    jobs: &[Job],
) -> Result<AtomicOutcome, ClientError> {
    debug_assert!(jobs.len() <= MAX_ATOMIC_JOBS);
    let Some((last, rest)) = jobs.split_last() else {
        return Ok(AtomicOutcome::Stored);
    };
    let batch_id = crate::new_id();
    let mut sequence = 0usize;
    let mut tag = |headers: &mut HeaderMap| {
        sequence += 1;
        headers.insert("Nats-Batch-Id", batch_id.as_str());
        headers.insert("Nats-Batch-Sequence", sequence.to_string().as_str());
    };
    for job in rest {
        let (subject, mut headers, payload) = jobs::job_message(job, &job.id)?;
        tag(&mut headers);
        client
            .nats()
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| ClientError::nats(format!("publish job {}", job.id), e))?;
    }
    let (subject, mut headers, payload) = jobs::job_message(last, &last.id)?;
    tag(&mut headers);
    headers.insert("Nats-Batch-Commit", "1");
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(payload)
        .timeout(Some(COMMIT_TIMEOUT));
    let answer = match client.nats().send_request(subject, request).await {
        Ok(answer) => answer,
        Err(e) => {
            return Ok(AtomicOutcome::OneByOne {
                disabled: false,
                reason: format!("no answer to the commit: {e}"),
            });
        }
    };
    Ok(judge(&answer.payload, jobs.len()))
}

/// Reads the commit's answer. Pure.
fn judge(answer: &[u8], jobs: usize) -> AtomicOutcome {
    let one_by_one = |reason: String| AtomicOutcome::OneByOne {
        disabled: false,
        reason,
    };
    match serde_json::from_slice::<CommitAck>(answer) {
        Ok(CommitAck {
            error: Some(error), ..
        }) => match error.err_code {
            Some(ATOMIC_DISABLED) => AtomicOutcome::OneByOne {
                disabled: true,
                reason: error.description,
            },
            Some(DUPLICATE_MESSAGE_ID) => one_by_one(error.description),
            _ => AtomicOutcome::Refused(error.description),
        },
        Ok(CommitAck {
            count: Some(count), ..
        }) if usize::try_from(count).is_ok_and(|count| count == jobs) => AtomicOutcome::Stored,
        // A server that knows no batches stores each message and acks the last alone.
        Ok(CommitAck { count, .. }) => {
            one_by_one(format!("the commit acknowledged {count:?} of {jobs} jobs"))
        }
        Err(e) => one_by_one(format!("the commit's answer does not decode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_answers_are_read() {
        assert_eq!(
            judge(br#"{"stream":"J","seq":5,"batch":"b","count":5}"#, 5),
            AtomicOutcome::Stored
        );
        assert!(matches!(
            judge(
                br#"{"error":{"code":400,"err_code":10174,"description":"atomic publish is disabled"},"stream":"J","seq":0}"#,
                5
            ),
            AtomicOutcome::OneByOne { disabled: true, .. }
        ));
        assert!(matches!(
            judge(
                br#"{"error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"}}"#,
                5
            ),
            AtomicOutcome::OneByOne {
                disabled: false,
                ..
            }
        ));
        assert_eq!(
            judge(
                br#"{"error":{"code":503,"err_code":10047,"description":"insufficient storage resources available"}}"#,
                5
            ),
            AtomicOutcome::Refused("insufficient storage resources available".into())
        );
        // Short counts, no count (a server that ignores the batch headers) and
        // garbage are not a commit.
        for answer in [
            &br#"{"stream":"J","seq":5,"batch":"b","count":4}"#[..],
            br#"{"stream":"J","seq":5}"#,
            b"\xff not json",
        ] {
            assert!(matches!(
                judge(answer, 5),
                AtomicOutcome::OneByOne {
                    disabled: false,
                    ..
                }
            ));
        }
    }
}
