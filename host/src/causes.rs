//! An error as one line for people: the chain of causes, each said once (the CLI's
//! last word, and the message of a trap raised by the host).

/// The causes of `error`, outermost first, joined by `": "`, leaving out a cause
/// whose text the ones before it already contain (many errors, async-nats' among
/// them, print their source in their own message and return it as `source()` too).
pub fn error_line(error: &anyhow::Error) -> String {
    one_line(error.chain().map(ToString::to_string))
}

/// [`error_line`] over the texts of the causes, outermost first.
pub fn one_line(causes: impl IntoIterator<Item = String>) -> String {
    let mut line = String::new();
    for cause in causes {
        let cause = cause.trim();
        if cause.is_empty() || line.contains(cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(cause);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let causes = [
            "failed to record ENQUEUED: publish failed: insufficient resources (code 503)",
            "publish failed: insufficient resources (code 503)",
            "insufficient resources (code 503)",
        ]
        .map(String::from);
        assert_eq!(
            one_line(causes),
            "failed to record ENQUEUED: publish failed: insufficient resources (code 503)"
        );
    }

    #[test]
    fn causes_not_yet_said_are_joined() {
        let error = anyhow::anyhow!("connection refused").context("failed to connect");
        assert_eq!(error_line(&error), "failed to connect: connection refused");
    }
}
