//! Frame header decoding and encoding (RFC 6455 §5.2).

/// The longest possible frame header: 2 + 8 (64-bit length) + 4 (mask key).
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header. The opcode is kept raw so that the connection can
/// report a reserved opcode with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: the last frame of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The raw 4-bit opcode.
    pub opcode: u8,
    /// The masking key, when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

/// A header that cannot be decoded at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A 64-bit payload length with its most significant bit set (§5.2).
    #[error("the 64-bit payload length has its most significant bit set")]
    LengthTopBit,
}

/// Decodes a frame header from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, else the header and its
/// length in bytes.
///
/// ```
/// use wsline_proto::frame::parse_header;
/// let (h, n) = parse_header(&[0x81, 0x05, b'h']).unwrap().unwrap();
/// assert!(h.fin);
/// assert_eq!((h.opcode, h.payload_len, n), (1, 5, 2));
/// ```
#[inline]
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, HeaderError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(None);
    }
    let payload_len = match len7 {
        126 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(HeaderError::LengthTopBit);
            }
            len
        }
        n => u64::from(n),
    };
    let mask = masked.then(|| {
        let at = 2 + ext;
        [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]
    });
    Ok(Some((
        FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: b0 & 0x0f,
            mask,
            payload_len,
        },
        header_len,
    )))
}

/// Encodes a frame header into `out` (at least [`MAX_HEADER_LEN`] bytes),
/// using the shortest length form, and returns its length.
///
/// ```
/// use wsline_proto::frame::{encode_header, FrameHeader};
/// let mut buf = [0u8; 14];
/// let h = FrameHeader { fin: true, rsv: 0, opcode: 2, mask: None, payload_len: 300 };
/// let n = encode_header(&h, &mut buf);
/// assert_eq!(&buf[..n], &[0x82, 126, 0x01, 0x2c]);
/// ```
#[inline]
pub fn encode_header(h: &FrameHeader, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
    out[0] = (u8::from(h.fin) << 7) | ((h.rsv & 0x7) << 4) | (h.opcode & 0x0f);
    let mask_bit = if h.mask.is_some() { 0x80 } else { 0 };
    let mut n = if h.payload_len < 126 {
        out[1] = mask_bit | h.payload_len as u8;
        2
    } else if h.payload_len <= u64::from(u16::MAX) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(h.payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&h.payload_len.to_be_bytes());
        10
    };
    if let Some(key) = h.mask {
        out[n..n + 4].copy_from_slice(&key);
        n += 4;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn length_forms() {
        let mut out = [0u8; MAX_HEADER_LEN];
        for (len, expect_n) in [(0u64, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let h = FrameHeader {
                fin: true,
                rsv: 0,
                opcode: 1,
                mask: None,
                payload_len: len,
            };
            let n = encode_header(&h, &mut out);
            assert_eq!(n, expect_n, "len {len}");
            assert_eq!(parse_header(&out[..n]).unwrap(), Some((h, n)));
        }
    }

    #[test]
    fn top_bit_length_is_rejected() {
        let buf = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse_header(&buf), Err(HeaderError::LengthTopBit));
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let buf = [0x82, 0xFF, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3, 4];
        for cut in 0..buf.len() {
            assert_eq!(parse_header(&buf[..cut]), Ok(None), "cut {cut}");
        }
        assert!(parse_header(&buf).unwrap().is_some());
    }

    proptest! {
        #[test]
        fn round_trip(fin: bool, rsv in 0u8..8, opcode in 0u8..16, mask: Option<[u8; 4]>, len in 0u64..(1 << 63)) {
            let h = FrameHeader { fin, rsv, opcode, mask, payload_len: len };
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&h, &mut out);
            prop_assert_eq!(parse_header(&out[..n]).unwrap(), Some((h, n)));
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = parse_header(&data);
        }
    }
}
