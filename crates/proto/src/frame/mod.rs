//! Frames on the wire (RFC 6455 §5.2): opcodes, the frame header, masking.
//!
//! Owns the byte layout of one frame header and the masking transform. It
//! knows nothing of messages, fragmentation state or limits; the connection
//! applies those rules to the headers this module decodes.

mod header;
mod mask;
mod opcode;

pub use header::{encode_header, parse_header, FrameHeader, HeaderError, MAX_HEADER_LEN};
pub use mask::{apply_mask, apply_mask_simple};
pub use opcode::OpCode;
