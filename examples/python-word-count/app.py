"""Build with: ``guest-sdk/python/build.sh examples/python-word-count word-count-py.wasm``
then ``jobbox run word-count-py.wasm --json '{"text": "a b a"}'``.

Counts the words in a text, like the Rust ``word-count`` example and with the same
output: ``{"text": "A b, a"}`` → ``{"words": 3, "unique": 2, "counts": {"a": 2,
"b": 1}}``. Words are split on whitespace, lowercased and trimmed of ASCII
punctuation; a "word" of punctuation only is not counted. Logs a line at the start and
the end and reports progress.

Two inputs exercise the error paths: ``{"reject": "why"}`` fails the job for good
(``Reject``), ``{"retry": "why"}`` asks for a retry (``Retry``).
"""

import string

import jobbox_guest
from jobbox_guest import Context, Reject, Retry


def word_count(data, ctx: Context):
    if not isinstance(data, dict):
        raise Reject("invalid input: expected an object with a \"text\" field")
    if "reject" in data:
        raise Reject(str(data["reject"]))
    if "retry" in data:
        raise Retry(str(data["retry"]))
    text = data.get("text")
    if not isinstance(text, str):
        raise Reject("invalid input: missing field `text`")
    jobbox_guest.info(f"counting words in {len(text.encode())} bytes of text")
    ctx.progress(0, "count")
    counts = {}
    for word in text.split():
        word = word.strip(string.punctuation)
        if word:
            word = word.lower()
            counts[word] = counts.get(word, 0) + 1
    ctx.progress(100, "done")
    words = sum(counts.values())
    jobbox_guest.info(f"counted {words} words, {len(counts)} unique")
    return {"words": words, "unique": len(counts), "counts": dict(sorted(counts.items()))}


Handler = jobbox_guest.export_handler(word_count)
