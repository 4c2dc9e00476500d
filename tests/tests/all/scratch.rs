//! Scratch directories: hostile guests against a real sandbox with a scratch area
//! (each ends classified, nothing outside touched, nothing left behind), and the tar
//! example through a worker.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jobbox::{ErrorType, HandlerLimits, Job, JobStatus};
use jobbox_host::registry::DeployOptions;
use jobbox_host::sandbox::{
    EngineConfig, Handler, JobControl, RunOutcome, Sandbox, ScratchArea, ScratchCaps,
};
use jobbox_tests::{NatsServer, RunningWorker, brief, deploy_guest_with, guests, wait_result};
use serde_json::{Value, json};

/// A sandbox with a scratch area in a temporary root, and files planted around it
/// that no job may reach.
struct Fixture {
    _tmp: tempfile::TempDir,
    sandbox: Sandbox,
    root: PathBuf,
    worker_dir: PathBuf,
    outside: PathBuf,
}

/// Contents of a planted secret.
const SECRET: &str = "not for guests";

impl Fixture {
    fn new(caps: ScratchCaps) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("scratch");
        let area = ScratchArea::open(&root, caps).expect("scratch area");
        let worker_dir = area.worker_dir().to_path_buf();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir outside");
        for dir in [&root, &worker_dir, &outside] {
            std::fs::write(dir.join("secret"), SECRET).expect("plant a secret");
        }
        let sandbox = Sandbox::with_scratch(
            EngineConfig {
                concurrency: 4,
                max_memory_bytes: 64 << 20,
                pooling: true,
            },
            Some(area),
        )
        .expect("sandbox builds");
        Self {
            _tmp: tmp,
            sandbox,
            root,
            worker_dir,
            outside,
        }
    }

    fn default_caps() -> Self {
        Self::new(ScratchCaps::default())
    }

    /// Host paths a hostile guest is told about and tries.
    fn outside_paths(&self) -> Value {
        let file = |dir: &Path| dir.join("secret").display().to_string();
        let dir = |dir: &Path| dir.display().to_string();
        json!({
            "outside_files": [file(&self.root), file(&self.worker_dir), file(&self.outside)],
            "outside_dirs": [dir(&self.root), dir(&self.worker_dir), dir(&self.outside),
                dir(&self.worker_dir.join("job-0")), dir(&self.worker_dir.join("job-1"))],
        })
    }

    /// Nothing was left in the worker's directory, nothing was added next to it or
    /// outside, and every secret is intact.
    fn assert_untouched(&self) {
        let names = |dir: &Path| -> BTreeSet<String> {
            std::fs::read_dir(dir)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        };
        let only_secret = BTreeSet::from(["secret".to_string()]);
        assert_eq!(
            names(&self.worker_dir),
            only_secret,
            "left in the worker dir"
        );
        assert_eq!(names(&self.outside), only_secret, "written outside");
        let worker = self
            .worker_dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let root: BTreeSet<String> = names(&self.root);
        let expected = BTreeSet::from([
            "secret".to_string(),
            worker.clone(),
            format!("{worker}.lock"),
        ]);
        assert_eq!(root, expected, "written in the scratch root");
        for dir in [&self.root, &self.worker_dir, &self.outside] {
            let secret = std::fs::read_to_string(dir.join("secret")).expect("secret");
            assert_eq!(secret, SECRET);
        }
    }

    async fn load(&self, path: &str) -> Handler {
        let bytes = std::fs::read(path).expect("guest is built");
        self.sandbox
            .load(Arc::from(bytes), Duration::from_secs(60))
            .await
            .expect("guest loads")
    }

    async fn run(&self, handler: &Handler, payload: &Value, limits: HandlerLimits) -> RunOutcome {
        self.run_with(handler, payload, limits, JobControl::default())
            .await
    }

    async fn run_with(
        &self,
        handler: &Handler,
        payload: &Value,
        limits: HandlerLimits,
        control: JobControl,
    ) -> RunOutcome {
        let job = Job::json("scratch", payload).expect("payload encodes");
        self.sandbox.run(handler, &job, limits, control).await
    }
}

/// Limits with a scratch directory of `bytes` and `files`.
fn scratch(bytes: u64, files: u64) -> HandlerLimits {
    HandlerLimits {
        scratch_bytes: bytes,
        scratch_files: files,
        timeout_ms: 20_000,
        ..HandlerLimits::DEFAULT
    }
}

fn output(outcome: &RunOutcome) -> Value {
    match &outcome.result {
        Ok(bytes) => serde_json::from_slice(bytes).expect("output is JSON"),
        Err(failure) => panic!("job failed: {failure}; stderr {:?}", outcome.stderr),
    }
}

/// Runs one attack of the escape guest and checks that it completed with nothing
/// reached.
async fn assert_no_escape(attack: &str) {
    let fixture = Fixture::default_caps();
    let handler = fixture.load(guests::SCRATCH_ESCAPE).await;
    let mut payload = fixture.outside_paths();
    payload["attack"] = json!(attack);
    let outcome = fixture.run(&handler, &payload, scratch(1 << 20, 100)).await;
    let report = output(&outcome);
    assert_eq!(report["escaped"], 0, "{report:#}");
    assert!(
        report["attempts"].as_object().is_some_and(|a| a.len() >= 5),
        "{report:#}"
    );
    fixture.assert_untouched();
}

#[tokio::test]
async fn symlinks_pointing_out_reach_nothing() {
    assert_no_escape("symlink").await;
}

#[tokio::test]
async fn dotdot_paths_reach_nothing() {
    assert_no_escape("dotdot").await;
}

#[tokio::test]
async fn absolute_paths_reach_nothing() {
    assert_no_escape("absolute").await;
}

#[tokio::test]
async fn hard_links_are_refused() {
    assert_no_escape("hardlink").await;
}

#[tokio::test]
async fn writing_past_the_byte_limit_fails_the_write_inside_the_guest() {
    let fixture = Fixture::default_caps();
    let handler = fixture.load(guests::SCRATCH_FILL).await;
    let limit = 1 << 20;
    let outcome = fixture
        .run(
            &handler,
            &json!({"max_bytes": 64 << 20}),
            scratch(limit, 100),
        )
        .await;
    let report = output(&outcome);
    // The guest handled the error (it completed). Through `std::fs` it is a generic
    // I/O error: wasi-libc turns every stream error into EIO. The WASI error the host
    // gives is `insufficient-space`, which raw stream and positional writes see.
    assert!(report["error"].is_string(), "{report:#}");
    for raw in ["raw_stream_error", "raw_write_error"] {
        assert!(
            report[raw]
                .as_str()
                .is_some_and(|e| e.contains("insufficient-space")),
            "{report:#}"
        );
    }
    let written = report["written"].as_u64().expect("written");
    assert!(written <= limit && written >= limit / 2, "{report:#}");
    assert_eq!(report["sparse_refused"], true, "{report:#}");
    assert_eq!(report["full_after_delete"], true, "{report:#}");
    assert!(
        outcome.usage.peak_scratch_bytes >= written && outcome.usage.peak_scratch_bytes <= limit,
        "{:?}",
        outcome.usage
    );
    fixture.assert_untouched();
}

#[tokio::test]
async fn the_workers_cap_lowers_what_a_route_grants() {
    let cap = 256 << 10;
    let fixture = Fixture::new(ScratchCaps {
        max_bytes: cap,
        max_files: 10,
    });
    let handler = fixture.load(guests::SCRATCH_FILL).await;
    let outcome = fixture
        .run(
            &handler,
            &json!({"max_bytes": 64 << 20}),
            scratch(1 << 30, 1000),
        )
        .await;
    let report = output(&outcome);
    assert_eq!(report["written"], cap, "{report:#}");
    assert!(
        outcome.usage.peak_scratch_bytes <= cap,
        "{:?}",
        outcome.usage
    );
    let files = fixture.load(guests::SCRATCH_FILES).await;
    let outcome = fixture
        .run(&files, &json!({"count": 1000}), scratch(1 << 30, 1000))
        .await;
    assert_eq!(output(&outcome)["created"], 10);
    fixture.assert_untouched();
}

#[tokio::test]
async fn a_hundred_thousand_tiny_files_stop_at_the_file_limit() {
    let fixture = Fixture::default_caps();
    let handler = fixture.load(guests::SCRATCH_FILES).await;
    let outcome = fixture
        .run(
            &handler,
            &json!({"count": 100_000}),
            scratch(64 << 20, 1000),
        )
        .await;
    let report = output(&outcome);
    assert_eq!(report["created"], 1000, "{report:#}");
    assert_eq!(report["full"], true, "{report:#}");
    assert_eq!(outcome.usage.scratch_files, 1000, "{:?}", outcome.usage);
    fixture.assert_untouched();
}

/// The host directory of the only job directory in `worker_dir` that has a marker
/// file in it, once there is one.
async fn marked_job_dir(worker_dir: &Path) -> PathBuf {
    loop {
        let found = std::fs::read_dir(worker_dir)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_dir())
            .find(|dir| {
                std::fs::read_dir(dir).is_ok_and(|mut entries| {
                    entries.any(|e| {
                        e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("marker-"))
                    })
                })
            });
        if let Some(dir) = found {
            return dir;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_job_that_writes_then_spins_to_its_timeout_leaves_nothing() {
    let fixture = Fixture::default_caps();
    let handler = fixture.load(guests::SCRATCH_PEEK).await;
    let limits = HandlerLimits {
        timeout_ms: 300,
        ..scratch(1 << 20, 10)
    };
    let outcome = fixture
        .run(&handler, &json!({"mode": "spin"}), limits)
        .await;
    let failure = outcome.result.as_ref().expect_err("spins to its deadline");
    assert_eq!(failure.error_type, ErrorType::Timeout, "{failure}");
    assert!(outcome.usage.scratch_files >= 1, "{:?}", outcome.usage);
    fixture.assert_untouched();
}

#[tokio::test]
async fn a_trapped_and_a_cancelled_job_leave_nothing() {
    let fixture = Fixture::default_caps();
    let handler = fixture.load(guests::SCRATCH_PEEK).await;
    let outcome = fixture
        .run(&handler, &json!({"mode": "trap"}), scratch(1 << 20, 10))
        .await;
    let failure = outcome.result.as_ref().expect_err("traps");
    assert_eq!(failure.error_type, ErrorType::Trap, "{failure}");
    fixture.assert_untouched();

    let spin = json!({"mode": "spin"});
    let control = JobControl::default();
    let cancel = control.cancel.clone();
    let run = fixture.run_with(&handler, &spin, scratch(1 << 20, 10), control);
    let stop = async {
        marked_job_dir(&fixture.worker_dir).await;
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(run, stop);
    let failure = outcome.result.as_ref().expect_err("cancelled");
    assert_eq!(failure.error_type, ErrorType::Cancelled, "{failure}");
    fixture.assert_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_jobs_cannot_see_each_others_scratch() {
    let fixture = Fixture::default_caps();
    let handler = fixture.load(guests::SCRATCH_PEEK).await;
    let spin = json!({"mode": "spin"});
    let control = JobControl::default();
    let cancel = control.cancel.clone();
    let spinner = fixture.run_with(&handler, &spin, scratch(1 << 20, 10), control);
    let looker = async {
        // The spinner's marker is on disk while the second job looks.
        let theirs = marked_job_dir(&fixture.worker_dir).await;
        let payload = json!({"mode": "look", "others": [theirs.display().to_string(),
            theirs.join("..").display().to_string()]});
        let outcome = fixture.run(&handler, &payload, scratch(1 << 20, 10)).await;
        assert!(theirs.is_dir(), "the first job was still running");
        cancel.cancel();
        outcome
    };
    let (spun, looked) = tokio::join!(spinner, looker);
    assert_eq!(
        spun.result.as_ref().expect_err("cancelled").error_type,
        ErrorType::Cancelled
    );
    let report = output(&looked);
    assert_eq!(
        report["own"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    assert_eq!(report["others"], json!([]), "{report:#}");
    assert_eq!(report["reached"], json!([]), "{report:#}");
    fixture.assert_untouched();
}

#[tokio::test]
async fn a_job_finds_nothing_of_the_previous_job() {
    let fixture = Fixture::default_caps();
    let handler = fixture.load(guests::SCRATCH_PEEK).await;
    let first = fixture
        .run(&handler, &json!({"mode": "return"}), scratch(1 << 20, 10))
        .await;
    assert_eq!(output(&first)["own"].as_array().map(Vec::len), Some(1));
    let second = fixture
        .run(&handler, &json!({"mode": "look"}), scratch(1 << 20, 10))
        .await;
    let report = output(&second);
    assert_eq!(report["others"], json!([]), "{report:#}");
    assert_eq!(report["reached"], json!([]), "{report:#}");
    fixture.assert_untouched();
}

#[tokio::test]
async fn without_a_grant_there_is_no_filesystem() {
    let fixture = Fixture::default_caps();
    let handler = fixture.load(guests::SCRATCH_PEEK).await;
    let outcome = fixture
        .run(&handler, &json!({"mode": "return"}), HandlerLimits::DEFAULT)
        .await;
    let failure = outcome.result.as_ref().expect_err("no scratch");
    assert_eq!(failure.error_type, ErrorType::GuestError, "{failure}");
    assert!(
        failure.message.contains("no scratch directory"),
        "{failure}"
    );
    fixture.assert_untouched();

    // A sandbox with no scratch area fails a job that asks for one, retryably.
    let bare = Sandbox::new(EngineConfig {
        concurrency: 1,
        max_memory_bytes: 64 << 20,
        pooling: false,
    })
    .expect("sandbox");
    let handler = bare
        .load(
            Arc::from(std::fs::read(guests::SCRATCH_PEEK).expect("guest")),
            Duration::from_secs(60),
        )
        .await
        .expect("loads");
    let job = Job::json("scratch", &json!({"mode": "return"})).expect("job");
    let outcome = bare
        .run(&handler, &job, scratch(1 << 20, 10), JobControl::default())
        .await;
    let failure = outcome.result.expect_err("no area");
    assert_eq!(failure.error_type, ErrorType::Internal, "{failure}");
    assert!(failure.retryable);
}

/// The tar example through a worker: deployed with a scratch directory, it returns
/// an archive with the files; the receipt records the scratch it used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tar_example_builds_an_archive_in_scratch() {
    let server = NatsServer::start();
    let client = jobbox::Client::connect(&server.url())
        .await
        .expect("connect");
    let options = DeployOptions {
        limits: HandlerLimits {
            scratch_bytes: 1 << 20,
            scratch_files: 16,
            ..HandlerLimits::DEFAULT
        },
        ..DeployOptions::default()
    };
    deploy_guest_with(&client, "tar", guests::TAR, options).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = jobbox_host::worker::WorkerConfig::new(vec!["default".into()]);
    config.scratch_dir = Some(tmp.path().to_path_buf());
    let worker = RunningWorker::start(&server.url(), config).await;
    let job = Job::json(
        "tar",
        &json!({"files": {"a.txt": "hello", "b.txt": "world!"}}),
    )
    .expect("job");
    client.enqueue(&job).await.expect("enqueue");
    let result = wait_result(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    let tar = result.result.clone().expect("output");
    assert_eq!(tar.len(), 4 * 512 + 2 * 512);
    assert_eq!(&tar[..5], b"a.txt");
    assert_eq!(&tar[257..262], b"ustar");
    assert_eq!(&tar[512..517], b"hello");
    assert_eq!(&tar[1024..1029], b"b.txt");
    assert_eq!(&tar[1536..1542], b"world!");
    // Two inputs, a directory and the archive: four entries; bytes include the
    // directory's 4 KiB.
    assert_eq!(result.usage.scratch_files, 4, "{:?}", result.usage);
    assert!(
        result.usage.peak_scratch_bytes >= 4096 + 11 + 3072,
        "{:?}",
        result.usage
    );
    worker.stop().await;
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("list").collect();
    assert!(
        left.is_empty(),
        "a stopped worker leaves its scratch root empty: {left:?}"
    );
}

/// A worker shut down while a job spins with files in its scratch directory: the job
/// is abandoned (and handed back), its directory and the worker's are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shut_down_mid_job_leaves_no_scratch() {
    let server = NatsServer::start();
    let client = jobbox::Client::connect(&server.url())
        .await
        .expect("connect");
    let options = DeployOptions {
        limits: scratch(1 << 20, 10),
        ..DeployOptions::default()
    };
    deploy_guest_with(&client, "peek", guests::SCRATCH_PEEK, options).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = jobbox_host::worker::WorkerConfig::new(vec!["shutdown".into()]);
    config.scratch_dir = Some(tmp.path().to_path_buf());
    config.shutdown_grace = Duration::from_millis(200);
    let worker = RunningWorker::start(&server.url(), config).await;
    let job = Job::json("peek", &json!({"mode": "spin"}))
        .expect("job")
        .queue("shutdown");
    client.enqueue(&job).await.expect("enqueue");
    let worker_dir = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let workers: Vec<PathBuf> = std::fs::read_dir(tmp.path())
                .expect("list")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.is_dir())
                .collect();
            if let Some(dir) = workers.into_iter().next()
                && std::fs::read_dir(&dir).expect("list").next().is_some()
            {
                marked_job_dir(&dir).await;
                return dir;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the job starts and writes its marker");
    worker.stop().await;
    assert!(
        !worker_dir.exists(),
        "the worker's scratch is removed at shutdown"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("list").collect();
    assert!(left.is_empty(), "{left:?}");
}
