// Write jobbox job handlers in JavaScript: one function, built with componentize-js.
//
// A handler is a function from a job's input to its output. The worker runs each job
// in a fresh WebAssembly instance of your handler, under the fuel, memory, time and
// output limits the operator set, and records what your function returned:
//
//     import { exportHandler, info, Reject } from "../../guest-sdk/js/jobbox_guest.js";
//
//     function countWords(data, ctx) {
//       if (data.text.length > 1 << 20) throw new Reject("text longer than 1 MiB");
//       info(`job ${ctx.id} (attempt ${ctx.attempt})`);
//       ctx.progress(100, "done");
//       return { words: data.text.split(/\s+/).filter(Boolean).length };
//     }
//
//     export const handler = exportHandler(countWords);
//
// The component exports the WIT interface `handler`, which componentize-js takes from
// the module's export of the same name: export what `exportHandler` returns as
// `handler`. Build with (from the repository root):
//
//     guest-sdk/js/build.sh path/to/app.js out.wasm
//
// Input and output: a typed handler (the default) gets the payload decoded from JSON
// (`application/json`, `text/json`, any `application/*+json`, or no content type; an
// empty payload is `null`) and returns anything `JSON.stringify` accepts. A payload
// that does not decode rejects the job with `invalid input: <reason>`; another
// content type rejects it too. `exportHandler(fn, { raw: true })` passes the payload
// as a `Uint8Array` and expects a `Uint8Array` (or a string, sent as UTF-8) back.
//
// Errors: throw `Reject` for a job that can never succeed as it is, `Retry` for a
// transient problem (the worker retries the job later, with backoff, while it has
// retries left). Anything else thrown is a bug, like a Rust panic: the job fails for
// good as a `trap` whose message is `uncaught exception: <Error>: <message>`, and the
// same line is appended to the job's log at error level.
//
// Logs and progress: `info`, `warn` and friends append lines to the job's log;
// `ctx.progress` reports how far the job has come. Both are bounded by the worker and
// never fail a job.

import * as host from "jobbox:handler/host@0.1.0";

/** The default content type, also assumed when a job gives none. */
export const JSON_TYPE = "application/json";

const LEVELS = ["trace", "debug", "info", "warn", "error"];

/** A permanent failure: the worker records it and does not retry the job. */
export class Reject extends Error {
  constructor(message) {
    super(String(message));
    this.name = "Reject";
  }
}

/**
 * A transient failure: the worker retries the job later (with backoff) while it has
 * retries left, and records a final failure after the last one.
 */
export class Retry extends Error {
  constructor(message) {
    super(String(message));
    this.name = "Retry";
  }
}

/** Appends `message` to the job's log at `level` ("trace" … "error"; else info). */
export function log(level, message) {
  host.log(LEVELS.includes(level) ? level : "info", String(message));
}

/** Appends `message` to the job's log at trace level. */
export const trace = (message) => log("trace", message);
/** Appends `message` to the job's log at debug level. */
export const debug = (message) => log("debug", message);
/** Appends `message` to the job's log at info level. */
export const info = (message) => log("info", message);
/** Appends `message` to the job's log at warn level. */
export const warn = (message) => log("warn", message);
/** Appends `message` to the job's log at error level. */
export const error = (message) => log("error", message);

/**
 * The job a handler is running (everything but the payload), and the way to report
 * progress back to the worker.
 */
export class Context {
  constructor(job) {
    /** The job's unique id (a ULID). */
    this.id = job.id;
    /** The job type the job was routed by, e.g. "word-count". */
    this.jobType = job.jobType;
    /** The queue the job was enqueued on. */
    this.queue = job.queue;
    /** Which attempt this is: 1 for the first run, 2 for the first retry, … */
    this.attempt = job.attempt;
    /** The payload's media type; "application/json" when the job gave none. */
    this.contentType = job.contentType.trim() || JSON_TYPE;
    /** The metadata entries the enqueuer attached, as `[key, value]` pairs. */
    this.metadataPairs = job.metadata;
  }

  /** The value of the metadata entry `key` (the first of several), or undefined. */
  metadata(key) {
    const entry = this.metadataPairs.find(([k]) => k === key);
    return entry === undefined ? undefined : entry[1];
  }

  /**
   * Reports progress: `percent` (clamped to 0–100), an optional short step name and
   * an optional message. The worker rate-limits reports.
   */
  progress(percent, step, message) {
    const p = Math.max(0, Math.min(100, Math.trunc(Number(percent) || 0)));
    host.reportProgress({
      percent: p,
      step: step === undefined ? undefined : String(step),
      message: message === undefined ? undefined : String(message),
    });
  }

  /** Says what media type this job's output is in, e.g. "text/plain". */
  setOutputContentType(contentType) {
    host.setOutputContentType(String(contentType));
  }
}

function isJson(contentType) {
  const essence = contentType.split(";")[0].trim().toLowerCase();
  return (
    essence === "" ||
    essence === JSON_TYPE ||
    essence === "text/json" ||
    (essence.startsWith("application/") && essence.endsWith("+json"))
  );
}

function decode(payload, contentType) {
  if (!isJson(contentType)) {
    throw new Reject(
      `unsupported content type ${JSON.stringify(contentType)}: expected application/json ` +
        "(use a raw handler for other encodings)",
    );
  }
  if (payload.length === 0) return null;
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(payload);
  } catch (e) {
    throw new Reject(`invalid input: ${e.message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Reject(`invalid input: ${e.message}`);
  }
}

function encode(output) {
  let text;
  try {
    text = JSON.stringify(output);
  } catch (e) {
    throw new Reject(`invalid output: ${e.message}`);
  }
  if (text === undefined) {
    throw new Reject(`invalid output: ${typeof output} is not JSON`);
  }
  return new TextEncoder().encode(text);
}

function rawOutput(output) {
  if (output instanceof Uint8Array) return output;
  if (typeof output === "string") return new TextEncoder().encode(output);
  throw new Reject(`invalid output: a raw handler returns a Uint8Array, not ${typeof output}`);
}

/**
 * Runs `fn` on one job and returns its output bytes. `Reject` and `Retry` become the
 * WIT `handler-error`; anything else thrown is logged and thrown on (a trap).
 */
export function run(fn, job, { raw = false } = {}) {
  const ctx = new Context(job);
  try {
    if (raw) return rawOutput(fn(job.payload, ctx));
    return encode(fn(decode(job.payload, ctx.contentType), ctx));
  } catch (e) {
    if (e instanceof Reject) throw { tag: "reject", val: e.message };
    if (e instanceof Retry) throw { tag: "retry", val: e.message };
    // Like the Rust SDK's panic hook: the job's log says what went wrong too, not
    // only the (capped) stderr.
    error(`uncaught exception: ${String(e)}`);
    throw e;
  }
}

/**
 * Makes `fn` the component's handler: returns the object to export as `handler`.
 *
 * `fn(data, ctx)` gets the decoded JSON payload and a `Context` and returns the output
 * to encode as JSON; with `{ raw: true }` it gets and returns bytes.
 */
export function exportHandler(fn, options = {}) {
  return {
    handle(job) {
      return run(fn, job, options);
    },
  };
}
