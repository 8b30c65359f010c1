//! Close codes and close frames (RFC 6455 §5.5.1, §7.4).
//!
//! Owns which codes exist, which may appear on the wire, and how a close
//! payload is encoded and decoded. It does not own the closing handshake:
//! that is the connection's job.

use std::fmt;

/// A WebSocket close status code (RFC 6455 §7.4).
///
/// Holds a code from the registered range 1000–1015 or the application
/// range 3000–4999. Use [`CloseCode::is_sendable`] to know whether a code
/// may appear in a Close frame on the wire (1005, 1006 and 1015 are reserved
/// for reporting and must never be sent).
///
/// ```
/// use wsline_proto::CloseCode;
/// assert_eq!(CloseCode::NORMAL.as_u16(), 1000);
/// assert!(CloseCode::new(4000).unwrap().is_sendable());
/// assert!(!CloseCode::ABNORMAL.is_sendable());
/// assert!(CloseCode::new(2000).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

/// The error for a number that is not a WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a WebSocket close code: use 1000-1015 or 3000-4999")]
pub struct InvalidCloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present (reporting only, never sent).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection ended without a Close frame (reporting only, never sent).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: payload data inconsistent with the message type (e.g. invalid UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: policy violation.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: an unexpected condition on the server (also used for keepalive timeouts).
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: service restart.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: bad gateway.
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: TLS handshake failure (reporting only, never sent).
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// A close code from its number: 1000–1015 or 3000–4999.
    pub fn new(code: u16) -> Result<Self, InvalidCloseCode> {
        match code {
            1000..=1015 | 3000..=4999 => Ok(Self(code)),
            _ => Err(InvalidCloseCode(code)),
        }
    }

    /// The code as a number.
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether this code may appear in a Close frame on the wire.
    ///
    /// False for 1004 (reserved), 1005, 1006 and 1015 (reporting only).
    pub fn is_sendable(self) -> bool {
        Self::is_valid_on_wire(self.0)
    }

    /// Whether a code received in a Close frame is acceptable (RFC 6455 §7.4.1,
    /// plus the IANA registrations 1012–1014).
    pub fn is_valid_on_wire(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u16> for CloseCode {
    type Error = InvalidCloseCode;
    fn try_from(code: u16) -> Result<Self, Self::Error> {
        Self::new(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

/// The maximum length of a close reason in bytes (125 minus the 2-byte code).
pub const MAX_CLOSE_REASON: usize = 123;

/// The content of a Close frame: a code and a UTF-8 reason of at most 123 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, possibly empty.
    pub reason: String,
}

impl CloseFrame {
    /// A close frame; the reason is not checked here (see [`crate::Connection::close`]).
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.code.as_u16().to_be_bytes());
        out.extend_from_slice(self.reason.as_bytes());
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.reason)
        }
    }
}
