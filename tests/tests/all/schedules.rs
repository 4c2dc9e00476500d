//! Recurring jobs end to end: real nats-server, real `jobbox worker` processes.
//! Each tick enqueues one job whatever the number of workers; a SIGKILLed firer does
//! not stop the next tick; pause and resume; restarts of every worker and of the
//! server; bad ids and specs refused before anything reaches NATS.
//!
//! Tick times are on a 1 s grid; assertions about time allow the grid plus one second,
//! never a speed.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::{Stream, StreamExt};
use jobbox::{
    Client, ClientError, EventsFrom, InvalidSchedule, Job, JobEvent, JobEventType, JobStatus,
    ScheduleSpec, ScheduleStatus,
};
use jobbox_tests::{NatsServer, deploy_guest, guests, jobbox_bin, wait_result};
use serde_json::json;

/// How long anything a test waits for may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Worker processes, SIGKILLed when dropped.
struct Fleet {
    url: String,
    cache: tempfile::TempDir,
    queue: &'static str,
    workers: BTreeMap<String, Child>,
}

impl Fleet {
    /// Starts `n` workers named `<queue>-w<i>` on `queue`.
    fn start(url: &str, queue: &'static str, n: usize) -> Self {
        let mut fleet = Self {
            url: url.to_string(),
            cache: tempfile::tempdir().expect("a compile cache directory"),
            queue,
            workers: BTreeMap::new(),
        };
        for i in 0..n {
            fleet.spawn(&format!("{queue}-w{i}"));
        }
        fleet
    }

    /// Starts one more worker called `id`.
    fn spawn(&mut self, id: &str) {
        let child = Command::new(jobbox_bin())
            // A short ack wait: a job a killed worker was running comes back soon.
            .args([
                "worker",
                "--queue",
                self.queue,
                "--worker-id",
                id,
                "--ack-wait",
                "2s",
            ])
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(["--nats-url", &self.url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a worker process");
        self.workers.insert(id.to_string(), child);
    }

    /// SIGKILLs the worker `id` and reaps it.
    fn kill(&mut self, id: &str) {
        let mut child = self
            .workers
            .remove(id)
            .unwrap_or_else(|| panic!("no worker {id} in the fleet"));
        child.kill().expect("SIGKILL the worker");
        child.wait().expect("reap the worker");
    }

    /// SIGKILLs every worker.
    fn kill_all(&mut self) {
        let ids: Vec<String> = self.workers.keys().cloned().collect();
        for id in ids {
            self.kill(&id);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in self.workers.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until at least `n` workers have a live heartbeat.
async fn wait_for_workers(client: &Client, n: usize) {
    let wait = async {
        loop {
            if client.workers().await.map(|w| w.len()).unwrap_or(0) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("{n} workers did not come up"));
}

/// One SCHEDULE_TRIGGERED event: the tick, the job, who fired it and when.
#[derive(Debug, Clone)]
struct Trigger {
    tick: DateTime<Utc>,
    job_id: String,
    worker: Option<String>,
    at: DateTime<Utc>,
}

impl Trigger {
    fn of(event: &JobEvent) -> Option<Self> {
        if event.event_type != JobEventType::ScheduleTriggered {
            return None;
        }
        Some(Self {
            tick: event.details.get("tick")?.parse().ok()?,
            job_id: event.job_id.clone(),
            worker: event.worker_id.clone(),
            at: event.timestamp,
        })
    }
}

/// Every event (with its stream sequence), from the start of the stream.
async fn follow(client: &Client) -> Events {
    Box::pin(
        client
            .events_with_sequence(None, None, EventsFrom::Start)
            .await
            .expect("follow events"),
    )
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<(u64, JobEvent), ClientError>> + Send>>;

/// Reads triggers until `done` says so (given every trigger so far and the last
/// sequence read), failing the test after [`PATIENCE`].
async fn triggers_until(
    events: &mut Events,
    seen: &mut Vec<Trigger>,
    mut done: impl FnMut(&[Trigger], u64) -> bool,
) {
    let mut sequence = 0;
    let wait = async {
        while !done(seen, sequence) {
            let (at, event) = events
                .next()
                .await
                .expect("events continue")
                .expect("event decodes");
            sequence = at;
            if let Some(trigger) = Trigger::of(&event) {
                seen.push(trigger);
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("waited {PATIENCE:?} for triggers; saw {:?}", ticks(seen)));
}

/// The events stream's last sequence now: everything published before this call has
/// a sequence at most this.
async fn last_event_sequence(client: &Client) -> u64 {
    let mut stream = client
        .jetstream()
        .get_stream(jobbox::nats::EVENTS_STREAM)
        .await
        .expect("events stream");
    stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence
}

fn ticks(triggers: &[Trigger]) -> Vec<i64> {
    triggers.iter().map(|t| t.tick.timestamp()).collect()
}

fn every_second(id: &str, queue: &str) -> ScheduleSpec {
    let job = Job::json("echo", &json!({"from": id}))
        .expect("encodes")
        .queue(queue);
    ScheduleSpec::every(Duration::from_secs(1), job).id(id)
}

/// Jobs that a SIGKILLed worker may have been running: they complete, and may have
/// started twice (the kill interrupted the first run, JetStream redelivered it).
async fn assert_completed(client: &Client, job_ids: &BTreeSet<String>) {
    for job_id in job_ids {
        let result = wait_result(client, job_id, PATIENCE).await;
        assert_eq!(result.status, JobStatus::Completed, "{job_id}");
    }
}

/// Every job a schedule enqueued ran once: one result, COMPLETED on attempt 1, and
/// one STARTED event.
async fn assert_each_ran_once(client: &Client, job_ids: &BTreeSet<String>) {
    for job_id in job_ids {
        let result = wait_result(client, job_id, PATIENCE).await;
        assert_eq!(result.status, JobStatus::Completed, "{job_id}");
        assert_eq!(result.attempts, 1, "{job_id}");
        let started = client
            .job_events(job_id)
            .await
            .expect("job events")
            .iter()
            .filter(|e| e.event_type == JobEventType::Started)
            .count();
        assert_eq!(started, 1, "{job_id} started {started} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_fire_each_tick_once_for_twenty_seconds() {
    const SPAN: Duration = Duration::from_secs(20);
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let _fleet = Fleet::start(&server.url(), "fleet", 3);
    wait_for_workers(&client, 3).await;

    let added = client
        .add_schedule(&every_second("every-second", "fleet"))
        .await
        .expect("add");
    let started = Utc::now();
    tokio::time::sleep(SPAN).await;
    let paused = client.pause_schedule("every-second").await.expect("pause");
    let stopped = Utc::now();

    // Every fire before the pause published its trigger before the pause returned:
    // read the stream up to where it is now.
    let last = last_event_sequence(&client).await;
    let mut events = follow(&client).await;
    let mut seen = Vec::new();
    triggers_until(&mut events, &mut seen, |_, sequence| sequence >= last).await;
    seen.retain(|t| t.job_id.starts_with("every-second-"));
    let job_ids: BTreeSet<String> = seen.iter().map(|t| t.job_id.clone()).collect();
    let distinct_ticks: BTreeSet<i64> = ticks(&seen).into_iter().collect();
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for trigger in &seen {
        *by_worker
            .entry(trigger.worker.clone().unwrap_or_default())
            .or_default() += 1;
    }
    eprintln!(
        "schedule every 1s for {SPAN:?} ({} → {}), 3 workers: {} jobs, ticks {:?}, fired by {by_worker:?}",
        started.to_rfc3339(),
        stopped.to_rfc3339(),
        job_ids.len(),
        ticks(&seen)
    );
    assert_eq!(job_ids.len(), seen.len(), "a job id was triggered twice");
    assert_eq!(distinct_ticks.len(), seen.len(), "a tick fired twice");
    // Nothing after the pause (a tick racing it, at most, is its next one).
    assert!(seen.iter().all(|t| t.tick <= paused.next_run_at));
    assert!(
        (19..=21).contains(&job_ids.len()),
        "{} jobs in {SPAN:?}, expected 20 ± 1",
        job_ids.len()
    );
    // One tick per second, none skipped.
    let first = *distinct_ticks.first().expect("ticks");
    assert_eq!(first, added.next_run_at.timestamp());
    assert_eq!(
        distinct_ticks,
        (first..first + seen.len() as i64).collect::<BTreeSet<_>>()
    );
    assert_each_ran_once(&client, &job_ids).await;
    // Counters are flushed by the workers every 500 ms: wait for them to catch up.
    let counted = async {
        loop {
            let stats = client.queue_stats("fleet").await.expect("stats");
            if stats.completed >= job_ids.len() as u64 {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let stats = tokio::time::timeout(PATIENCE, counted)
        .await
        .expect("the completed counter reaches the jobs");
    assert_eq!(stats.completed, job_ids.len() as u64, "{stats:?}");
    assert_eq!(stats.pending, 0);
    let stored = client
        .schedule("every-second")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(stored.fired, job_ids.len() as u64);
    assert_eq!(stored.failure_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_worker_that_fired_does_not_delay_the_next_tick() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let mut fleet = Fleet::start(&server.url(), "kill9", 3);
    wait_for_workers(&client, 3).await;
    client
        .add_schedule(&every_second("survivor", "kill9"))
        .await
        .expect("add");

    let mut events = follow(&client).await;
    let mut seen = Vec::new();
    triggers_until(&mut events, &mut seen, |seen, _| seen.len() >= 3).await;
    // The record names the worker whose compare-and-set won the last fire.
    let schedule = client
        .schedule("survivor")
        .await
        .expect("read")
        .expect("exists");
    let last = schedule.recent_fires.last().expect("fired").clone();
    let firer = last.worker_id.clone().expect("fired by a worker");
    fleet.kill(&firer);
    let killed_at = Utc::now();

    // The next ticks after the kill fire on their grid, within a second of being due.
    let next_tick = last.tick + TimeDelta::seconds(1);
    triggers_until(&mut events, &mut seen, |seen, _| {
        seen.iter().filter(|t| t.tick > killed_at).count() >= 3
    })
    .await;
    let after: Vec<&Trigger> = seen.iter().filter(|t| t.tick >= next_tick).collect();
    eprintln!(
        "killed {firer} at {} after it fired tick {}; next fires (tick → fired at, by): {:?}",
        killed_at.to_rfc3339(),
        last.tick.to_rfc3339(),
        after
            .iter()
            .map(|t| format!(
                "{} → +{} ms by {}",
                t.tick.format("%H:%M:%S"),
                (t.at - t.tick).num_milliseconds(),
                t.worker.as_deref().unwrap_or("?")
            ))
            .collect::<Vec<_>>()
    );
    let grid: Vec<i64> = after.iter().map(|t| t.tick.timestamp()).collect();
    let expected: Vec<i64> = (0..grid.len() as i64)
        .map(|i| next_tick.timestamp() + i)
        .collect();
    assert_eq!(
        grid, expected,
        "ticks after the kill are on the grid, none missed"
    );
    for trigger in &after {
        assert!(
            trigger.at - trigger.tick <= TimeDelta::seconds(1),
            "tick {} fired {} ms late",
            trigger.tick,
            (trigger.at - trigger.tick).num_milliseconds()
        );
        if trigger.tick > killed_at {
            assert_ne!(trigger.worker.as_deref(), Some(firer.as_str()));
        }
    }
    let job_ids: BTreeSet<String> = seen.iter().map(|t| t.job_id.clone()).collect();
    assert_eq!(job_ids.len(), seen.len(), "a job id was triggered twice");
    client.pause_schedule("survivor").await.expect("pause");
    let (later, earlier): (Vec<&Trigger>, Vec<&Trigger>) =
        seen.iter().partition(|t| t.tick > killed_at);
    assert_completed(&client, &earlier.iter().map(|t| t.job_id.clone()).collect()).await;
    assert_each_ran_once(&client, &later.iter().map(|t| t.job_id.clone()).collect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_ticks_and_resume_skips_the_paused_span() {
    const PAUSED_FOR: Duration = Duration::from_secs(3);
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let _fleet = Fleet::start(&server.url(), "pause", 2);
    wait_for_workers(&client, 2).await;
    client
        .add_schedule(&every_second("pausable", "pause"))
        .await
        .expect("add");
    let mut events = follow(&client).await;
    let mut seen = Vec::new();
    triggers_until(&mut events, &mut seen, |seen, _| seen.len() >= 2).await;

    let paused = client.pause_schedule("pausable").await.expect("pause");
    let paused_at = Utc::now();
    assert_eq!(paused.status, ScheduleStatus::Paused);
    // The paused span itself: nothing to wait on but the clock.
    tokio::time::sleep(PAUSED_FOR).await;
    let resumed = client.resume_schedule("pausable").await.expect("resume");
    let resumed_at = Utc::now();
    assert_eq!(resumed.status, ScheduleStatus::Active);
    assert!(resumed.next_run_at > resumed_at - TimeDelta::seconds(1));

    // Triggers are in the stream in the order they were published: once two ticks
    // after the resume are seen, anything fired while paused would have been seen.
    triggers_until(&mut events, &mut seen, |seen, _| {
        seen.iter()
            .filter(|t| t.tick >= resumed.next_run_at)
            .count()
            >= 2
    })
    .await;
    eprintln!(
        "paused at {} (tick {} was next), resumed at {}: ticks {:?}",
        paused_at.to_rfc3339(),
        paused.next_run_at.to_rfc3339(),
        resumed_at.to_rfc3339(),
        ticks(&seen)
    );
    // A tick racing the pause may have fired; none after it until the resume.
    let in_pause: Vec<i64> = seen
        .iter()
        .filter(|t| t.tick > paused.next_run_at && t.tick < resumed.next_run_at)
        .map(|t| t.tick.timestamp())
        .collect();
    assert!(
        in_pause.is_empty(),
        "ticks fired while paused: {in_pause:?}"
    );
    let first_after = seen
        .iter()
        .find(|t| t.tick >= resumed.next_run_at)
        .expect("fired after resume");
    assert_eq!(
        first_after.tick, resumed.next_run_at,
        "skip: no paused tick caught up"
    );
    assert!(first_after.tick <= resumed_at + TimeDelta::seconds(1));
    client.pause_schedule("pausable").await.expect("pause");
    let job_ids: BTreeSet<String> = seen.iter().map(|t| t.job_id.clone()).collect();
    assert_eq!(job_ids.len(), seen.len());
    assert_each_ran_once(&client, &job_ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_survives_restarting_every_worker_and_the_server() {
    let mut server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let mut fleet = Fleet::start(&server.url(), "restart", 2);
    wait_for_workers(&client, 2).await;
    client
        .add_schedule(&every_second("durable", "restart"))
        .await
        .expect("add");
    let mut events = follow(&client).await;
    let mut seen = Vec::new();
    triggers_until(&mut events, &mut seen, |seen, _| !seen.is_empty()).await;
    drop(events);
    // The trigger event is published before the record moves on: kill only once the
    // record is past the seen tick, or the workers die between the two and the
    // re-fire of that tick (a duplicate, no new event) is all there is for the gap.
    let last_seen = seen.iter().map(|t| t.tick).max().expect("one trigger");
    wait_until_advanced_past(&client, "durable", last_seen).await;

    // Everything down at once, then back: the server first, then new workers.
    fleet.kill_all();
    let down_at = Utc::now();
    server.restart();
    let client = connect_retrying(&server.url()).await;
    let stored = client
        .schedule("durable")
        .await
        .expect("read after the restart")
        .expect("the schedule survived the server restart");
    assert_eq!(stored.status, ScheduleStatus::Active);
    // Keep the workers down for a few ticks, so that some are missed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.spawn("restart-w2");
    fleet.spawn("restart-w3");
    let up_at = Utc::now();

    let mut events = follow(&client).await;
    let mut seen = Vec::new();
    triggers_until(&mut events, &mut seen, |seen, _| {
        seen.iter().filter(|t| t.tick > up_at).count() >= 3
    })
    .await;
    // Fired before the kill, and fired after it for ticks due before the workers
    // were back (a tick due just before the kill may not have fired yet: it is one of
    // the missed ones).
    let before: BTreeSet<i64> = seen
        .iter()
        .filter(|t| t.at <= down_at)
        .map(|t| t.tick.timestamp())
        .collect();
    let missed: Vec<&Trigger> = seen
        .iter()
        .filter(|t| t.at > down_at && t.tick <= up_at)
        .collect();
    let after: Vec<i64> = seen
        .iter()
        .filter(|t| t.tick > up_at)
        .map(|t| t.tick.timestamp())
        .collect();
    eprintln!(
        "down at {}, workers back at {}: ticks before {before:?}, while down {:?}, after {after:?}",
        down_at.to_rfc3339(),
        up_at.to_rfc3339(),
        ticks(&missed.iter().map(|t| (*t).clone()).collect::<Vec<_>>())
    );
    // Skip: the missed ticks became one job (the oldest, fired when the workers came
    // back), then the schedule went on with the grid.
    assert_eq!(missed.len(), 1, "missed ticks under skip");
    assert!(
        missed[0].at > up_at,
        "the missed tick fired once the workers were back"
    );
    let grid: Vec<i64> = (0..after.len() as i64).map(|i| after[0] + i).collect();
    assert_eq!(after, grid, "back on the 1 s grid");
    let job_ids: BTreeSet<String> = seen.iter().map(|t| t.job_id.clone()).collect();
    assert_eq!(job_ids.len(), seen.len(), "a job id was triggered twice");
    client.pause_schedule("durable").await.expect("pause");
    let (later, earlier): (Vec<&Trigger>, Vec<&Trigger>) =
        seen.iter().partition(|t| t.tick > down_at);
    assert_completed(&client, &earlier.iter().map(|t| t.job_id.clone()).collect()).await;
    assert_each_ran_once(&client, &later.iter().map(|t| t.job_id.clone()).collect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_go_on_when_the_server_restarts_under_live_workers() {
    let mut server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    let _fleet = Fleet::start(&server.url(), "bounce", 2);
    wait_for_workers(&client, 2).await;
    client
        .add_schedule(&every_second("bounce", "bounce"))
        .await
        .expect("add");
    let mut events = follow(&client).await;
    let mut seen = Vec::new();
    triggers_until(&mut events, &mut seen, |seen, _| !seen.is_empty()).await;
    drop(events);

    // The workers stay up and reconnect on their own.
    server.restart();
    let back_at = Utc::now();
    let client = connect_retrying(&server.url()).await;
    let mut events = follow(&client).await;
    let mut seen = Vec::new();
    triggers_until(&mut events, &mut seen, |seen, _| {
        seen.iter().filter(|t| t.tick > back_at).count() >= 3
    })
    .await;
    let after: Vec<i64> = seen
        .iter()
        .filter(|t| t.tick > back_at)
        .map(|t| t.tick.timestamp())
        .collect();
    eprintln!(
        "server restarted at {}, workers kept running: ticks after {after:?}",
        back_at.to_rfc3339()
    );
    let grid: Vec<i64> = (0..after.len() as i64).map(|i| after[0] + i).collect();
    assert_eq!(after, grid, "on the 1 s grid after the restart");
    assert!(
        seen.iter()
            .filter(|t| t.tick > back_at)
            .all(|t| t.at - t.tick <= TimeDelta::seconds(1)),
        "on time after the restart"
    );
    let job_ids: BTreeSet<String> = seen.iter().map(|t| t.job_id.clone()).collect();
    assert_eq!(job_ids.len(), seen.len(), "a job id was triggered twice");
    client.pause_schedule("bounce").await.expect("pause");
    assert_completed(&client, &job_ids).await;
    let mut waits = Vec::new();
    for trigger in seen.iter().filter(|t| t.tick > back_at) {
        let result = wait_result(&client, &trigger.job_id, PATIENCE).await;
        waits.push((result.start_time - trigger.tick).num_milliseconds());
    }
    eprintln!("after the restart, tick → job started (ms): {waits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_enqueues_the_missed_ticks_and_repeat_finishes() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    // No worker yet: every tick from the first on is missed.
    let added = client
        .add_schedule(&every_second("backlog", "backlog").catch_up(10).repeat(4))
        .await
        .expect("add");
    let first = added.next_run_at;
    let wait = (first + TimeDelta::milliseconds(3_500) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let up_at = Utc::now();
    let _fleet = Fleet::start(&server.url(), "backlog", 1);

    let mut events = follow(&client).await;
    let mut seen = Vec::new();
    triggers_until(&mut events, &mut seen, |seen, _| seen.len() >= 4).await;
    eprintln!(
        "catch-up 10, repeat 4, worker up at {}: ticks {:?} fired at {:?}",
        up_at.to_rfc3339(),
        ticks(&seen),
        seen.iter()
            .map(|t| t.at.format("%H:%M:%S%.3f").to_string())
            .collect::<Vec<_>>()
    );
    let expected: Vec<i64> = (0..4).map(|i| first.timestamp() + i).collect();
    assert_eq!(
        ticks(&seen),
        expected,
        "the four oldest missed ticks, in order"
    );
    assert!(
        seen.iter().all(|t| t.at >= up_at),
        "fired once a worker was up"
    );
    let finished = async {
        loop {
            let schedule = client
                .schedule("backlog")
                .await
                .expect("read")
                .expect("exists");
            if schedule.status == ScheduleStatus::Finished {
                return schedule;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let schedule = tokio::time::timeout(PATIENCE, finished)
        .await
        .expect("the schedule finishes after its fourth fire");
    assert_eq!(schedule.fired, 4);
    assert_eq!(schedule.repeat, Some(0));
    let job_ids: BTreeSet<String> = seen.iter().map(|t| t.job_id.clone()).collect();
    assert_each_ran_once(&client, &job_ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_and_specs_are_refused_before_nats() {
    let server = NatsServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let huge = "a".repeat(10 * 1024);
    for bad in ["", "a b", "a*", "a>", "a.b", huge.as_str()] {
        let refused = client.add_schedule(&every_second(bad, "q")).await;
        assert!(
            matches!(
                refused,
                Err(ClientError::InvalidSchedule(InvalidSchedule::BadId(_)))
            ),
            "add {bad:.20?}: {refused:?}"
        );
        for read in [
            client.schedule(bad).await.map(|_| ()),
            client.pause_schedule(bad).await.map(|_| ()),
            client.resume_schedule(bad).await.map(|_| ()),
            client.delete_schedule(bad).await,
            client.trigger_schedule(bad).await.map(|_| ()),
        ] {
            assert!(
                matches!(
                    read,
                    Err(ClientError::InvalidSchedule(InvalidSchedule::BadId(_)))
                ),
                "{bad:.20?}: {read:?}"
            );
        }
    }
    // The connection is unharmed: a good schedule still works.
    let good = client
        .add_schedule(&every_second("good", "q"))
        .await
        .expect("add");
    assert!(matches!(
        client.add_schedule(&every_second("good", "q")).await,
        Err(ClientError::Conflict(_))
    ));
    assert_eq!(client.schedules().await.expect("list"), [good]);
    assert!(matches!(
        client.pause_schedule("missing").await,
        Err(ClientError::NotFound(_))
    ));
    client.delete_schedule("good").await.expect("rm");
    assert!(client.schedule("good").await.expect("read").is_none());
}

/// Connects to a server that may still be recovering its streams after a restart.
/// Waits (up to 10 s) until schedule `id`'s record is due after `tick`.
async fn wait_until_advanced_past(client: &Client, id: &str, tick: DateTime<Utc>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = client.schedule(id).await.expect("read schedule");
        if stored.as_ref().is_some_and(|s| s.next_run_at > tick) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "schedule {id} not advanced past {tick} within 10 s: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect_retrying(url: &str) -> Client {
    let connect = async {
        loop {
            match Client::connect(url).await {
                Ok(client) => return client,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    };
    tokio::time::timeout(PATIENCE, connect)
        .await
        .expect("the restarted server takes connections")
}

/// Runs `jobbox schedule <args> -o json` against `url`: (exit ok, stdout, stderr).
fn schedule_cli(url: &str, args: &[&str]) -> (bool, serde_json::Value, String) {
    let output = Command::new(jobbox_bin())
        .arg("schedule")
        .args(args)
        .args(["-o", "json", "--nats-url", url])
        .output()
        .expect("run jobbox schedule");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (
        output.status.success(),
        value,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_shows_triggers_and_refuses() {
    let server = NatsServer::start();
    let url = server.url();
    let client = Client::connect(&url).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;

    for (args, expected) in [
        (
            vec!["add", "echo", "--every", "500ms"],
            "under the minimum of 1s",
        ),
        (
            vec!["add", "echo", "--cron", "0 61 * * *"],
            "cron expression",
        ),
        (
            vec!["add", "echo", "--cron", "0 * * * *", "--tz", "Mars/Base"],
            "unknown time zone",
        ),
        (
            vec!["add", "echo", "--every", "1s", "--id", "a b"],
            "schedule id",
        ),
        (
            vec!["add", "echo", "--every", "1s", "--json", "{no"],
            "not valid JSON",
        ),
        (vec!["add", "bad type", "--every", "1s"], "job template"),
        (
            vec!["add", "echo", "--every", "1s", "--priority", "12"],
            "priority",
        ),
    ] {
        let (ok, _, stderr) = schedule_cli(&url, &args);
        assert!(!ok, "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }

    let (ok, added, stderr) = schedule_cli(
        &url,
        &[
            "add",
            "echo",
            "--cron",
            "0 30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--id",
            "nightly",
            "--json",
            r#"{"n": 1}"#,
            "--queue",
            "cli",
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(added["id"], "nightly");
    assert_eq!(added["job"]["payload"]["n"], 1);
    let (ok, shown, stderr) = schedule_cli(&url, &["show", "nightly"]);
    assert!(ok, "{stderr}");
    let next = shown["next"].as_array().expect("next ticks");
    assert_eq!(next.len(), 5, "{shown}");
    // Every listed tick is 02:30 wall-clock time in Berlin (or 03:00 on a spring-
    // forward day, when 02:30 does not exist).
    for tick in next {
        let tick: DateTime<Utc> = tick.as_str().expect("time").parse().expect("rfc3339");
        let wall = tick.with_timezone(&chrono_tz_berlin());
        let hm = wall.format("%H:%M").to_string();
        assert!(hm == "02:30" || hm == "03:00", "{tick} is {hm} in Berlin");
    }

    let (ok, triggered, stderr) = schedule_cli(&url, &["trigger", "nightly"]);
    assert!(ok, "{stderr}");
    let job_id = triggered["job_id"].as_str().expect("job id").to_string();
    assert!(job_id.starts_with("nightly-now-"), "{job_id}");
    let _fleet = Fleet::start(&url, "cli", 1);
    let result = wait_result(&client, &job_id, PATIENCE).await;
    assert_eq!(result.status, JobStatus::Completed);
    let events = client.job_events(&job_id).await.expect("events");
    assert_eq!(
        events.first().map(|e| e.event_type),
        Some(JobEventType::ScheduleTriggered)
    );

    let (ok, listed, _) = schedule_cli(&url, &["list"]);
    assert!(ok);
    assert_eq!(listed[0]["fired"], 1);
    assert_eq!(listed[0]["recent_fires"][0]["manual"], true);
    let (ok, paused, _) = schedule_cli(&url, &["pause", "nightly"]);
    assert!(ok);
    assert_eq!(paused["status"], "PAUSED");
    let (ok, resumed, _) = schedule_cli(&url, &["resume", "nightly"]);
    assert!(ok);
    assert_eq!(resumed["status"], "ACTIVE");
    let (ok, _, _) = schedule_cli(&url, &["rm", "nightly"]);
    assert!(ok);
    let (ok, _, stderr) = schedule_cli(&url, &["show", "nightly"]);
    assert!(!ok && stderr.contains("does not exist"), "{stderr}");
}

/// Europe/Berlin, from the same database the schedules use.
fn chrono_tz_berlin() -> chrono_tz::Tz {
    chrono_tz::Europe::Berlin
}
