//! Read and write halves of a [`WebSocket`] for use from separate tasks.
//!
//! Owns the sharing: both halves lock the same connection for the length
//! of one poll (never across an await), and tasks waiting to write are all
//! woken when the transport can take more. The read half also runs the
//! keepalive timers and answers pings.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use wsline_proto::{CloseCode, Message, Termination};

use crate::{Error, WebSocket};

struct Shared<S> {
    ws: WebSocket<S>,
    /// The read half's waker, woken when the write half starts closing so
    /// that it re-arms its timer for the close timeout.
    reader: Option<Waker>,
}

fn lock<S>(m: &Mutex<Shared<S>>) -> MutexGuard<'_, Shared<S>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn split<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
) -> (WsSink<S>, WsStream<S>) {
    ws.share_write_wakers();
    let shared = Arc::new(Mutex::new(Shared { ws, reader: None }));
    (
        WsSink {
            shared: shared.clone(),
        },
        WsStream { shared },
    )
}

/// The write half of a split [`WebSocket`]: a [`Sink`] of messages.
pub struct WsSink<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

/// The read half of a split [`WebSocket`]: a [`Stream`] of messages.
///
/// Read it continuously: pings are answered, keepalive runs and the
/// closing handshake completes while it is polled.
pub struct WsStream<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsSink<S> {
    /// Queues a message and writes everything queued.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        std::future::poll_fn(|cx| lock(&self.shared).ws.poll_ready_to_send(cx)).await?;
        lock(&self.shared).ws.queue(&message)?;
        self.flush().await
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| lock(&self.shared).ws.poll_write_out(cx)).await
    }

    /// Queues a Close frame and writes it; the read half sees the end.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        {
            let mut shared = lock(&self.shared);
            shared.ws.start_close(code, reason)?;
            if let Some(w) = shared.reader.take() {
                w.wake();
            }
        }
        self.flush().await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// The next message, as [`WebSocket::recv`].
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        let mut shared = lock(&self.shared);
        shared.reader = Some(cx.waker().clone());
        shared.ws.poll_recv(cx)
    }

    /// How the connection ended, once it has.
    pub fn termination(&self) -> Option<Termination> {
        lock(&self.shared).ws.termination().cloned()
    }

    /// Whether `sink` is the other half of this stream.
    pub fn is_pair_of(&self, sink: &WsSink<S>) -> bool {
        Arc::ptr_eq(&self.shared, &sink.shared)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsStream<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WsSink<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(&self.shared).ws.poll_ready_to_send(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        lock(&self.shared).ws.queue(&item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(&self.shared).ws.poll_write_out(cx)
    }

    /// Queues Close 1000 and writes it; the read half sees the end.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut shared = lock(&self.shared);
        shared.ws.start_close(CloseCode::NORMAL, "")?;
        if let Some(w) = shared.reader.take() {
            w.wake();
        }
        shared.ws.poll_write_out(cx)
    }
}
