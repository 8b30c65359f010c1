//! The masking transform (RFC 6455 §5.3): XOR with a 4-byte key.
//!
//! [`apply_mask`] works a 64-bit word at a time (which the compiler turns
//! into SIMD), [`extend_masked`] does the same while copying; and
//! [`apply_mask_simple`] is the byte-at-a-time reference that the tests
//! hold both to.

use bytes::BytesMut;

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
    let k = in_phase(key, offset);
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

/// Appends `src` to `dst`, XORed with `key` as if `src` started `offset`
/// bytes into the payload: [`apply_mask`] fused with the copy, so a
/// payload buffered from the caller's bytes is read and written once.
///
/// ```
/// use bytes::BytesMut;
/// use wsline_proto::frame::{apply_mask, extend_masked};
/// let mut out = BytesMut::from(&b"ab"[..]);
/// extend_masked(&mut out, b"cdefgh", [1, 2, 3, 4], 2);
/// apply_mask(&mut out[2..], [1, 2, 3, 4], 2);
/// assert_eq!(&out[..], b"abcdefgh");
/// ```
#[inline]
pub fn extend_masked(dst: &mut BytesMut, src: &[u8], key: [u8; 4], offset: usize) {
    let k = in_phase(key, offset);
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    dst.reserve(src.len());
    let spare = &mut dst.spare_capacity_mut()[..src.len()];
    let mut out = spare.chunks_exact_mut(8);
    let mut words = src.chunks_exact(8);
    for (o, w) in (&mut out).zip(&mut words) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let v = (u64::from_ne_bytes(b) ^ word).to_ne_bytes();
        for (o, v) in o.iter_mut().zip(v) {
            o.write(v);
        }
    }
    // The remainder starts at a multiple of 8, so the key is in phase.
    for (i, (o, b)) in out
        .into_remainder()
        .iter_mut()
        .zip(words.remainder())
        .enumerate()
    {
        o.write(b ^ k[i & 3]);
    }
    // SAFETY: the loops wrote every one of the first `src.len()` bytes of
    // the spare capacity (`reserve` made room for them).
    unsafe { dst.set_len(dst.len() + src.len()) };
}

/// The key as it applies from `offset` bytes into the payload: rotated
/// left by `offset % 4` bytes (one instruction, where rotating the array
/// is a call).
#[inline]
fn in_phase(key: [u8; 4], offset: usize) -> [u8; 4] {
    let bits = 8 * (offset % 4) as u32;
    u32::from_le_bytes(key).rotate_right(bits).to_le_bytes()
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

        #[test]
        fn fused_copy_matches_simple(prefix in proptest::collection::vec(any::<u8>(), 0..20), data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], offset in 0usize..16) {
            let mut fused = BytesMut::from(&prefix[..]);
            extend_masked(&mut fused, &data, key, offset);
            let mut simple = data.clone();
            apply_mask_simple(&mut simple, key, offset);
            prop_assert_eq!(&fused[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&fused[prefix.len()..], &simple[..]);
        }
    }
}
