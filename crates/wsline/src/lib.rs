//! WebSocket client and server for tokio (RFC 6455), on the sans-IO
//! [`wsline_proto`] core.
//!
//! - [`accept`] / [`accept_with`]: the server side of the handshake over
//!   any stream (plain TCP, or TLS from `tokio-rustls`).
//! - [`connect`] / [`connect_with`]: `ws://` and `wss://` clients, directly
//!   or through an HTTP `CONNECT` or SOCKS5 proxy ([`Proxy`],
//!   [`ProxyChoice`]: explicit, or from `HTTPS_PROXY`/`ALL_PROXY`/… as curl
//!   reads them).
//! - [`WebSocket`]: the open connection: `recv`, `send`, `close`, a
//!   `Stream` and a `Sink`, and [`WebSocket::split`] into halves.
//! - `reactor` (feature `reactor`, on by default): a server loop that runs
//!   many connections on one thread without a task each (for servers that
//!   answer what they receive).
//! - [`Gate`] / [`Limits`]: caps on open connections and handshakes in
//!   progress (overall and per address) for a server's accept loop.
//! - `upgrade` / `upgrade_with` (feature `hyper`): a WebSocket from a
//!   request served by hyper 1, with the same checks and timers as
//!   `accept`; `axum::WebSocketUpgrade` (feature `axum`): the same as an
//!   axum 0.8 extractor. docs/library.md shows a server in each.
//! - WebSocket over HTTP/2, RFC 8441 (feature `http2`): `upgrade` and the
//!   extractor answer extended CONNECTs with 200; the client opens
//!   WebSockets as HTTP/2 streams ([`HttpVersion`], `h2::Connection` for
//!   several on one connection).
//!
//! Cargo features: `tls` (on by default: `wss://` clients with rustls,
//! `tls::server_config`), `reactor` (on by default), `hyper`, `axum`,
//! `http2` (RFC 8441 on both sides; adds the h2 crate and `tokio/rt`). With
//! `default-features = false` the library is plain `ws://` and `accept`
//! over any stream, and asks tokio only for `net`, `io-util` and `time`.
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
//!
//! # Proxies
//!
//! A client reaches its server directly unless
//! [`ClientConfig::proxy`] says otherwise: an HTTP proxy (`CONNECT`, with
//! Basic credentials) or SOCKS5 (none or username/password), set
//! explicitly ([`ProxyChoice::Use`]) or read from the environment as curl
//! reads it ([`ProxyChoice::FromEnv`]: `HTTPS_PROXY`, `http_proxy`,
//! `ALL_PROXY`, `NO_PROXY`), which the library never does unless asked.
//! For `wss://`, TLS runs with the server's name inside the tunnel.
//! Failures are [`Error::Proxy`] with a [`ProxyError`] that says what to do.
//!
//! ```
//! use wsline::{ClientConfig, NoProxy, Proxy, ProxyChoice};
//!
//! // An explicit proxy, credentials percent-decoded from the URL.
//! let proxy: Proxy = "socks5h://alice:p%40ss@proxy.example:1080".parse()?;
//! assert_eq!(proxy.username(), Some("alice"));
//! assert_eq!(proxy.password(), Some("p@ss"));
//! // The password never shows in messages.
//! assert_eq!(proxy.to_string(), "socks5h://alice:***@proxy.example:1080");
//!
//! let mut config = ClientConfig::default();
//! config.proxy = ProxyChoice::Use(proxy);
//! // Hosts that always go direct, in NO_PROXY's syntax.
//! config.no_proxy = Some(NoProxy::parse("localhost, .internal.example, 10.0.0.0/8"));
//! assert!(config.no_proxy.as_ref().unwrap().matches("db.internal.example"));
//!
//! // Or, as curl does: HTTPS_PROXY / http_proxy / ALL_PROXY and NO_PROXY.
//! config.proxy = ProxyChoice::FromEnv;
//! config.no_proxy = None;
//! # Ok::<(), wsline::Error>(())
//! ```
//!
//! Connecting through it is the usual call:
//!
//! ```no_run
//! # async fn demo() -> Result<(), wsline::Error> {
//! let mut config = wsline::ClientConfig::default();
//! config.proxy = "http://user:secret@127.0.0.1:3128".parse::<wsline::Proxy>()?.into();
//! let (mut ws, _) = wsline::connect_with("wss://echo.example/chat", &config).await?;
//! ws.send("hi".into()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

mod accept;
#[cfg(feature = "axum")]
pub mod axum;
mod client;
mod driver;
mod error;
#[cfg(feature = "http2")]
pub mod h2;
mod limits;
mod proxy;
#[cfg(feature = "reactor")]
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
    HttpVersion,
};
pub use driver::{shutdown_grace, SHUTDOWN_CLOSE};
pub use error::Error;
pub use limits::{Connected, Gate, GateStats, Handshake, Limits, Refusal};
pub use proxy::{NoProxy, Proxy, ProxyChoice, ProxyError, ProxyScheme, DEFAULT_PROXY_PORT};
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
