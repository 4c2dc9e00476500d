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
