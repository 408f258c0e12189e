//! Keys and the seed's `url_safe` encoding.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bytes a key or a bucket name may hold: they are keys in the store,
/// never paths.
pub const KEY_BYTES_MAX: usize = 4096;

/// A key: a UTF-8 string, relative to its bucket (or, from
/// [`Bucket::entries`](super::Bucket::entries), the full `bucket/key`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(String);

impl Key {
    /// A key, as given.
    pub fn new(key: impl Into<String>) -> Key {
        Key(key.into())
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The seed's file-name form: every byte that is not an ASCII letter
    /// or digit as `%XX` (uppercase hex). Kept for parity; replaydb never
    /// makes a path of a key.
    pub fn url_safe(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// The key back from [`Key::url_safe`]. As the seed's: a `%` not
    /// followed by two hex digits is kept as it is, and bytes that are
    /// not UTF-8 become U+FFFD.
    pub fn from_url_safe(encoded: &str) -> Key {
        let bytes = encoded.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (b, hex) {
                (b'%', Some(v)) => {
                    out.push(v);
                    i += 3;
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        Key(String::from_utf8_lossy(&out).into_owned())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Hashes and compares as the string it holds, so maps of keys are
/// looked up by `&str`.
impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key(s.to_string())
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_safe_encodes_every_byte_but_letters_and_digits_and_decodes_back() {
        let k = Key::new("ns/comp ñ.%x");
        assert_eq!(k.url_safe(), "ns%2Fcomp%20%C3%B1%2E%25x");
        assert_eq!(Key::from_url_safe(&k.url_safe()), k);
        assert_eq!(Key::from_url_safe("%G1%4").as_str(), "%G1%4", "kept as is");
        assert_eq!(
            Key::from_url_safe("%+1").as_str(),
            "%+1",
            "two hex digits, no sign"
        );
        assert_eq!(
            Key::from_url_safe("a%FF").as_str(),
            "a\u{FFFD}",
            "not UTF-8"
        );
        let every: String = (1u8..128).map(char::from).collect();
        let k = Key::new(every);
        assert!(
            k.url_safe()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'%')
        );
        assert_eq!(Key::from_url_safe(&k.url_safe()), k);
    }
}
