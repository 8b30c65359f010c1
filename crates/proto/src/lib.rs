//! Sans-IO WebSocket protocol (RFC 6455).
//!
//! This crate owns the protocol and nothing else: bytes in, events out;
//! messages in, bytes out. It performs no I/O, spawns nothing, and never
//! reads the clock: every call that may start a timer takes `now`, and
//! [`Connection::poll_timeout`] says when the caller must next call
//! [`Connection::handle_timeout`]. The tokio runtime layer lives in the
//! `wsline` crate.
//!
//! Layout, in the order bytes flow: [`handshake`] (the HTTP/1.1 upgrade),
//! [`frame`] (headers and masking), `utf8` (incremental validation),
//! [`Connection`] (framing rules, closing handshake, timers), [`Message`]
//! (what the application sees).
#![warn(missing_docs, unreachable_pub)]

mod close;
mod connection;
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
mod message;
mod utf8;

pub use close::{CloseCode, CloseFrame, InvalidCloseCode, MAX_CLOSE_REASON};
pub use connection::{Config, Connection, Event, Role, State, Termination, TerminationKind};
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::{ProtocolError, SendError};
pub use message::{Message, NotUtf8, Utf8Bytes};
