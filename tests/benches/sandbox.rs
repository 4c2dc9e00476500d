//! Sandbox overhead per job: a fresh store and instance, the call, teardown.
//!
//! Run with: `cargo bench -p jobbox-tests --bench sandbox`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jobbox::{HandlerLimits, Job};
use jobbox_host::sandbox::{EngineConfig, JobControl, Sandbox};
use jobbox_tests::guests;

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
    let job = Job::new("echo", br#"{"hello":"world"}"#.to_vec());
    let limits = HandlerLimits::default();

    c.bench_function("echo job (fresh instance + call + teardown)", |b| {
        b.to_async(&runtime).iter(|| async {
            let outcome = sandbox
                .run(&echo, &job, limits, JobControl::default())
                .await;
            assert!(outcome.result.is_ok());
        });
    });
}

criterion_group!(benches, one_job);
criterion_main!(benches);
