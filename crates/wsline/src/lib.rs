//! WebSocket client and server for tokio (RFC 6455), on the sans-IO
//! [`wsline_proto`] core.
//!
//! - [`accept`] / [`accept_with`]: the server side of the handshake over
//!   any stream (plain TCP, or TLS from `tokio-rustls`).
//! - [`connect`] / [`connect_with`]: `ws://` and `wss://` clients.
//! - [`WebSocket`]: the open connection: `recv`, `send`, `close`, a
//!   `Stream` and a `Sink`, and [`WebSocket::split`] into halves.
//! - [`reactor`]: a server loop that runs many connections on one thread
//!   without a task each (for servers that answer what they receive).
//! - [`Gate`] / [`Limits`]: caps on open connections and handshakes in
//!   progress (overall and per address) for a server's accept loop.
//! - `upgrade` / `upgrade_with` (feature `hyper`): a WebSocket from a
//!   request served by hyper 1, with the same checks and timers as
//!   `accept`; `axum::WebSocketUpgrade` (feature `axum`): the same as an
//!   axum 0.8 extractor. docs/library.md shows a server in each.
//!
//! A complete echo server:
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//!     loop {
//!         let (tcp, _) = listener.accept().await?;
//!         tokio::spawn(async move {
//!             let mut ws = wsline::accept(tcp, &Default::default()).await?;
//!             while let Some(msg) = ws.recv().await {
//!                 ws.send(msg?).await?;
//!             }
//!             Ok::<_, wsline::Error>(())
//!         });
//!     }
//! }
//! ```
#![warn(missing_docs, unreachable_pub)]

mod accept;
#[cfg(feature = "axum")]
pub mod axum;
mod client;
mod driver;
mod error;
mod limits;
pub mod reactor;
mod server;
mod split;
pub mod tls;
#[cfg(feature = "hyper")]
mod upgrade;
mod websocket;

pub use accept::{Accepted, Acceptor};
pub use client::{
    connect, connect_with, handshake as client_handshake, ClientConfig, HandshakeResponse,
};
pub use error::Error;
pub use limits::{Connected, Gate, GateStats, Handshake, Limits, Refusal};
pub use server::{
    accept, accept_request, accept_with, read_head, refuse, Acceptance, ServerConfig,
};
pub use split::{WsSink, WsStream};
pub use tls::{MaybeTlsStream, TlsOptions};
#[cfg(feature = "hyper")]
pub use upgrade::{
    upgrade, upgrade_with, HyperWebSocket, UpgradeBody, UpgradeFuture, UpgradeRefused,
};
pub use websocket::WebSocket;

pub use wsline_proto as proto;
pub use wsline_proto::handshake::{Headers, Request, Response};
pub use wsline_proto::{
    CloseCode, CloseFrame, Config, Message, Termination, TerminationKind, Utf8Bytes,
};
