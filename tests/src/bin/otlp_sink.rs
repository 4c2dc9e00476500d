//! An OTLP/HTTP trace receiver that decodes and counts spans, then drops them: a
//! collector for `jobbox bench --otlp-endpoint`.
//!
//! Run with `cargo run --release -p jobbox-tests --bin otlp-sink`; it prints its
//! endpoint, then the spans received every 5 s, until Ctrl-C.

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let receiver = jobbox_tests::otlp::OtlpReceiver::start_discarding().await;
    println!("{}", receiver.endpoint());
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => eprintln!("spans {} requests {}", receiver.span_count(), receiver.requests()),
        }
    }
}
