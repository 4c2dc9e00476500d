//! The token that the dashboard's actions need.

use axum::http::HeaderMap;

/// Shortest token accepted: a guessable token would make the actions open to anyone
/// who can reach the port.
pub const MIN_TOKEN_LEN: usize = 16;

/// A secret that mutating requests must present as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// `token`, if it is at least [`MIN_TOKEN_LEN`] characters of visible ASCII.
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "a dashboard token needs at least {MIN_TOKEN_LEN} visible ASCII characters"
            ));
        }
        Ok(Self(token))
    }

    /// A fresh random token (two ULIDs' worth of randomness).
    pub fn random() -> Self {
        let a = ulid::Ulid::new().random();
        let b = ulid::Ulid::new().random();
        Self(format!("{a:020x}{b:020x}"))
    }

    /// The token's text (to print it once at start).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `headers` carry this token. The comparison takes the same time
    /// wherever the first difference is.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        equal_in_constant_time(given.as_bytes(), self.0.as_bytes())
    }
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            value.parse().expect("header value"),
        );
        headers
    }

    #[test]
    fn only_the_exact_bearer_token_is_allowed() {
        let token = Token::new("0123456789abcdef").expect("long enough");
        assert!(token.allows(&with("Bearer 0123456789abcdef")));
        assert!(!token.allows(&with("Bearer 0123456789abcdeg")));
        assert!(!token.allows(&with("Bearer 0123456789abcde")));
        assert!(!token.allows(&with("0123456789abcdef")));
        assert!(!token.allows(&HeaderMap::new()));
    }

    #[test]
    fn short_or_invisible_tokens_are_refused() {
        assert!(Token::new("short").is_err());
        assert!(Token::new("0123456789 abcdef").is_err());
        assert_eq!(Token::random().expose().len(), 40);
    }
}
