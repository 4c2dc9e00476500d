//! Turning a wasmtime error into a classified [`Failure`].

use jobbox::ErrorType;
use wasmtime::Trap;

use super::outcome::Failure;
use super::state::{Interruption, MemoryLimitExceeded};

/// Classifies an error raised while instantiating or calling a handler.
///
/// `interrupted` says why the epoch callback stopped the guest, if it did;
/// `stderr` is what the guest printed, used to explain panics.
pub fn classify(
    error: &wasmtime::Error,
    interrupted: Option<Interruption>,
    stderr: &[u8],
) -> Failure {
    let detail = Some(detail_text(error, stderr));
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Failure::new(ErrorType::MemoryLimit, limit.to_string()).with_detail(detail);
    }
    let Some(trap) = error.downcast_ref::<Trap>() else {
        return Failure::new(ErrorType::Trap, cause_first(error))
            .with_trap_code("host")
            .with_detail(detail);
    };
    match trap {
        Trap::OutOfFuel => Failure::new(ErrorType::OutOfFuel, "the handler ran out of fuel"),
        Trap::Interrupt => match interrupted {
            Some(Interruption::Cancelled) => {
                Failure::new(ErrorType::Cancelled, "the job was cancelled while running")
            }
            _ => Failure::new(ErrorType::Timeout, "the handler ran past its deadline"),
        },
        Trap::StackOverflow => Failure::new(
            ErrorType::StackOverflow,
            "the handler exhausted its wasm stack",
        )
        .with_detail(detail),
        other => {
            let message = panic_message(stderr).map_or_else(
                || other.to_string(),
                |panic| format!("guest panicked: {panic}"),
            );
            Failure::new(ErrorType::Trap, message)
                .with_trap_code(trap_code(*other))
                .with_detail(detail)
        }
    }
}

/// The error's causes without the wasm backtrace (which stays in the detail), so
/// the message says what went wrong first: `too much data…`, not `error while
/// executing at wasm backtrace: 0: 0x2f784e …`.
fn cause_first(error: &wasmtime::Error) -> String {
    const BACKTRACE: &str = "error while executing at wasm backtrace";
    let message = crate::causes::one_line(
        error
            .chain()
            .map(ToString::to_string)
            .filter(|text| !text.trim_start().starts_with(BACKTRACE)),
    );
    if message.is_empty() {
        format!("{error}")
    } else {
        message
    }
}

/// A stable snake_case name for a trap code.
pub fn trap_code(trap: Trap) -> String {
    let name = format!("{trap:?}");
    let mut code = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                code.push('_');
            }
            code.push(c.to_ascii_lowercase());
        } else {
            code.push(c);
        }
    }
    code
}

/// The first line of a Rust panic message in the guest's stderr, if there is one.
fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let start = text.find("panicked at")?;
    let rest = &text[start..];
    // "panicked at src/lib.rs:3:5:\nthe message"
    let mut lines = rest.lines();
    let location = lines.next().unwrap_or_default().trim_end_matches(':');
    let message = lines.next().unwrap_or_default();
    Some(format!("{message} ({location})").trim().to_string())
}

/// The error chain with its wasm backtrace, then the tail of stderr.
fn detail_text(error: &wasmtime::Error, stderr: &[u8]) -> String {
    const STDERR_TAIL: usize = 2048;
    let mut detail = format!("{error:?}");
    if !stderr.is_empty() {
        let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL)..];
        detail.push_str("\n--- stderr (tail) ---\n");
        detail.push_str(&String::from_utf8_lossy(tail));
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_codes_are_snake_case() {
        assert_eq!(
            trap_code(Trap::UnreachableCodeReached),
            "unreachable_code_reached"
        );
        assert_eq!(trap_code(Trap::MemoryOutOfBounds), "memory_out_of_bounds");
    }

    #[test]
    fn panic_messages_are_extracted() {
        let stderr = b"\nthread '<unnamed>' panicked at src/lib.rs:7:5:\nboom\nnote: run with";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("boom (panicked at src/lib.rs:7:5)")
        );
        assert_eq!(panic_message(b"nothing here"), None);
    }

    #[test]
    fn interrupts_are_timeouts_unless_cancelled() {
        let error = wasmtime::Error::new(Trap::Interrupt);
        assert_eq!(
            classify(&error, Some(Interruption::Deadline), b"").error_type,
            ErrorType::Timeout
        );
        assert_eq!(
            classify(&error, Some(Interruption::Cancelled), b"").error_type,
            ErrorType::Cancelled
        );
    }
}
