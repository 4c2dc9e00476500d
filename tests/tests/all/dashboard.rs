//! `jobbox dashboard` in headless Chromium: the page against `jobbox stats` with jobs
//! running, a click through to one job's trail, tenant markup shown as text, actions
//! that need the token, and the README's screenshot.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use jobbox::{BatchSpec, BatchStatus, CallbackKind, Client, Job, JobStatus};
use jobbox_host::dashboard::{Dashboard, Token};
use jobbox_tests::chromium::{Browser, chromium_bin};
use jobbox_tests::http::request;
use jobbox_tests::{
    NatsServer, RunningWorker, brief, deploy_guest, free_port, guests, jobbox_bin, wait_result,
    wait_settled,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "web";
const TOKEN: &str = "test-token-0123456789";
/// Tenant markup: if any of it ran, `window.__pwned` would be set.
const HOSTILE: &str =
    "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\"><b>bold</b>";

/// `jobbox stats -o json` for `QUEUE`.
fn cli_stats(url: &str) -> Value {
    let output = Command::new(jobbox_bin())
        .args(["stats", "-o", "json", "--nats-url", url])
        .output()
        .expect("run jobbox stats");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let all: Value = serde_json::from_slice(&output.stdout).expect("stats are JSON");
    all.as_array()
        .and_then(|queues| queues.iter().find(|q| q["queue"] == QUEUE).cloned())
        .unwrap_or_else(|| panic!("no {QUEUE} in {all}"))
}

/// A dashboard on a free port with token [`TOKEN`]: its address, the token that stops
/// it and its task.
async fn start_dashboard(
    client: &Client,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let stop = CancellationToken::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let dashboard = Dashboard::bind(
        client.clone(),
        addr.parse().expect("address"),
        Token::new(TOKEN).expect("token"),
    )
    .await
    .expect("dashboard binds");
    let serving = tokio::spawn(dashboard.serve(stop.clone()));
    (addr, stop, serving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_jobbox_stats_says_and_escapes_tenant_text() {
    let Some(chromium) = chromium_bin() else {
        eprintln!(
            "SKIPPED: no chromium on the PATH (install Debian's `chromium`, or set CHROMIUM_BIN)"
        );
        return;
    };
    let server = NatsServer::start();
    let url = server.url();
    let client = Client::connect(&url).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "log-echo", guests::LOG_ECHO).await;
    deploy_guest(&client, "reject", guests::REJECT).await;
    deploy_guest(&client, "retry", guests::RETRY).await;
    let worker = RunningWorker::on(&url, &[QUEUE], 2).await;
    let (addr, stop, serving) = start_dashboard(&client).await;

    // Known jobs before the page opens: completions, rejections, one dead letter.
    let mut first = Vec::new();
    for i in 0..6 {
        first.push(
            Job::json("echo", &json!({ "i": i }))
                .expect("json")
                .queue(QUEUE),
        );
    }
    for _ in 0..2 {
        first.push(Job::json("reject", &json!({})).expect("json").queue(QUEUE));
    }
    first.push(
        Job::json("retry", &json!({}))
            .expect("json")
            .queue(QUEUE)
            .max_retries(0),
    );
    for job in &first {
        client.enqueue(job).await.expect("enqueue");
    }
    for job in &first {
        wait_result(&client, &job.id, Duration::from_secs(30)).await;
    }

    // The page opens while more jobs keep coming, among them one whose payload (so
    // its output, logs and progress message) is markup.
    let hostile = Job::new("log-echo", HOSTILE.as_bytes().to_vec()).queue(QUEUE);
    let hostile_id = hostile.id.clone();
    let page = format!("http://{addr}/");
    let browser = tokio::task::spawn_blocking({
        let page = page.clone();
        move || {
            let mut browser = Browser::start(&chromium, 1280, 900);
            browser.navigate(&page);
            browser.wait_for(
                "document.body.dataset.loaded === 'queues' && document.querySelector('#live-state').textContent === 'live'",
                Duration::from_secs(20),
                "document.body.outerHTML.slice(0, 2000)",
            );
            browser
        }
    })
    .await
    .expect("browser starts");
    let mut running = Vec::new();
    for i in 0..20 {
        let job = Job::json("echo", &json!({ "later": i }))
            .expect("json")
            .queue(QUEUE);
        client.enqueue(&job).await.expect("enqueue");
        running.push(job);
        if i == 10 {
            client.enqueue(&hostile).await.expect("enqueue");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for job in &running {
        let result = wait_result(&client, &job.id, Duration::from_secs(30)).await;
        assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    }
    let result = wait_result(&client, &hostile_id, Duration::from_secs(30)).await;
    assert_eq!(result.status, JobStatus::Completed, "{}", brief(&result));
    wait_settled(&client, QUEUE, Duration::from_secs(30)).await;

    // `jobbox stats` once the worker's counters are flushed (every 500 ms).
    let stats = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..100 {
                let stats = cli_stats(&url);
                if stats["completed"] == 27 && stats["dead_letter"] == 1 {
                    return stats;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("stats never reached the jobs run: {}", cli_stats(&url));
        })
        .await
        .expect("stats")
    };
    assert_eq!(stats["failed"], 2, "{stats}");

    let addr_for_browser = addr.clone();
    let hostile_for_browser = hostile_id.clone();
    let screenshot = tokio::task::spawn_blocking(move || {
        let mut browser = browser;
        // The queues page shows what `jobbox stats` says (it refreshes on events and
        // every 5 s).
        let cell = |field: &str| {
            format!("document.querySelector('tr[data-queue=\"{QUEUE}\"] td[data-field=\"{field}\"]')?.textContent")
        };
        browser.wait_for(
            &format!("{} === '{}'", cell("completed"), stats["completed"]),
            Duration::from_secs(15),
            &cell("completed"),
        );
        for field in ["pending", "running", "completed", "failed", "dead_letter"] {
            assert_eq!(
                browser.eval(&cell(field)),
                json!(stats[field].to_string()),
                "{field}: page vs jobbox stats {stats}"
            );
        }
        // The live feed listed the jobs as they ran; click through to the hostile one.
        let link = format!("document.querySelector('#live-feed a.job-link[data-job=\"{hostile_for_browser}\"]')");
        browser.wait_for(&link, Duration::from_secs(10), "document.querySelector('#live-feed').textContent.slice(0, 500)");
        browser.eval(&format!("{link}.click()"));
        browser.wait_for(
            "document.body.dataset.loaded === 'job' && document.querySelector('#job-summary [data-field=status]').textContent === 'COMPLETED'",
            Duration::from_secs(15),
            "document.querySelector('#page-job').textContent.slice(0, 1000)",
        );
        let trail = browser.eval("[...document.querySelectorAll('#job-trail li')].map(li => li.dataset.event)");
        let trail: Vec<&str> = trail.as_array().expect("array").iter().filter_map(Value::as_str).collect();
        for event in ["ENQUEUED", "STARTED", "PROGRESS", "COMPLETED"] {
            assert!(trail.contains(&event), "trail {trail:?} lacks {event}");
        }
        // Markup from the job is text: in the output, the logs and the progress.
        for place in ["#job-output", "#job-logs", "#job-progress"] {
            let shown = browser.eval(&format!("document.querySelector('{place}').textContent"));
            assert!(shown.as_str().is_some_and(|s| s.contains(HOSTILE)), "{place} shows {shown}");
        }
        assert_eq!(browser.eval("document.querySelectorAll('script').length"), json!(1));
        assert_eq!(browser.eval("document.querySelectorAll('img, b').length"), json!(0));
        assert_eq!(browser.eval("typeof window.__pwned"), json!("undefined"));

        // Actions need the token: without it the page says so and nothing changes.
        browser.navigate(&format!("http://{addr_for_browser}/#dlq"));
        browser.wait_for(
            "document.body.dataset.loaded === 'dlq' && document.querySelectorAll('#dlq-table tbody tr').length === 1",
            Duration::from_secs(15),
            "document.querySelector('#page-dlq').textContent",
        );
        browser.eval("document.querySelector('button.replay').click()");
        browser.wait_for(
            "document.querySelector('#notice').textContent.includes('needs the dashboard token')",
            Duration::from_secs(10),
            "document.querySelector('#notice').textContent",
        );
        browser.eval(&format!("document.querySelector('#token').value = '{TOKEN}'"));
        browser.eval("document.querySelector('button.replay').click()");
        browser.wait_for(
            "document.querySelector('#notice').textContent.startsWith('replayed ')",
            Duration::from_secs(10),
            "document.querySelector('#notice').textContent",
        );

        browser.navigate(&format!("http://{addr_for_browser}/#queues"));
        browser.wait_for(
            "document.body.dataset.loaded === 'queues' && document.querySelectorAll('#live-feed li').length > 0",
            Duration::from_secs(15),
            "document.body.dataset.loaded",
        );
        browser.screenshot()
    })
    .await
    .expect("browser session");
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG");

    // The same actions over plain HTTP: no token or a wrong one is refused.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong-token-0123456789")],
    ] {
        let response = request(
            &addr,
            "POST",
            &format!("/api/jobs/{hostile_id}/cancel"),
            &headers,
            "",
        );
        assert_eq!(response.status, 401, "{}", response.body);
        let response = request(&addr, "POST", "/api/handlers/echo/rollback", &headers, "");
        assert_eq!(response.status, 401, "{}", response.body);
    }
    let response = request(&addr, "GET", "/api/jobs/..%2Fnot%20an%20id", &[], "");
    assert_eq!(response.status, 400, "{}", response.body);

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &screenshot).expect("write the screenshot");
    if std::env::var_os("JOBBOX_UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::write(&docs, &screenshot).expect("write docs/dashboard.png");
    }
    stop.cancel();
    serving
        .await
        .expect("dashboard joins")
        .expect("dashboard ends cleanly");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batches_page_shows_what_jobbox_batch_status_says_and_cancels_with_the_token() {
    let Some(chromium) = chromium_bin() else {
        eprintln!(
            "SKIPPED: no chromium on the PATH (install Debian's `chromium`, or set CHROMIUM_BIN)"
        );
        return;
    };
    let server = NatsServer::start();
    let url = server.url();
    let client = Client::connect(&url).await.expect("connect");
    deploy_guest(&client, "echo", guests::ECHO).await;
    deploy_guest(&client, "reject", guests::REJECT).await;
    let worker = RunningWorker::on(&url, &[QUEUE], 2).await;

    // An ended batch named with markup: 17 completions, 3 rejections, a callback.
    let mut jobs = Vec::new();
    for i in 0..20 {
        let job_type = if i % 7 == 3 { "reject" } else { "echo" };
        jobs.push(
            Job::json(job_type, &json!({ "i": i }))
                .expect("json")
                .queue(QUEUE)
                .max_retries(0),
        );
    }
    let on_complete = Job::json("echo", &json!({})).expect("json").queue(QUEUE);
    let ended = client
        .submit_batch(BatchSpec::new(HOSTILE, jobs).on_complete(on_complete))
        .await
        .expect("enqueue the batch")
        .batch_id;
    let ended_record = client
        .wait_batch(&ended, Duration::from_secs(60))
        .await
        .expect("the batch ends");
    assert_eq!(ended_record.status, BatchStatus::Failed);
    let status = cli_batch_status(&url, &ended);
    assert_eq!(status["completed"], 17, "{status}");
    assert_eq!(status["failed"], 3, "{status}");

    // A batch on a queue no worker takes yet: it stays RUNNING until cancelled.
    let parked: Vec<Job> = (0..5)
        .map(|i| {
            Job::json("echo", &json!({ "parked": i }))
                .expect("json")
                .queue("parked")
        })
        .collect();
    let waiting = client
        .enqueue_batch("parked", parked)
        .await
        .expect("enqueue the parked batch")
        .batch_id;

    let (addr, stop, serving) = start_dashboard(&client).await;
    let page = format!("http://{addr}/#batches");
    let (ended_id, waiting_id, addr_for_browser) = (ended.clone(), waiting.clone(), addr.clone());
    let browser = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::start(&chromium, 1280, 900);
        browser.navigate(&page);
        browser.wait_for(
            "document.body.dataset.loaded === 'batches' && document.querySelectorAll('#batches-table tbody tr').length === 2",
            Duration::from_secs(20),
            "document.querySelector('#page-batches').textContent",
        );
        // The list: the active batch first, then the ended one, with its counts and
        // its name shown as text.
        assert_eq!(
            browser.eval("[...document.querySelectorAll('#batches-table tbody tr')].map(tr => tr.dataset.batch)"),
            json!([waiting_id, ended_id])
        );
        let cell = |field: &str| {
            format!("document.querySelector('tr[data-batch=\"{ended_id}\"] td[data-field=\"{field}\"]').textContent")
        };
        for (field, shown) in [
            ("status", "FAILED"),
            ("jobs", "20"),
            ("completed", "17"),
            ("failed", "3"),
            ("dead_letter", "0"),
            ("cancelled", "0"),
            ("progress", " 100%"),
            ("name", HOSTILE),
        ] {
            assert_eq!(browser.eval(&cell(field)), json!(shown), "{field}");
        }
        assert_eq!(browser.eval("document.querySelectorAll('img, b, script').length"), json!(1));
        assert_eq!(browser.eval("typeof window.__pwned"), json!("undefined"));

        // Through to the ended batch: each job's result and the callback.
        browser.eval(&format!("document.querySelector('a.batch-link[data-batch=\"{ended_id}\"]').click()"));
        browser.wait_for(
            "document.body.dataset.loaded === 'batch' && document.querySelectorAll('#batch-jobs tbody tr').length === 20",
            Duration::from_secs(15),
            "document.querySelector('#page-batch').textContent",
        );
        let statuses = browser.eval("[...document.querySelectorAll('#batch-jobs td[data-field=status]')].map(td => td.textContent)");
        let failed = statuses.as_array().expect("a list").iter().filter(|s| *s == "FAILED").count();
        assert_eq!(failed, 3, "{statuses}");
        assert_eq!(
            browser.eval("document.querySelector('#batch-callbacks li[data-callback=on_complete] a').dataset.job"),
            json!(jobbox::callback_job_id(&ended_id, CallbackKind::OnComplete))
        );
        assert_eq!(browser.eval("document.querySelector('#batch-cancel').disabled"), json!(true));

        // Cancel needs the token.
        browser.navigate(&format!("http://{addr_for_browser}/#batch/{waiting_id}"));
        browser.wait_for(
            "document.body.dataset.loaded === 'batch' && document.querySelector('#batch-summary [data-field=status]').textContent === 'RUNNING'",
            Duration::from_secs(15),
            "document.querySelector('#page-batch').textContent",
        );
        browser.eval("document.querySelector('#batch-cancel').click()");
        browser.wait_for(
            "document.querySelector('#notice').textContent.includes('needs the dashboard token')",
            Duration::from_secs(10),
            "document.querySelector('#notice').textContent",
        );
        browser.eval(&format!("document.querySelector('#token').value = '{TOKEN}'"));
        browser.eval("document.querySelector('#batch-cancel').click()");
        browser.wait_for(
            "document.querySelector('#notice').textContent === 'cancel batch: cancelling'",
            Duration::from_secs(10),
            "document.querySelector('#notice').textContent",
        );
        browser
    })
    .await
    .expect("browser session");

    // A worker on the parked queue records the cancelled jobs; the batch ends
    // CANCELLED, and the page (refreshed by the live events) says so.
    let parked_worker = RunningWorker::on(&url, &["parked"], 2).await;
    let cancelled = client
        .wait_batch(&waiting, Duration::from_secs(60))
        .await
        .expect("the cancelled batch ends");
    assert_eq!(cancelled.status, BatchStatus::Cancelled);
    assert_eq!(cancelled.counts.cancelled, 5, "{cancelled:?}");
    tokio::task::spawn_blocking(move || {
        let mut browser = browser;
        browser.wait_for(
            "document.querySelector('#batch-summary [data-field=status]').textContent === 'CANCELLED' && document.querySelector('#batch-summary [data-field=cancelled]').textContent === '5'",
            Duration::from_secs(15),
            "document.querySelector('#batch-summary').textContent",
        );
    })
    .await
    .expect("the page shows the cancelled batch");

    // The same action over plain HTTP without the token, and a bad id.
    let response = request(
        &addr,
        "POST",
        &format!("/api/batches/{ended}/cancel"),
        &[],
        "",
    );
    assert_eq!(response.status, 401, "{}", response.body);
    let response = request(&addr, "GET", "/api/batches/a%20b", &[], "");
    assert_eq!(response.status, 400, "{}", response.body);
    let response = request(&addr, "GET", "/api/batches/no-such-batch", &[], "");
    assert_eq!(response.status, 404, "{}", response.body);

    stop.cancel();
    serving
        .await
        .expect("dashboard joins")
        .expect("dashboard ends cleanly");
    parked_worker.stop().await;
    worker.stop().await;
}

/// `jobbox batch status <id> -o json`.
fn cli_batch_status(url: &str, batch_id: &str) -> Value {
    let output = Command::new(jobbox_bin())
        .args(["batch", "status", batch_id, "-o", "json", "--nats-url", url])
        .output()
        .expect("run jobbox batch status");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("batch status is JSON")
}
