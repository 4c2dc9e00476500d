//! Run with: `cargo build -p example-markdown --target wasm32-wasip2 --release` then
//! `jobbox run target/wasm32-wasip2/release/example_markdown.wasm --json '{"markdown":"# Hi\n\n*there*"}'`
//!
//! Renders CommonMark (plus tables, strikethrough and task lists) to HTML with
//! [pulldown-cmark]: `{"markdown": "# Hi"}` → `{"html": "<h1>Hi</h1>\n"}`. It shows an
//! ordinary crates.io crate running inside a handler unchanged. Raw HTML in the input
//! is passed through as CommonMark says: sanitize the output before you serve it.
//!
//! [pulldown-cmark]: https://crates.io/crates/pulldown-cmark

use jobbox_guest::{Context, Error};
use pulldown_cmark::{Options, Parser};
use serde::{Deserialize, Serialize};

/// The job's input.
#[derive(Debug, Deserialize)]
struct Input {
    /// The Markdown source.
    markdown: String,
}

/// The job's output.
#[derive(Debug, Serialize)]
struct Output {
    /// The rendered HTML fragment.
    html: String,
}

fn render(Input { markdown }: Input, _ctx: &Context) -> Result<Output, Error> {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let parser = Parser::new_ext(&markdown, options);
    // HTML is usually a little longer than its Markdown source.
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, parser);
    jobbox_guest::debug!(
        "rendered {} bytes of Markdown into {} bytes of HTML",
        markdown.len(),
        html.len()
    );
    Ok(Output { html })
}

jobbox_guest::export_handler!(render);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_headings_and_emphasis() {
        let input = Input {
            markdown: "# Hi\n\n*there* ~~x~~".to_owned(),
        };
        let out = render(input, &Context::new("markdown")).expect("renders");
        assert_eq!(
            out.html,
            "<h1>Hi</h1>\n<p><em>there</em> <del>x</del></p>\n"
        );
    }
}
