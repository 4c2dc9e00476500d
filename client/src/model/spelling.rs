//! Wire enums that survive new spellings.
//!
//! Every enum in the model is written as a string. A reader meets spellings that a
//! newer writer added (a new error or event type); it keeps them as `Other(spelling)`
//! instead of refusing the whole record. [`wire_enum!`] generates such an enum.

use std::collections::HashSet;
use std::sync::Mutex;

/// Longest unknown spelling kept as read; known spellings are far shorter.
pub(crate) const MAX_SPELLING_LEN: usize = 64;

/// Distinct unknown spellings kept per process. Each is leaked once so that
/// `Other` stays `Copy` and `as_str` stays `&'static str`; the cap bounds that memory
/// (≤ 16 KiB) against a writer that sends a new spelling in every record.
const MAX_SPELLINGS: usize = 256;

/// What an unknown spelling reads as when it is too long or the cap is reached.
pub(crate) const UNKNOWN: &str = "?";

static SPELLINGS: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// The `'static` copy of an unknown spelling (or [`UNKNOWN`] past the bounds).
pub(crate) fn intern(spelling: &str) -> &'static str {
    if spelling.len() > MAX_SPELLING_LEN {
        return UNKNOWN;
    }
    let mut guard = SPELLINGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let set = guard.get_or_insert_with(HashSet::new);
    if let Some(kept) = set.get(spelling) {
        return kept;
    }
    if set.len() >= MAX_SPELLINGS {
        return UNKNOWN;
    }
    let kept: &'static str = Box::leak(spelling.to_owned().into_boxed_str());
    set.insert(kept);
    kept
}

/// A serde visitor for a wire enum: reads a string and maps it with `from_wire`.
pub(crate) struct SpellingVisitor<T>(pub(crate) fn(&str) -> T, pub(crate) &'static str);

impl<T> serde::de::Visitor<'_> for SpellingVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a {} spelling (a string)", self.1)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
        std::str::from_utf8(v)
            .map(self.0)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(v), &self))
    }
}

/// Defines a wire enum: the listed variants with their exact spellings, plus
/// `Other(&'static str)` for a spelling this version does not know. Generates `ALL`
/// (the known variants), `as_str`, `from_wire`, `Display`, `Serialize`, `Deserialize`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $spelling:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A spelling this version does not know, kept as read (a newer writer's
            /// addition). Written back unchanged. Build it with `from_wire`.
            Other(&'static str),
        }

        impl $name {
            /// Every known variant, in declaration order (`Other` is not included).
            pub const ALL: [Self; [$($spelling),+].len()] = [$(Self::$variant),+];

            /// The wire spelling.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $spelling,)+
                    Self::Other(s) => s,
                }
            }

            /// The variant spelled `s` on the wire; `Other` for an unknown spelling.
            #[must_use]
            pub fn from_wire(s: &str) -> Self {
                match s {
                    $($spelling => Self::$variant,)+
                    other => Self::Other($crate::model::spelling::intern(other)),
                }
            }

            /// True unless this is an `Other` spelling.
            #[must_use]
            pub const fn is_known(self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str($crate::model::spelling::SpellingVisitor(
                    Self::from_wire,
                    stringify!($name),
                ))
            }
        }
    };
}

pub(crate) use wire_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_bounded_and_stable() {
        let a = intern("brand_new_kind");
        assert_eq!(a, "brand_new_kind");
        assert!(std::ptr::eq(a, intern("brand_new_kind")));
        assert_eq!(intern(&"x".repeat(MAX_SPELLING_LEN + 1)), UNKNOWN);
        for i in 0..=MAX_SPELLINGS {
            intern(&format!("s{i}"));
        }
        assert_eq!(intern("one_too_many"), UNKNOWN);
    }
}
