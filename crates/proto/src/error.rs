//! Errors of the protocol core: one variant per RFC violation a peer can
//! commit, and the errors a local caller can get when sending.
//!
//! A peer's violation never surfaces as a Rust error from `receive_data`:
//! the connection is *failed* with the matching close code, and the
//! violation is recorded in the [`crate::Termination`].

use crate::close::CloseCode;

/// A protocol violation by the peer, or a limit it exceeded.
///
/// [`ProtocolError::close_code`] is the code the connection is failed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A client sent a frame without masking it (§5.1).
    #[error("client frame is not masked")]
    UnmaskedFrameFromClient,
    /// A server sent a masked frame (§5.1).
    #[error("server frame is masked")]
    MaskedFrameFromServer,
    /// RSV bits set that no negotiated extension defines (§5.2).
    #[error("reserved bits {0:#05b} set without a negotiated extension")]
    ReservedBits(u8),
    /// A reserved opcode (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A 64-bit length with the most significant bit set (§5.2).
    #[error("invalid 64-bit payload length")]
    InvalidLength,
    /// A control frame with FIN clear (§5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame payload over 125 bytes (§5.5).
    #[error("control frame payload of {0} bytes (limit 125)")]
    ControlFrameTooBig(u64),
    /// A continuation frame with no message to continue (§5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new data frame in the middle of a fragmented message (§5.4).
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A frame larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooBig {
        /// The frame's payload length.
        size: u64,
        /// The configured maximum frame size.
        limit: usize,
    },
    /// A message larger than the configured limit.
    #[error("message exceeds the limit of {limit} bytes")]
    MessageTooBig {
        /// The configured maximum message size.
        limit: usize,
    },
    /// A text message that is not valid UTF-8 (§8.1).
    #[error("invalid UTF-8 in text message")]
    InvalidUtf8,
    /// A Close frame with a one-byte payload (§5.5.1).
    #[error("close frame payload of 1 byte")]
    CloseFrameTooShort,
    /// A close code that must not appear on the wire (§7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close reason that is not valid UTF-8 (§5.5.1).
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    /// A compressed message that could not be inflated (RFC 7692).
    #[error("compressed data is invalid: {0}")]
    Compression(String),
}

impl ProtocolError {
    /// The close code the connection is failed with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::FrameTooBig { .. } | Self::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::InvalidUtf8 | Self::InvalidCloseReason | Self::Compression(_) => {
                CloseCode::INVALID_PAYLOAD
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Why a message, ping or close could not be queued for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A Close frame was already sent: no more data may follow (§5.5.1).
    #[error("the connection is closing: no more messages can be sent")]
    Closing,
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
    /// A ping or pong payload over 125 bytes.
    #[error("control frame payload of {0} bytes is over the limit of 125")]
    ControlFrameTooBig(usize),
    /// A close reason over 123 bytes.
    #[error("close reason of {0} bytes is over the limit of 123")]
    ReasonTooLong(usize),
    /// A pre-encoded (unmasked) frame given to a client connection.
    #[error("a client must mask every frame: pre-encoded frames are for servers only")]
    MaskRequired,
    /// A close code that must not be sent (1005, 1006, 1015).
    #[error("close code {0} is for reporting only and cannot be sent")]
    UnsendableCode(CloseCode),
}
