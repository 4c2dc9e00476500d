//! Sandbox overhead per job: a fresh store and instance, the call, teardown — as a
//! whole (the figure the performance budget names) and each part on its own.
//!
//! Run with: `cargo bench -p jobbox-tests --bench sandbox`
//!
//! The parts are the stages [`Sandbox::run`] is built from: `instantiate` is
//! [`Sandbox::prepare`] plus [`JobRun::instantiate`], `call` is [`JobRun::call`] on a
//! live instance, `teardown` is [`JobRun::finish`] (the receipt and the store's drop,
//! which resets the pool slot). Each part is timed alone; the stages around it run
//! untimed, so every iteration still uses a fresh store, as a job does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use jobbox::{HandlerLimits, Job};
use jobbox_host::sandbox::{EngineConfig, Handler, JobControl, JobRun, Sandbox};
use jobbox_tests::guests;

/// The stage a part bench times.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Instantiate,
    Call,
    Teardown,
}

impl Part {
    const ALL: [Self; 3] = [Self::Instantiate, Self::Call, Self::Teardown];

    fn name(self) -> &'static str {
        match self {
            Self::Instantiate => "instantiate",
            Self::Call => "call",
            Self::Teardown => "teardown",
        }
    }
}

/// What every bench shares: the sandbox, the loaded echo handler and one job.
struct Fixture {
    sandbox: Sandbox,
    echo: Handler,
    job: Job,
    limits: HandlerLimits,
}

impl Fixture {
    async fn instantiated(&self) -> JobRun {
        let mut run = self.sandbox.prepare(self.limits, JobControl::default());
        assert!(run.instantiate(&self.echo).await, "echo instantiates");
        run
    }

    /// Runs `iters` jobs stage by stage and returns the time spent in `part`.
    async fn time_part(&self, part: Part, iters: u64) -> Duration {
        let mut spent = Duration::ZERO;
        for _ in 0..iters {
            let clock = Instant::now();
            let mut run = self.instantiated().await;
            if part == Part::Instantiate {
                spent += clock.elapsed();
            }
            let clock = Instant::now();
            run.call(&self.job).await;
            if part == Part::Call {
                spent += clock.elapsed();
            }
            let clock = Instant::now();
            let outcome = run.finish();
            if part == Part::Teardown {
                spent += clock.elapsed();
            }
            assert!(outcome.result.is_ok());
        }
        spent
    }
}

fn one_job(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let sandbox = Sandbox::new(EngineConfig {
        concurrency: 1,
        max_memory_bytes: 64 * 1024 * 1024,
        pooling: true,
    })
    .expect("sandbox");
    let bytes = std::fs::read(guests::ECHO).expect("echo is built");
    let echo = runtime
        .block_on(sandbox.load(Arc::from(bytes), Duration::from_secs(60)))
        .expect("echo loads");
    let fixture = Fixture {
        sandbox,
        echo,
        job: Job::new("echo", br#"{"hello":"world"}"#.to_vec()),
        limits: HandlerLimits::default(),
    };

    c.bench_function("echo job (fresh instance + call + teardown)", |b| {
        b.to_async(&runtime).iter(|| async {
            let outcome = fixture
                .sandbox
                .run(
                    &fixture.echo,
                    &fixture.job,
                    fixture.limits,
                    JobControl::default(),
                )
                .await;
            assert!(outcome.result.is_ok());
        });
    });

    let mut parts = c.benchmark_group("echo job part");
    for part in Part::ALL {
        parts.bench_function(part.name(), |b| {
            b.to_async(&runtime)
                .iter_custom(|iters| fixture.time_part(part, iters));
        });
    }
    parts.finish();
}

criterion_group!(benches, one_job);
criterion_main!(benches);
