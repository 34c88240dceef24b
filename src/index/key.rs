//! Key bytes stored in a hash-table bucket: inline when short, so that comparing them on a
//! lookup follows no pointer.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

/// Longest key stored inline in an entry.
pub(crate) const INLINE_KEY: usize = 30;

/// A key's bytes: inline when short, a shared `Bytes` otherwise.
#[derive(Clone)]
pub(crate) enum KeyBytes {
    /// Up to [`INLINE_KEY`] bytes.
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    /// Longer keys, sharing the caller's buffer.
    Shared(Bytes),
}

impl KeyBytes {
    /// Stores `key`, inline if it is short (then its buffer is not shared: no reference
    /// count is touched).
    pub(crate) fn new(key: &Bytes) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            KeyBytes::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            KeyBytes::Shared(key.clone())
        }
    }

    /// The bytes.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            KeyBytes::Shared(b) => b,
        }
    }
}

// Hash, equality and `Borrow<[u8]>` all go through the bytes, so that a lookup by `&[u8]`
// finds the entry (the `Borrow` contract).
impl Hash for KeyBytes {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialEq for KeyBytes {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBytes {}

impl std::ops::Deref for KeyBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for KeyBytes {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}
