//! `CompactBytes`: a byte string that stores up to 22 bytes inline.
//!
//! Most keys and many values are short ("user:1042", "42", "ok"). Storing them inline
//! saves one heap allocation (and ~32 bytes of allocator overhead) per key, which is
//! most of the difference between a naive `HashMap<Vec<u8>, Vec<u8>>` and Redis's
//! `embstr` encoding. Longer strings live in a `Box<[u8]>`: 16 bytes, no spare
//! capacity, because stored values are rarely appended to.

/// The longest string stored without a heap allocation. With a one-byte tag and a
/// one-byte length this makes the whole type 24 bytes, the size of a `Vec`.
pub const INLINE_CAP: usize = 22;

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum CompactBytes {
    /// `len` bytes at the front of `data`; the rest is zero.
    Inline {
        len: u8,
        data: [u8; INLINE_CAP],
    },
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<CompactBytes>() == 24);

impl CompactBytes {
    pub const EMPTY: CompactBytes = CompactBytes::Inline { len: 0, data: [0; INLINE_CAP] };

    #[inline]
    pub fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE_CAP {
            let mut data = [0u8; INLINE_CAP];
            data[..bytes.len()].copy_from_slice(bytes);
            CompactBytes::Inline { len: bytes.len() as u8, data }
        } else {
            CompactBytes::Heap(bytes.into())
        }
    }

    pub fn from_vec(bytes: Vec<u8>) -> Self {
        if bytes.len() <= INLINE_CAP {
            Self::new(&bytes)
        } else {
            CompactBytes::Heap(bytes.into_boxed_slice())
        }
    }

    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match self {
            CompactBytes::Inline { len, data } => &data[..*len as usize],
            CompactBytes::Heap(b) => b,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        match self {
            CompactBytes::Inline { len, .. } => *len as usize,
            CompactBytes::Heap(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_inline(&self) -> bool {
        matches!(self, CompactBytes::Inline { .. })
    }

    /// Heap bytes owned beyond the 24 bytes of the value itself, for memory reports.
    pub fn heap_bytes(&self) -> usize {
        match self {
            CompactBytes::Inline { .. } => 0,
            CompactBytes::Heap(b) => b.len(),
        }
    }
}

impl std::ops::Deref for CompactBytes {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for CompactBytes {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::borrow::Borrow<[u8]> for CompactBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for CompactBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_slice()))
    }
}

impl PartialOrd for CompactBytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CompactBytes {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_up_to_the_cap_then_heap() {
        for n in [0, 1, INLINE_CAP, INLINE_CAP + 1, 100] {
            let v: Vec<u8> = (0..n as u8).collect();
            let c = CompactBytes::new(&v);
            assert_eq!(c.as_slice(), &v[..]);
            assert_eq!(c.is_inline(), n <= INLINE_CAP);
            assert_eq!(CompactBytes::from_vec(v.clone()), c);
        }
    }
}
