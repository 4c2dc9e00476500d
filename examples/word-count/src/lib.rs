//! Run with: `cargo build -p example-word-count --target wasm32-wasip2 --release` then
//! `jobbox run target/wasm32-wasip2/release/example_word_count.wasm --json '{"text":"a b a"}'`
//!
//! Counts the words in a text: `{"text": "A b, a"}` → `{"words": 3, "unique": 2,
//! "counts": {"a": 2, "b": 1}}`. Words are split on Unicode whitespace, lowercased and
//! trimmed of ASCII punctuation; a "word" of punctuation only is not counted. Works with
//! JSON and MessagePack payloads alike, logs a line at the start and the end, and
//! reports progress as it goes.

use std::collections::BTreeMap;

use jobbox_guest::{Context, Error};
use serde::{Deserialize, Serialize};

/// The job's input.
#[derive(Debug, Deserialize)]
struct Input {
    /// The text to count the words of.
    text: String,
}

/// The job's output.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct Output {
    /// How many words the text has.
    words: usize,
    /// How many different words it has.
    unique: usize,
    /// Each word (lowercased) and how often it occurs, in alphabetical order.
    counts: BTreeMap<String, usize>,
}

/// How many lines make one progress step: reports stay few even for long texts.
const LINES_PER_CHUNK: usize = 1_000;

fn word_count(Input { text }: Input, ctx: &Context) -> Result<Output, Error> {
    jobbox_guest::info!("counting words in {} bytes of text", text.len());
    ctx.progress(0, "count");

    let lines: Vec<&str> = text.lines().collect();
    let chunks = lines.len().div_ceil(LINES_PER_CHUNK).max(1);
    let mut counts = BTreeMap::<String, usize>::new();
    for (i, chunk) in lines.chunks(LINES_PER_CHUNK).enumerate() {
        for word in chunk.iter().flat_map(|line| line.split_whitespace()) {
            let word = word.trim_matches(|c: char| c.is_ascii_punctuation());
            if !word.is_empty() {
                *counts.entry(word.to_lowercase()).or_default() += 1;
            }
        }
        let done = (i + 1) * 100 / chunks;
        if done < 100 {
            ctx.progress(u8::try_from(done).unwrap_or(99), "count");
        }
    }

    let output = Output {
        words: counts.values().sum(),
        unique: counts.len(),
        counts,
    };
    ctx.progress(100, "done");
    jobbox_guest::info!("counted {} words, {} unique", output.words, output.unique);
    Ok(output)
}

jobbox_guest::export_handler!(word_count);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lowercased_words_without_punctuation() {
        let input = Input {
            text: "A b, a!\n  -- b\tC".to_owned(),
        };
        let out = word_count(input, &Context::new("word-count")).expect("counts");
        let counts = BTreeMap::from([
            ("a".to_owned(), 2),
            ("b".to_owned(), 2),
            ("c".to_owned(), 1),
        ]);
        assert_eq!(
            out,
            Output {
                words: 5,
                unique: 3,
                counts
            }
        );
    }
}
