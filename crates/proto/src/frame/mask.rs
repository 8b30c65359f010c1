//! The masking transform (RFC 6455 §5.3): XOR with a 4-byte key.
//!
//! [`apply_mask`] works a 64-bit word at a time (which the compiler turns
//! into SIMD); [`apply_mask_simple`] is the byte-at-a-time reference that
//! the tests hold it to.

/// XORs `buf` with `key`, as if `buf` started `offset` bytes into the payload.
///
/// Applying it twice restores the input. `offset` lets a payload be
/// unmasked piece by piece as it arrives.
///
/// ```
/// use wsline_proto::frame::apply_mask;
/// let mut data = *b"hello world";
/// apply_mask(&mut data, [1, 2, 3, 4], 0);
/// apply_mask(&mut data[..5], [1, 2, 3, 4], 0);
/// apply_mask(&mut data[5..], [1, 2, 3, 4], 5);
/// assert_eq!(&data, b"hello world");
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut k = key;
    k.rotate_left(offset % 4);
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for w in chunk.chunks_exact_mut(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            w.copy_from_slice(&(u64::from_ne_bytes(b) ^ word).to_ne_bytes());
        }
    }
    // The remainder starts at a multiple of 32, so the key is in phase.
    let rest = chunks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        w.copy_from_slice(&(u64::from_ne_bytes(b) ^ word).to_ne_bytes());
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

/// Byte-at-a-time masking: the reference for [`apply_mask`].
pub fn apply_mask_simple(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_matches_simple(data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], offset in 0usize..16) {
            let mut a = data.clone();
            let mut b = data;
            apply_mask(&mut a, key, offset);
            apply_mask_simple(&mut b, key, offset);
            prop_assert_eq!(a, b);
        }
    }
}
