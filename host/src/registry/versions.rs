//! Handler versions: the deploy history of a job type (the routes bucket keeps the
//! last 64 writes of each key), rollback to an earlier version, and removing a route.
//!
//! Every function here talks to NATS only; `jobbox handler history|rollback|rm` print
//! what they return.

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use jobbox::{Client, ClientError, JobEvent, JobEventType, Route, wire};
use serde::Serialize;

/// One write of a job type's route, as kept in the routes bucket's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteVersion {
    /// The write's revision in the routes bucket (increases with every write to any
    /// route).
    pub revision: u64,
    /// When the write happened.
    pub written_at: DateTime<Utc>,
    /// Whether this is the route in force now.
    pub current: bool,
    /// The route written; `None` for a removal (`jobbox handler rm`).
    pub route: Option<Route>,
}

/// How to roll back.
#[derive(Debug, Clone, Default)]
pub struct RollbackOptions {
    /// The version to go back to: a digest (`sha256:…`, or a unique prefix of at least
    /// 8 hex digits with or without `sha256:`) or a version label. Default: the most
    /// recent deploy whose digest differs from the current one.
    pub to: Option<String>,
    /// Who rolls back; kept in the route's `deployed_by` (default: the original
    /// deployer's name is kept).
    pub deployed_by: Option<String>,
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollback {
    /// The route now in force (an earlier deploy, stamped now).
    pub route: Route,
    /// Its revision in the routes bucket.
    pub revision: u64,
    /// The route it replaced; `None` if the job type had been removed.
    pub previous: Option<Route>,
    /// Which live workers run it now ([`super::sync::confirm`]).
    pub fleet: super::sync::FleetRoute,
}

/// Why a version operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The job type is not a valid name.
    #[error("invalid job type {0:?}: use letters, digits, '-' and '_'")]
    BadJobType(String),
    /// Nothing was ever deployed for the job type (or its history is gone).
    #[error("job type \"{0}\" has no deploy history")]
    NoHistory(String),
    /// The job type has no current route.
    #[error("job type \"{0}\" has no handler deployed")]
    NoRoute(String),
    /// Every deploy in the history has the current digest.
    #[error("job type \"{job_type}\" has no earlier version than {digest} to roll back to")]
    NoPrevious {
        /// The job type.
        job_type: String,
        /// Its current digest.
        digest: String,
    },
    /// `--to` names nothing in the history.
    #[error("job type \"{job_type}\" has no deployed version \"{wanted}\" (known: {known})")]
    UnknownVersion {
        /// The job type.
        job_type: String,
        /// What was asked for.
        wanted: String,
        /// The versions in the history, newest first, for the message.
        known: String,
    },
    /// `--to` is a digest prefix matching several digests.
    #[error("\"{wanted}\" matches several digests of job type \"{job_type}\": give more digits")]
    Ambiguous {
        /// The job type.
        job_type: String,
        /// What was asked for.
        wanted: String,
    },
    /// The handler object of the version is gone or damaged.
    #[error("cannot roll back to {digest}: its handler object is unusable ({reason})")]
    MissingObject {
        /// The digest.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The route changed while rolling back (someone deployed); nothing was written.
    #[error("the route of \"{0}\" changed while rolling back; nothing was changed: try again")]
    Conflict(String),
    /// Talking to NATS failed.
    #[error(transparent)]
    Nats(#[from] ClientError),
}

fn check_job_type(job_type: &str) -> Result<(), VersionError> {
    if jobbox::is_valid_name(job_type) {
        Ok(())
    } else {
        Err(VersionError::BadJobType(job_type.to_string()))
    }
}

/// When a bucket entry was written.
fn written_at(entry: &kv::Entry) -> DateTime<Utc> {
    DateTime::from_timestamp(entry.created.unix_timestamp(), entry.created.nanosecond())
        .unwrap_or_default()
}

/// Every write of `job_type`'s route still in the bucket, oldest first, with the
/// revision and operation of each.
pub(crate) async fn raw_history(
    client: &Client,
    job_type: &str,
) -> Result<Vec<kv::Entry>, ClientError> {
    let during = || format!("read the route history of {job_type}");
    let history = client
        .layout()
        .routes
        .history(job_type)
        .await
        .map_err(|e| ClientError::nats(during(), e))?;
    history
        .map_err(|e| ClientError::nats(during(), e))
        .try_collect()
        .await
}

fn decode_put(entry: &kv::Entry) -> Result<Option<Route>, ClientError> {
    match entry.operation {
        kv::Operation::Put => Ok(Some(wire::decode(&entry.value)?)),
        kv::Operation::Delete | kv::Operation::Purge => Ok(None),
    }
}

/// The deploy history of `job_type`, newest first, the current route marked.
pub async fn history(client: &Client, job_type: &str) -> Result<Vec<RouteVersion>, VersionError> {
    check_job_type(job_type)?;
    let entries = raw_history(client, job_type).await?;
    let newest = entries.last().map(|entry| entry.revision);
    let mut versions = Vec::with_capacity(entries.len());
    for entry in entries.iter().rev() {
        let route = decode_put(entry)?;
        versions.push(RouteVersion {
            revision: entry.revision,
            written_at: written_at(entry),
            current: route.is_some() && Some(entry.revision) == newest,
            route,
        });
    }
    Ok(versions)
}

/// The current route of `job_type` and its revision.
pub async fn current_route(
    client: &Client,
    job_type: &str,
) -> Result<Option<(u64, Route)>, ClientError> {
    match last_entry(client, job_type).await? {
        Some(entry) => Ok(decode_put(&entry)?.map(|route| (entry.revision, route))),
        None => Ok(None),
    }
}

/// The revision of the removal of `job_type`'s route, if its last write is one.
pub(crate) async fn removal_revision(
    client: &Client,
    job_type: &str,
) -> Result<Option<u64>, ClientError> {
    Ok(last_entry(client, job_type)
        .await?
        .filter(|entry| entry.operation != kv::Operation::Put)
        .map(|entry| entry.revision))
}

/// The last write of `job_type`'s route (a put or a removal), if any.
async fn last_entry(client: &Client, job_type: &str) -> Result<Option<kv::Entry>, ClientError> {
    client
        .layout()
        .routes
        .entry(job_type)
        .await
        .map_err(|e| ClientError::nats(format!("read the route of {job_type}"), e))
}

/// Every current route with its revision, sorted by job type.
pub async fn current_routes(client: &Client) -> Result<Vec<(u64, Route)>, ClientError> {
    let keys: Vec<String> = match client.layout().routes.keys().await {
        Ok(keys) => keys
            .try_collect()
            .await
            .map_err(|e| ClientError::nats("list routes", e))?,
        Err(e) => return Err(ClientError::nats("list routes", e)),
    };
    let mut routes = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(found) = current_route(client, &key).await? {
            routes.push(found);
        }
    }
    routes.sort_by(|a, b| a.1.job_type.cmp(&b.1.job_type));
    Ok(routes)
}

/// `v2 (sha256:0123456789ab)` or `sha256:0123456789ab`, for messages.
pub(crate) fn describe(route: &Route) -> String {
    let short: String = route.digest.chars().take(7 + 12).collect();
    match &route.version {
        Some(version) => format!("{version} ({short})"),
        None => short,
    }
}

/// The versions in `routes` (newest first, each digest once), for messages.
pub(crate) fn known_versions<'a>(routes: impl Iterator<Item = &'a Route>) -> String {
    let mut seen = Vec::<&str>::new();
    let mut known = Vec::new();
    for route in routes {
        if !seen.contains(&route.digest.as_str()) {
            seen.push(&route.digest);
            known.push(describe(route));
        }
    }
    if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    }
}

/// Whether `wanted` names `route`: its digest, its version label, or (when
/// `allow_prefix`) a digest prefix of at least 8 hex digits.
pub(crate) fn names(route: &Route, wanted: &str, allow_prefix: bool) -> bool {
    if route.digest == wanted || route.version.as_deref() == Some(wanted) {
        return true;
    }
    let hex = wanted.strip_prefix(jobbox::DIGEST_PREFIX).unwrap_or(wanted);
    allow_prefix
        && hex.len() >= 8
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && route
            .digest
            .strip_prefix(jobbox::DIGEST_PREFIX)
            .is_some_and(|digest| digest.starts_with(&hex.to_ascii_lowercase()))
}

/// Points `job_type` back at an earlier deploy (see [`RollbackOptions::to`]), after
/// checking its handler object is still in the object store and intact. The route is
/// re-written with `deployed_at` = now; workers swap to it like to any deploy.
///
/// The write is conditional on the route not having changed since it was read, so a
/// deploy racing with the rollback is never overwritten.
pub async fn rollback(
    client: &Client,
    job_type: &str,
    options: RollbackOptions,
) -> Result<Rollback, VersionError> {
    check_job_type(job_type)?;
    let entries = raw_history(client, job_type).await?;
    let Some(last) = entries.last() else {
        return Err(VersionError::NoHistory(job_type.to_string()));
    };
    let last_revision = last.revision;
    let previous = decode_put(last)?;
    let mut deploys = Vec::new();
    for entry in entries.iter().rev() {
        if let Some(route) = decode_put(entry)? {
            deploys.push(route);
        }
    }
    let target = match &options.to {
        Some(wanted) => {
            let exact = deploys.iter().find(|route| names(route, wanted, false));
            match exact {
                Some(route) => route.clone(),
                None => {
                    let mut matches = deploys.iter().filter(|route| names(route, wanted, true));
                    let first = matches.next().ok_or_else(|| VersionError::UnknownVersion {
                        job_type: job_type.to_string(),
                        wanted: wanted.clone(),
                        known: known_versions(deploys.iter()),
                    })?;
                    if matches.any(|other| other.digest != first.digest) {
                        return Err(VersionError::Ambiguous {
                            job_type: job_type.to_string(),
                            wanted: wanted.clone(),
                        });
                    }
                    first.clone()
                }
            }
        }
        None => match &previous {
            Some(current) => deploys
                .iter()
                .find(|route| route.digest != current.digest)
                .cloned()
                .ok_or_else(|| VersionError::NoPrevious {
                    job_type: job_type.to_string(),
                    digest: current.digest.clone(),
                })?,
            // Removed: bring back the last deploy.
            None => deploys
                .first()
                .cloned()
                .ok_or_else(|| VersionError::NoHistory(job_type.to_string()))?,
        },
    };
    // The object must still be there and match its digest: a route to a missing
    // handler would fail every job.
    client
        .get_handler(&target.digest)
        .await
        .map_err(|e| VersionError::MissingObject {
            digest: target.digest.clone(),
            reason: e.to_string(),
        })?;
    let mut route = target;
    route.deployed_at = Utc::now();
    if options.deployed_by.is_some() {
        route.deployed_by = options.deployed_by;
    }
    let value = wire::encode(&route).map_err(ClientError::from)?;
    let revision = client
        .layout()
        .routes
        .update(job_type, Bytes::from(value), last_revision)
        .await
        .map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => VersionError::Conflict(job_type.to_string()),
            _ => ClientError::nats(format!("set the route of {job_type}"), e).into(),
        })?;
    let mut event = JobEvent::handler(JobEventType::HandlerDeployed, job_type, &route.digest)
        .with_message("rollback");
    if let Some(version) = &route.version {
        event = event.with_detail("version", version.clone());
    }
    if let Some(previous) = &previous {
        event = event.with_detail("rolled_back_from", previous.digest.clone());
    }
    if let Ok(ack) = client.publish_event(&event).await {
        let _ = ack.await;
    }
    let fleet = super::sync::confirm(client, job_type, revision).await;
    Ok(Rollback {
        route,
        revision,
        previous,
        fleet,
    })
}

/// Deletes `job_type`'s route (its history stays, so [`rollback`] can bring it back).
/// Workers then fail jobs of that type as `unknown_job_type`. Returns the route that
/// was removed.
pub async fn remove(client: &Client, job_type: &str) -> Result<Route, VersionError> {
    check_job_type(job_type)?;
    let (revision, route) = current_route(client, job_type)
        .await?
        .ok_or_else(|| VersionError::NoRoute(job_type.to_string()))?;
    client
        .layout()
        .routes
        .delete_expect_revision(job_type, Some(revision))
        .await
        .map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => VersionError::Conflict(job_type.to_string()),
            _ => ClientError::nats(format!("remove the route of {job_type}"), e).into(),
        })?;
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(digest_hex: char, version: Option<&str>) -> Route {
        Route {
            job_type: "echo".into(),
            digest: format!("sha256:{}", digest_hex.to_string().repeat(64)),
            version: version.map(str::to_string),
            limits: jobbox::HandlerLimits::default(),
            deployed_at: Utc::now(),
            deployed_by: None,
            size_bytes: 1,
        }
    }

    #[test]
    fn versions_are_named_by_digest_label_or_prefix() {
        let v1 = route('a', Some("v1"));
        assert!(names(&v1, "v1", false));
        assert!(names(&v1, &v1.digest, false));
        assert!(!names(&v1, "aaaaaaaa", false));
        assert!(names(&v1, "aaaaaaaa", true));
        assert!(names(&v1, "sha256:AAAAAAAA", true));
        assert!(!names(&v1, "aaaa", true));
        assert!(!names(&v1, "v2", true));
    }

    #[test]
    fn known_versions_lists_each_digest_once() {
        let routes = [
            route('b', Some("v2")),
            route('a', None),
            route('b', Some("v2")),
        ];
        assert_eq!(
            known_versions(routes.iter()),
            "v2 (sha256:bbbbbbbbbbbb), sha256:aaaaaaaaaaaa"
        );
    }
}
