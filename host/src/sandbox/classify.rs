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
            let message = stderr_reason(stderr).unwrap_or_else(|| other.to_string());
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

/// Longest reason taken from a guest's stderr into a failure's message, in bytes.
///
/// A guest writes what it likes to stderr; the message is one line that says why.
const MAX_REASON_BYTES: usize = 1024;

/// Why the guest trapped, as its stderr tells: an uncaught Python or JavaScript
/// exception (`uncaught exception: ValueError: boom`), else a Rust panic (`guest
/// panicked: boom (panicked at src/lib.rs:3:5)`).
///
/// The interpreters' runtimes are written in Rust and panic after printing the
/// exception ("Python function threw an unexpected exception"): the exception, which
/// names the handler's own error, wins.
fn stderr_reason(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let reason = python_exception(&text)
        .or_else(|| js_exception(&text))
        .map(|exception| format!("uncaught exception: {exception}"))
        .or_else(|| panic_message(&text).map(|panic| format!("guest panicked: {panic}")))?;
    Some(super::host_api::cut_to(reason, MAX_REASON_BYTES))
}

/// The exception line of the last Python traceback (`ValueError: boom`): the first
/// line after `Traceback (most recent call last):` that is not indented (frames,
/// source lines and `[Previous line repeated …]` are).
fn python_exception(text: &str) -> Option<&str> {
    const HEADER: &str = "Traceback (most recent call last):";
    let start = text.rfind(HEADER)? + HEADER.len();
    text[start..]
        .lines()
        .skip(1)
        .find(|line| !line.is_empty() && !line.starts_with(char::is_whitespace))
        .map(str::trim_end)
}

/// What a JavaScript handler threw, as componentize-js reports a thrown value that is
/// not a `handler-error`: ``invalid variant tag value `undefined` (received
/// `TypeError: boom`) specified for `HandlerError` `` gives `TypeError: boom`.
fn js_exception(text: &str) -> Option<&str> {
    const BEFORE: &str = "invalid variant tag value `";
    const RECEIVED: &str = "(received `";
    const AFTER: &str = "`) specified for `";
    let line = text.lines().find(|line| line.starts_with(BEFORE))?;
    let start = line.find(RECEIVED)? + RECEIVED.len();
    let end = line.rfind(AFTER)?;
    line.get(start..end).filter(|thrown| !thrown.is_empty())
}

/// The first line of a Rust panic message in the guest's stderr, if there is one.
fn panic_message(text: &str) -> Option<String> {
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
            stderr_reason(stderr).as_deref(),
            Some("guest panicked: boom (panicked at src/lib.rs:7:5)")
        );
        assert_eq!(stderr_reason(b"nothing here"), None);
    }

    /// What componentize-py 0.25 prints for an exception a handler does not catch.
    const PYTHON_STDERR: &str = "Traceback (most recent call last):\n  \
        File \"/0/app.py\", line 14, in handle\n    raise ValueError(\"boom\")\n\
        ValueError: boom\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\n\
        Python function threw an unexpected exception\n\
        note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";

    #[test]
    fn python_exceptions_win_over_the_runtimes_panic() {
        assert_eq!(
            stderr_reason(PYTHON_STDERR.as_bytes()).as_deref(),
            Some("uncaught exception: ValueError: boom")
        );
        // Deep recursion: repeated frames, then the exception.
        let recursion = "Traceback (most recent call last):\n  File \"/0/app.py\", line 21, in f\n  \
            [Previous line repeated 996 more times]\nRecursionError: maximum recursion depth exceeded\n";
        assert_eq!(
            stderr_reason(recursion.as_bytes()).as_deref(),
            Some("uncaught exception: RecursionError: maximum recursion depth exceeded")
        );
        // Chained exceptions: the last traceback is the one that escaped.
        let chained = "Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'x'\n\n\
            During handling of the above exception, another exception occurred:\n\n\
            Traceback (most recent call last):\n  File \"a.py\", line 3\nTypeError: bad\n";
        assert_eq!(
            stderr_reason(chained.as_bytes()).as_deref(),
            Some("uncaught exception: TypeError: bad")
        );
        // A header with nothing after it says nothing.
        assert_eq!(
            python_exception("Traceback (most recent call last):\n  File"),
            None
        );
    }

    #[test]
    fn javascript_exceptions_are_extracted() {
        let stderr = "invalid variant tag value `undefined` (received `TypeError: boom`) \
            specified for `HandlerError`\nStack:\n  export_handler_0_1_0$handle@initializer.js:368:17\n\n\
            Redirecting call to abort() to mozalloc_abort\n";
        assert_eq!(
            stderr_reason(stderr.as_bytes()).as_deref(),
            Some("uncaught exception: TypeError: boom")
        );
        // Backticks inside the thrown text are kept.
        let stderr =
            "invalid variant tag value `x` (received `a `b` c`) specified for `HandlerError`";
        assert_eq!(js_exception(stderr), Some("a `b` c"));
        assert_eq!(
            js_exception("invalid variant tag value `x` (received ``) specified for `H`"),
            None
        );
    }

    #[test]
    fn reasons_are_cut_to_one_bounded_line() {
        let long = format!(
            "Traceback (most recent call last):\nValueError: {}\n",
            "é".repeat(4096)
        );
        let reason = stderr_reason(long.as_bytes()).expect("a reason");
        assert!(
            reason.len() <= MAX_REASON_BYTES + '…'.len_utf8(),
            "{}",
            reason.len()
        );
        assert!(reason.ends_with('…'));
        assert!(!reason.contains('\n'));
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
