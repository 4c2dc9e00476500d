//! Payload decoding and output encoding by content type, for typed handlers.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// The default content type, also assumed when a job gives none.
pub(crate) const JSON: &str = "application/json";

/// The encodings a typed handler understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// `application/json` (also `text/json`, any `application/*+json`, and empty).
    Json,
    /// `application/msgpack` (also `application/x-msgpack`, `application/vnd.msgpack`).
    /// Output is written with named fields, like jobbox's own wire format.
    MsgPack,
}

impl Codec {
    /// The codec for a media type; parameters (`; charset=utf-8`) and case are ignored.
    ///
    /// # Errors
    ///
    /// A rejection for a content type that is neither JSON nor MessagePack.
    pub(crate) fn for_content_type(content_type: &str) -> Result<Self, Error> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" | JSON | "text/json" => Ok(Self::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(Self::MsgPack)
            }
            e if e.starts_with("application/") && e.ends_with("+json") => Ok(Self::Json),
            _ => Err(Error::reject(format!(
                "unsupported content type {content_type:?}: expected application/json or application/msgpack"
            ))),
        }
    }

    /// Decodes a payload. An empty payload reads as JSON `null` / MessagePack nil, so
    /// that handlers taking `()` or an `Option` accept it.
    ///
    /// # Errors
    ///
    /// A rejection `invalid input: <serde message>`.
    pub(crate) fn decode<T: DeserializeOwned>(self, payload: &[u8]) -> Result<T, Error> {
        let decoded = match self {
            Self::Json => {
                let payload = if payload.is_empty() { b"null" } else { payload };
                serde_json::from_slice(payload).map_err(|e| e.to_string())
            }
            Self::MsgPack => {
                let payload = if payload.is_empty() { &[0xc0] } else { payload };
                rmp_serde::from_slice(payload).map_err(|e| e.to_string())
            }
        };
        decoded.map_err(|e| Error::reject(format!("invalid input: {e}")))
    }

    /// Encodes a handler's output.
    ///
    /// # Errors
    ///
    /// A rejection `invalid output: <serde message>` (e.g. a JSON map with non-string keys).
    pub(crate) fn encode<T: Serialize>(self, output: &T) -> Result<Vec<u8>, Error> {
        let encoded = match self {
            Self::Json => serde_json::to_vec(output).map_err(|e| e.to_string()),
            Self::MsgPack => rmp_serde::to_vec_named(output).map_err(|e| e.to_string()),
        };
        encoded.map_err(|e| Error::reject(format!("invalid output: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ErrorKind;

    #[test]
    fn content_types() {
        for ct in [
            "",
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert_eq!(Codec::for_content_type(ct), Ok(Codec::Json), "{ct}");
        }
        for ct in ["application/msgpack", "application/x-msgpack"] {
            assert_eq!(Codec::for_content_type(ct), Ok(Codec::MsgPack), "{ct}");
        }
        let err = Codec::for_content_type("text/csv").expect_err("csv is not supported");
        assert_eq!(err.kind(), ErrorKind::Reject);
        assert!(err.message().contains("text/csv"), "{err}");
    }

    #[test]
    fn empty_payload_is_null() {
        assert_eq!(Codec::Json.decode::<Option<u8>>(b""), Ok(None));
        assert_eq!(Codec::MsgPack.decode::<()>(b""), Ok(()));
    }

    #[test]
    fn bad_input_is_rejected() {
        let err = Codec::Json
            .decode::<BTreeMap<String, u8>>(b"{\"a\": \"x\"}")
            .expect_err("a string is not a u8");
        assert_eq!(err.kind(), ErrorKind::Reject);
        assert!(
            err.message().starts_with("invalid input: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn msgpack_round_trip_uses_named_fields() {
        #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Out {
            words: u32,
        }
        let bytes = Codec::MsgPack.encode(&Out { words: 3 }).expect("encodes");
        // fixmap(1), fixstr "words", 3
        assert_eq!(bytes, b"\x81\xa5words\x03");
        assert_eq!(Codec::MsgPack.decode::<Out>(&bytes), Ok(Out { words: 3 }));
    }
}
