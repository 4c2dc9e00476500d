//! Human-readable formatting shared by the commands.

use jobbox::{LogEntry, Usage};

/// Bytes as a short human-readable size, e.g. `1.5 MiB`.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// A duration in microseconds as a short human-readable string.
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    }
}

/// The resource receipt on one line.
pub fn usage(usage: &Usage) -> String {
    format!(
        "fuel {} · peak memory {} · wall {} · output {} · logs {}",
        usage.fuel_consumed,
        size(usage.peak_memory_bytes),
        micros(usage.wall_time_us),
        size(usage.output_bytes),
        size(usage.log_bytes),
    ) + &scratch(usage)
}

/// The scratch part of a receipt, empty for a job that wrote no scratch.
fn scratch(usage: &Usage) -> String {
    if usage.peak_scratch_bytes == 0 && usage.scratch_files == 0 {
        return String::new();
    }
    format!(
        " · scratch {} in {} files",
        size(usage.peak_scratch_bytes),
        usage.scratch_files
    )
}

/// One log line: time, level, message.
pub fn log_line(entry: &LogEntry) -> String {
    format!(
        "{} {:<5} {}",
        entry.timestamp.format("%H:%M:%S%.3f"),
        format!("{:?}", entry.level).to_lowercase(),
        entry.message
    )
}

/// A job's output as a JSON value, decoded as its result's `content_type` says:
/// MessagePack (`application/msgpack`, `application/x-msgpack`) or JSON
/// (`application/json`, `…+json`, and results that name no type); `None` for other
/// types and for bytes that do not decode.
pub fn output_value(bytes: &[u8], content_type: Option<&str>) -> Option<serde_json::Value> {
    if content_type.is_some_and(is_msgpack) {
        return rmp_serde::from_slice(bytes).ok();
    }
    let essence = content_type.map(jobbox::media_type::essence);
    match essence.as_deref() {
        None | Some("application/json") => serde_json::from_slice(bytes).ok(),
        Some(other) if other.ends_with("+json") => serde_json::from_slice(bytes).ok(),
        Some(_) => None,
    }
}

/// Whether `content_type` names MessagePack.
pub fn is_msgpack(content_type: &str) -> bool {
    matches!(
        jobbox::media_type::essence(content_type).as_str(),
        "application/msgpack" | "application/x-msgpack"
    )
}

/// Output bytes for a terminal: UTF-8 as is, anything else as a hex preview.
pub fn payload(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => {
            let preview: String = bytes.iter().take(64).map(|b| format!("{b:02x}")).collect();
            format!("<{} binary bytes: {preview}…>", bytes.len())
        }
    }
}
