//! Frames on the wire (RFC 6455 §5.2): opcodes, the frame header, masking.
//!
//! Owns the byte layout of one frame header and the masking transform. It
//! knows nothing of messages, fragmentation state or limits; the connection
//! applies those rules to the headers this module decodes.

mod header;
mod mask;
mod opcode;

pub use header::{encode_header, parse_header, FrameHeader, HeaderError, MAX_HEADER_LEN};
pub use mask::{apply_mask, apply_mask_simple, extend_masked};
pub use opcode::OpCode;

/// Encodes a complete, unmasked, uncompressed frame as a server sends it:
/// for messages framed once and sent to many connections
/// ([`crate::Connection::send_encoded`]).
///
/// ```
/// use wsline_proto::frame::{encode_server_frame, OpCode};
/// assert_eq!(encode_server_frame(OpCode::Text, b"hi"), vec![0x81, 2, b'h', b'i']);
/// ```
pub fn encode_server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: opcode.as_u8(),
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&header, &mut head);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
    out
}
