//! What [`export_handler!`](crate::export_handler) expands to calls into: one job in,
//! one `result<list<u8>, handler-error>` out.

use std::sync::Once;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::exports::jobbox::handler::handler::{HandlerError, Job};
use crate::codec::Codec;
use crate::{Context, Error};

/// Runs a typed handler: decodes the payload by the job's content type, calls `f`,
/// and encodes its output with the same content type.
pub fn handle_typed<In, Out, F>(job: Job, f: F) -> Result<Vec<u8>, HandlerError>
where
    In: DeserializeOwned,
    Out: Serialize,
    F: FnOnce(In, &Context) -> Result<Out, Error>,
{
    install_panic_hook();
    let (payload, ctx) = Context::from_job(job);
    let run = || {
        let codec = Codec::for_content_type(ctx.content_type())?;
        let input = codec.decode(&payload)?;
        drop(payload);
        let output = f(input, &ctx)?;
        codec.encode(&output)
    };
    run().map_err(HandlerError::from)
}

/// Runs a byte-level handler.
pub fn handle_raw<F>(job: Job, f: F) -> Result<Vec<u8>, HandlerError>
where
    F: FnOnce(Vec<u8>, &Context) -> Result<Vec<u8>, Error>,
{
    install_panic_hook();
    let (payload, ctx) = Context::from_job(job);
    f(payload, &ctx).map_err(HandlerError::from)
}

/// Makes a panic leave a trace in the job's log, not only on stderr.
///
/// A panic in a guest aborts: the instance traps with `unreachable` and the worker
/// records the trap. The default hook writes the panic message to stderr, which the
/// worker captures with a small cap; this hook also appends it to the job's log at
/// error level (`panicked at src/lib.rs:3:5: the message`), then runs the default hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("Box<dyn Any>");
            let line = match info.location() {
                Some(at) => format!("panicked at {at}: {message}"),
                None => format!("panicked: {message}"),
            };
            crate::host::log(crate::log::Level::Error, &line);
            default_hook(info);
        }));
    });
}
