//! The first step of a tokio accept loop: take a connection from the
//! listener and admit it through the [`Gate`], or refuse it on the spot.
//!
//! Owns what every tokio server of ours did alike before spawning anything
//! (`wsline echo --runtime tokio`, the hub, the library's own examples):
//! the gate's caps with their 503 written without a task, `TCP_NODELAY`,
//! and riding out accept errors (a connection reset before it was taken is
//! skipped; running out of descriptors pauses accepting briefly instead of
//! spinning). The reactor accepts on its own loop with the same rules
//! ([`is_transient_accept_error`], [`crate::Refusal`]). It does not own the
//! handshake, the task per connection or shutdown.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::{Gate, Handshake, Refusal};

/// How long accepting pauses after an error such as running out of
/// descriptors, so that open connections keep being served.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What [`Acceptor::accept`] took from the listener.
#[derive(Debug)]
pub enum Accepted {
    /// A connection admitted into its opening handshake, holding its
    /// handshake slot (`handshake`; turn it into an open-connection slot
    /// with [`Handshake::open`] once the request is read).
    Admitted {
        /// The connection (`TCP_NODELAY` set).
        tcp: TcpStream,
        /// The client's address.
        peer: SocketAddr,
        /// The gate's permit.
        handshake: Handshake,
    },
    /// A connection past one of the gate's caps: it was answered 503
    /// (`Retry-After: 1`) and closed already, without a task.
    Refused {
        /// The client's address.
        peer: SocketAddr,
        /// Which cap.
        refusal: Refusal,
    },
}

/// A listener and the gate its connections go through.
///
/// ```no_run
/// use wsline::{Accepted, Acceptor, Gate, ServerConfig};
/// # async fn demo() -> std::io::Result<()> {
/// let config = ServerConfig::default();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let acceptor = Acceptor::new(listener, Gate::new(config.limits));
/// loop {
///     let Accepted::Admitted { tcp, handshake, .. } = acceptor.accept().await else {
///         continue; // refused: already answered 503
///     };
///     let config = config.clone();
///     tokio::spawn(async move {
///         let mut open = None;
///         let accepted = wsline::accept_with(tcp, &config, |_| {
///             open = Some(handshake.open().map_err(|r| r.response())?);
///             Ok(wsline::Acceptance::default())
///         });
///         let Ok(mut ws) = accepted.await else { return };
///         while let Some(Ok(msg)) = ws.recv().await {
///             if ws.send(msg).await.is_err() { break }
///         }
///     });
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    gate: Gate,
}

impl Acceptor {
    /// Accepts from `listener` through `gate`.
    pub fn new(listener: TcpListener, gate: Gate) -> Self {
        Self { listener, gate }
    }

    /// The gate (for its counts).
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The listening address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, admitted or already refused. Errors are ridden
    /// out here (see the module docs), so this only waits. Cancellation
    /// safe: a connection is only taken when it is returned.
    pub async fn accept(&self) -> Accepted {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(a) => a,
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    tracing::warn!("accept failed: {e}; pausing {ACCEPT_BACKOFF:?}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            return match self.gate.admit(peer.ip()) {
                Ok(handshake) => {
                    let _ = tcp.set_nodelay(true);
                    tracing::trace!(%peer, "accepted");
                    Accepted::Admitted {
                        tcp,
                        peer,
                        handshake,
                    }
                }
                Err(refusal) => {
                    tracing::debug!(%peer, "refused: {refusal}");
                    refusal.refuse_now(tcp);
                    Accepted::Refused { peer, refusal }
                }
            };
        }
    }
}

/// An accept error that concerns one connection only (it was reset or
/// aborted before it was taken, or a signal interrupted the call): skip it
/// and accept the next at once.
pub(crate) fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn admits_within_the_caps_and_answers_503_past_them() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_handshakes: 1,
            ..Limits::default()
        };
        let acceptor = Acceptor::new(listener, Gate::new(limits));
        let _first = TcpStream::connect(addr).await.unwrap();
        let held = match acceptor.accept().await {
            Accepted::Admitted { tcp, handshake, .. } => {
                assert!(tcp.nodelay().unwrap());
                (tcp, handshake)
            }
            other => panic!("{other:?}"),
        };
        let mut second = TcpStream::connect(addr).await.unwrap();
        match acceptor.accept().await {
            Accepted::Refused { refusal, .. } => assert_eq!(refusal, Refusal::Handshakes(1)),
            other => panic!("{other:?}"),
        }
        let mut answer = Vec::new();
        second.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
        assert_eq!(acceptor.gate().stats().refused, 1);
        drop(held);
        assert_eq!(acceptor.gate().stats().handshakes, 0);
    }
}
