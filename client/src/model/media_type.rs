//! Media types (`type/subtype[; parameters]`) as jobs and results name their bytes.

/// Longest media type a handler may give its output.
pub const MAX_MEDIA_TYPE_LEN: usize = 255;

/// Whether `text` is a media type: `type/subtype` made of RFC 6838 name characters
/// (`A-Z a-z 0-9 ! # $ & ^ _ . + -`), optionally followed by `;` and parameters of
/// visible ASCII and spaces; at most [`MAX_MEDIA_TYPE_LEN`] bytes in all.
pub fn is_valid_content_type(text: &str) -> bool {
    if text.is_empty() || text.len() > MAX_MEDIA_TYPE_LEN {
        return false;
    }
    let (essence, parameters) = text.split_once(';').unwrap_or((text, ""));
    let Some((kind, subtype)) = essence.trim_end().split_once('/') else {
        return false;
    };
    let name = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    name(kind)
        && name(subtype)
        && parameters
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic())
}

/// What the essence (`type/subtype`, lower case, parameters left out) of `text` is.
pub fn essence(text: &str) -> String {
    text.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_type_slash_subtype_with_optional_parameters() {
        for good in [
            "application/json",
            "text/plain; charset=utf-8",
            "application/vnd.api+json",
            "application/msgpack",
        ] {
            assert!(is_valid_content_type(good), "{good}");
        }
        for bad in [
            "",
            "json",
            "/json",
            "application/",
            "a b/c",
            "text/plain\nX-Injected: 1",
            "text/plain; \u{7f}",
            "täxt/plain",
            &format!("text/{}", "x".repeat(MAX_MEDIA_TYPE_LEN)),
        ] {
            assert!(!is_valid_content_type(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_essence_leaves_parameters_out() {
        assert_eq!(essence("Application/MsgPack; x=1"), "application/msgpack");
    }
}
