//! A small OTLP/HTTP trace receiver: accepts `POST /v1/traces` (protobuf), decodes
//! each request with `opentelemetry-proto` and keeps the spans (or only counts them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

pub use opentelemetry_proto::tonic::trace::v1 as proto;

#[derive(Debug, Default)]
struct Received {
    keep: bool,
    spans: Mutex<Vec<Span>>,
    count: AtomicU64,
    requests: AtomicU64,
}

/// A running receiver on 127.0.0.1; stopped when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Received>,
    stop: CancellationToken,
}

impl OtlpReceiver {
    /// Starts a receiver that keeps every span.
    pub async fn start() -> Self {
        Self::start_with(true).await
    }

    /// Starts a receiver that decodes and counts spans, then drops them.
    pub async fn start_discarding() -> Self {
        Self::start_with(false).await
    }

    async fn start_with(keep: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let received = Arc::new(Received {
            keep,
            ..Received::default()
        });
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .with_state(Arc::clone(&received));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
        });
        Self {
            addr,
            received,
            stop,
        }
    }

    /// The base URL to give a worker (`--otlp-endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans received so far (empty for a discarding receiver).
    pub fn spans(&self) -> Vec<Span> {
        self.received
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Spans received so far.
    pub fn span_count(&self) -> u64 {
        self.received.count.load(Ordering::Relaxed)
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        self.received.requests.load(Ordering::Relaxed)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn traces(State(received): State<Arc<Received>>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    received.requests.fetch_add(1, Ordering::Relaxed);
    let spans = request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans);
    if received.keep {
        let mut kept = received
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = kept.len();
        kept.extend(spans);
        received
            .count
            .fetch_add((kept.len() - before) as u64, Ordering::Relaxed);
    } else {
        received
            .count
            .fetch_add(spans.count() as u64, Ordering::Relaxed);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// A span attribute's value as text (strings as they are, integers in decimal).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    text(value)
}

fn text(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(n) => Some(n.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}
