// Build with: `guest-sdk/js/build.sh examples/js-word-count/app.js word-count-js.wasm`
// then `jobbox run word-count-js.wasm --json '{"text": "a b a"}'`.
//
// Counts the words in a text, like the Rust `word-count` example and with the same
// output: `{"text": "A b, a"}` → `{"words": 3, "unique": 2, "counts": {"a": 2,
// "b": 1}}`. Words are split on whitespace, lowercased and trimmed of ASCII
// punctuation; a "word" of punctuation only is not counted. Logs a line at the start
// and the end and reports progress.
//
// Two inputs exercise the error paths: `{"reject": "why"}` fails the job for good
// (`Reject`), `{"retry": "why"}` asks for a retry (`Retry`).

import { exportHandler, info, Reject, Retry } from "../../guest-sdk/js/jobbox_guest.js";

const PUNCTUATION = /^[!-/:-@[-`{-~]+|[!-/:-@[-`{-~]+$/g;

function wordCount(data, ctx) {
  if (data === null || typeof data !== "object") {
    throw new Reject('invalid input: expected an object with a "text" field');
  }
  if ("reject" in data) throw new Reject(String(data.reject));
  if ("retry" in data) throw new Retry(String(data.retry));
  if (typeof data.text !== "string") throw new Reject("invalid input: missing field `text`");
  const text = data.text;
  info(`counting words in ${new TextEncoder().encode(text).length} bytes of text`);
  ctx.progress(0, "count");
  const counts = new Map();
  for (const raw of text.split(/\s+/)) {
    const word = raw.replace(PUNCTUATION, "").toLowerCase();
    if (word) counts.set(word, (counts.get(word) ?? 0) + 1);
  }
  ctx.progress(100, "done");
  let words = 0;
  for (const n of counts.values()) words += n;
  info(`counted ${words} words, ${counts.size} unique`);
  const sorted = [...counts.keys()].sort();
  return {
    words,
    unique: counts.size,
    counts: Object.fromEntries(sorted.map((w) => [w, counts.get(w)])),
  };
}

export const handler = exportHandler(wordCount);
