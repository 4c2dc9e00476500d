//! `jobbox dashboard` in headless Chromium: the page against `jobbox stats` with jobs
//! running, a click through to one job's trail, tenant markup shown as text, actions
//! that need the token, and the README's screenshot.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use jobbox::{Client, Job, JobStatus};
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
