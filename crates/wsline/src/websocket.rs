//! [`WebSocket`]: one open connection over any tokio byte stream.
//!
//! Owns the loop that moves bytes between the transport and the sans-IO
//! [`Connection`]: reading, writing, the timer the core asks for, and
//! closing the transport when the core says so. It does not own the
//! opening handshake ([`crate::accept`], [`crate::connect`]).
//!
//! Everything runs inside the caller's task when it polls: there is no
//! background task and no channel hop per message. Replies are coalesced:
//! messages queued while more input is already parsed are written in one
//! go before the next read.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use wsline_proto::frame::MAX_HEADER_LEN;
use wsline_proto::{CloseCode, Connection, Event, Message, Role, Termination};

use crate::driver::{Driver, Timeouts};
use crate::Error;

/// Output above this many bytes makes `feed` and `poll_ready` write first.
const WRITE_HIGH_WATER: usize = 128 * 1024;
/// The size of the per-thread read buffer.
const READ_CHUNK: usize = 64 * 1024;
/// A message at least this big goes to the transport straight from its own
/// bytes in [`WebSocket::write_message`] (below, copying it into the
/// output buffer costs more than the extra write call).
const DIRECT_WRITE_MIN: usize = 16 * 1024;
/// A frame with at least this much payload still to come is read straight
/// into the connection's buffer instead of through the per-thread scratch.
const DIRECT_READ_MIN: usize = 16 * 1024;
/// The most one such read reserves.
const DIRECT_READ_MAX: usize = 256 * 1024;
/// Most frames [`WebSocket::write_encoded`] hands one vectored write.
const MAX_IOV: usize = 64;

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A WebSocket connection after the opening handshake.
///
/// Read with [`WebSocket::recv`] (or as a [`Stream`]), write with
/// [`WebSocket::send`] (or as a [`Sink`]), end with [`WebSocket::close`].
/// Pings are answered and keepalive runs while the connection is being
/// read; [`WebSocket::split`] gives halves for separate tasks.
///
/// The stream ends (`None`) after a normal close (1000, 1001 or no code,
/// [`Termination::is_normal`]);
/// any other end yields one [`Error::Closed`] first. Either way
/// [`WebSocket::termination`] then says how it ended.
///
/// ```no_run
/// # async fn demo() -> Result<(), wsline::Error> {
/// let (mut ws, _response) = wsline::connect("ws://127.0.0.1:9001/").await?;
/// ws.send(wsline::Message::text("hello")).await?;
/// if let Some(reply) = ws.recv().await {
///     println!("{:?}", reply?);
/// }
/// ws.close(wsline::CloseCode::NORMAL, "bye").await?;
/// # Ok(()) }
/// ```
pub struct WebSocket<S> {
    io: S,
    /// The core and the transport timers (write stall, idle, finish).
    driver: Driver,
    timeouts: Timeouts,
    protocol: Option<String>,
    /// The readers' timer, for every deadline but the write stall's.
    /// Created on the first deadline: a connection without keepalive or
    /// closing timers holds no timer entry.
    timer: Option<Pin<Box<Sleep>>>,
    timer_deadline: Option<Instant>,
    /// The writers' timer, for the write stall; created at the first
    /// stall. (Readers and writers may be two tasks: each has its own.)
    stall_timer: Option<Pin<Box<Sleep>>>,
    termination: Option<Box<Termination>>,
    transport_closed: bool,
    end_reported: bool,
    io_error: Option<std::io::ErrorKind>,
    write_wakers: Option<Arc<WakerSet>>,
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("role", &self.driver.conn.role())
            .field("state", &self.driver.conn.state())
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream whose opening handshake is complete. `leftover` holds
    /// bytes read past the handshake (the first frames, if the peer sent
    /// them early).
    pub fn from_parts(io: S, conn: Connection, leftover: &[u8], protocol: Option<String>) -> Self {
        let now = now();
        let mut ws = Self {
            io,
            driver: Driver::new(conn, Timeouts::default(), now),
            timeouts: Timeouts::default(),
            protocol,
            timer: None,
            timer_deadline: None,
            stall_timer: None,
            termination: None,
            transport_closed: false,
            end_reported: false,
            io_error: None,
            write_wakers: None,
        };
        if !leftover.is_empty() {
            ws.driver.receive(leftover, now);
        }
        ws
    }

    /// Fails the connection when output is waiting and the transport
    /// takes no byte of it for `timeout` (a peer that stopped reading):
    /// the pending `send`/`flush` returns [`Error::WriteTimeout`], and so
    /// does `recv` once, then the connection is over and the transport is
    /// dropped without further writes. `None` (the default of
    /// [`WebSocket::from_parts`]) waits forever; [`crate::accept`] sets
    /// [`crate::ServerConfig::write_timeout`] (default 30 s).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.timeouts.write = timeout;
        self.driver.progressed();
    }

    /// Starts the closing handshake with 1001 "idle timeout" when no
    /// message arrives from the peer for `timeout` (Pings and Pongs do not
    /// count: keepalive is separate). `None` (the default) never does;
    /// [`crate::accept`] sets [`crate::ServerConfig::idle_timeout`].
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.timeouts.idle = timeout;
        self.driver.set_idle(self.timeouts, now());
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The sans-IO connection underneath (state, configuration).
    pub fn connection(&self) -> &Connection {
        &self.driver.conn
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// How the connection ended, once it has.
    pub fn termination(&self) -> Option<&Termination> {
        self.termination.as_deref()
    }

    /// The next message, or `None` after a normal close. Answers pings,
    /// runs keepalive and the closing handshake while it waits, and writes
    /// any queued output before blocking. Cancellation safe: a message is
    /// only taken when it is returned.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Queues a message and writes everything queued.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message without waiting for it to be written (it is written
    /// by the next `flush`, `send`, or `recv` that would otherwise wait).
    /// Waits only when much output is already queued.
    pub async fn feed(&mut self, message: Message) -> Result<(), Error> {
        if self.driver.conn.output().len() >= WRITE_HIGH_WATER {
            poll_fn(|cx| self.poll_write_out(cx)).await?;
        }
        self.driver.conn.send(&message)?;
        Ok(())
    }

    /// Queues a frame encoded once for many connections
    /// (`wsline_proto::frame::encode_server_frame`), servers only. It is
    /// written by the next `flush`, `send`, or `recv` that would wait.
    pub fn queue_encoded(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.driver.conn.send_encoded(frame).map_err(Error::from)
    }

    /// Sends frames encoded once for many connections (as
    /// [`WebSocket::queue_encoded`], servers only) without copying them
    /// when it can: while nothing else is queued, they go to the transport
    /// straight from the caller's buffers, up to 64 in one vectored write;
    /// whatever the transport does not take now is queued as by
    /// `queue_encoded` and written by the next `flush`, `send`, or `recv`
    /// (which also report a transport error). The bytes on the wire are
    /// the same as with `queue_encoded` per frame. `cx` is woken when the
    /// transport can take more.
    pub fn write_encoded<B: AsRef<[u8]>>(
        &mut self,
        cx: &mut Context<'_>,
        frames: &[B],
    ) -> Result<(), Error> {
        let mut rest = frames;
        while !rest.is_empty()
            && self.driver.conn.output_len() == 0
            && self.driver.conn.role() == Role::Server
            && self.driver.conn.can_send()
            && self.io_error.is_none()
        {
            let n = rest.len().min(MAX_IOV);
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            for (slice, frame) in slices.iter_mut().zip(&rest[..n]) {
                *slice = IoSlice::new(frame.as_ref());
            }
            let written = match &self.write_wakers {
                Some(set) => {
                    set.register(cx.waker());
                    let proxy = Waker::from(set.clone());
                    Pin::new(&mut self.io)
                        .poll_write_vectored(&mut Context::from_waker(&proxy), &slices[..n])
                }
                None => Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]),
            };
            let mut written = match written {
                Poll::Ready(Ok(w)) if w > 0 => w,
                // Not now, or an error the buffered path will report.
                _ => break,
            };
            self.driver.progressed();
            while written > 0 {
                let Some(frame) = rest.first().map(AsRef::as_ref) else {
                    break;
                };
                rest = &rest[1..];
                if written >= frame.len() {
                    written -= frame.len();
                } else {
                    // The transport took part of this frame: queue its tail.
                    self.driver.conn.send_encoded(&frame[written..])?;
                    written = 0;
                }
            }
        }
        for frame in rest {
            self.driver.conn.send_encoded(frame.as_ref())?;
        }
        Ok(())
    }

    /// Queues `message` as [`Sink::start_send`] does, except that a large
    /// message (16 KiB or more) from a server with nothing else queued and
    /// no compression for it is written at once straight from the
    /// message's own bytes (header and payload in one vectored write)
    /// instead of being copied into the output buffer; only what the
    /// transport does not take is queued. The bytes on the wire are the
    /// same. Apply backpressure first (e.g. [`Sink::poll_ready`]); `cx` is
    /// woken when the transport can take more.
    pub fn write_message(&mut self, cx: &mut Context<'_>, message: Message) -> Result<(), Error> {
        let payload: &[u8] = match &message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        };
        if payload.len() >= DIRECT_WRITE_MIN {
            let mut head = [0u8; MAX_HEADER_LEN];
            if let Some(n) = self.driver.conn.direct_frame_header(&message, &mut head) {
                return self.write_encoded(cx, &[&head[..n], payload]);
            }
        }
        self.queue(&message)
    }

    /// Bytes queued and not yet written to the transport.
    pub fn buffered_output(&self) -> usize {
        self.driver.conn.output_len()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_write_out(cx)).await
    }

    /// Sends a Ping with `payload` (at most 125 bytes).
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.driver.conn.send_ping(payload)?;
        self.flush().await
    }

    /// Starts the closing handshake after everything already queued, and
    /// waits for it to finish (messages arriving meanwhile are dropped),
    /// up to the close timeout. Returns how the connection ended.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<Termination, Error> {
        self.start_close(code, reason)?;
        loop {
            match self.recv().await {
                Some(Ok(_)) => continue,
                Some(Err(Error::Closed(t))) => return Ok(*t),
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        self.termination
            .as_deref()
            .cloned()
            .ok_or_else(|| Error::Io(std::io::ErrorKind::UnexpectedEof.into()))
    }

    /// Queues a Close frame without waiting; the reading side (`recv`, or
    /// the read half) completes the handshake.
    pub fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        match self.driver.conn.close(code, reason, now()) {
            Ok(()) => Ok(()),
            Err(wsline_proto::SendError::Closed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Splits into a write half and a read half for use from two tasks.
    ///
    /// Keepalive and the closing handshake run while the read half is read.
    pub fn split(self) -> (crate::WsSink<S>, crate::WsStream<S>) {
        crate::split::split(self)
    }

    pub(crate) fn share_write_wakers(&mut self) {
        self.write_wakers = Some(Arc::new(WakerSet::default()));
    }

    /// Polls for the next message (the body of [`WebSocket::recv`]).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        loop {
            while let Some(event) = self.driver.poll_event(now) {
                match event {
                    Event::Message(m) => return Poll::Ready(Some(Ok(m))),
                    Event::Ping(_) | Event::Pong(_) => {}
                    Event::Closed(t) => self.termination = Some(t),
                }
            }
            if self.driver.conn.wants_transport_close() {
                return self.poll_finish(cx);
            }
            // Write replies and queued messages before waiting for input.
            if let Poll::Ready(Err(e)) = self.poll_write_out(cx) {
                self.on_io_error(e);
                continue;
            }
            if self.poll_timer(cx) {
                continue;
            }
            if !self.driver.conn.wants_read() {
                return Poll::Pending;
            }
            // Reading never waits for our own output to drain: two peers
            // each writing a large message while the other waits would
            // deadlock. What reading adds to the output is bounded in the
            // core (one Close reply; Pongs are held back and coalesced
            // while output is backed up); what the application adds is
            // bounded by `poll_ready`/`feed` backpressure.
            match read_into_connection(&mut self.io, cx, &mut self.driver.conn) {
                Poll::Ready(Ok(0)) => self.driver.receive_eof(now()),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.io_error = Some(e.kind());
                    self.driver.fail_transport(now());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn on_io_error(&mut self, e: Error) {
        if let Error::Io(io) = &e {
            self.io_error = Some(io.kind());
        }
        // The transport is unusable: nothing more can be written or read.
        self.driver.fail_transport(now());
    }

    /// Fires the driver's timers (the core's, the idle timeout, the finish
    /// deadline) when due; true if one fired.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.driver.poll_timeout_except_stall(self.timeouts) else {
            self.timer_deadline = None;
            return false;
        };
        let now = now();
        if deadline <= now {
            self.handle_timeout(now);
            return true;
        }
        if self.timer_deadline != Some(deadline) {
            self.timer_deadline = Some(deadline);
            self.arm_timer(deadline);
        }
        if self
            .timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
        {
            self.handle_timeout(self.timer_deadline.unwrap_or(now).max(now));
            self.timer_deadline = None;
            return true;
        }
        false
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.driver.handle_timeout(now, self.timeouts).write_stall {
            self.io_error = Some(std::io::ErrorKind::TimedOut);
        }
    }

    /// The connection is over: write what is left, close the transport,
    /// report the end once.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if !self.transport_closed {
            if self.io_error.is_none() && !self.driver.is_failed() {
                // Best effort: a peer that stopped reading cannot hold us.
                if self.poll_write_out(cx).is_pending() && !self.timer_expired_for_finish(cx) {
                    return Poll::Pending;
                }
                if Pin::new(&mut self.io).poll_shutdown(cx).is_pending()
                    && !self.timer_expired_for_finish(cx)
                {
                    return Poll::Pending;
                }
            }
            self.transport_closed = true;
        }
        if self.end_reported {
            return Poll::Ready(None);
        }
        self.end_reported = true;
        if self.driver.write_timed_out() {
            let timeout = self.timeouts.write.unwrap_or_default();
            return Poll::Ready(Some(Err(Error::WriteTimeout(timeout))));
        }
        match &self.termination {
            Some(t) if t.is_normal() => Poll::Ready(None),
            Some(t) => Poll::Ready(Some(Err(Error::Closed(t.clone())))),
            None => Poll::Ready(None),
        }
    }

    /// While finishing, writes are bounded by the close timeout.
    fn timer_expired_for_finish(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.driver.finish_deadline(now());
        if self.timer_deadline != Some(deadline) {
            self.timer_deadline = Some(deadline);
            self.arm_timer(deadline);
        }
        self.timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }

    /// Sets the timer to `deadline`, creating it the first time.
    fn arm_timer(&mut self, deadline: Instant) {
        let at = tokio::time::Instant::from_std(deadline);
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Writes all queued output and flushes the stream.
    pub(crate) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self.write_wakers.clone() {
            Some(set) => {
                set.register(cx.waker());
                let proxy = Waker::from(set);
                self.poll_write_inner(&mut Context::from_waker(&proxy))
            }
            None => self.poll_write_inner(cx),
        }
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.driver.write_timed_out() {
            return self.write_stalled();
        }
        while !self.driver.conn.output().is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, self.driver.conn.output()) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => self.driver.wrote(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return self.poll_stall(cx),
            }
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.poll_stall(cx),
            ready => ready.map_err(Error::from),
        }
    }

    /// The transport takes nothing: pending until the write stall runs out.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let now = now();
        self.driver.write_blocked(now);
        let Some(deadline) = self.driver.stall_deadline(self.timeouts) else {
            return Poll::Pending;
        };
        let at = tokio::time::Instant::from_std(deadline);
        let timer = self
            .stall_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if !self.driver.check_stall(now.max(deadline), self.timeouts) {
            return Poll::Pending;
        }
        // Nothing more is written or read: the peer stopped reading.
        self.io_error = Some(std::io::ErrorKind::TimedOut);
        self.write_stalled()
    }

    fn write_stalled(&self) -> Poll<Result<(), Error>> {
        let timeout = self.timeouts.write.unwrap_or_default();
        Poll::Ready(Err(Error::WriteTimeout(timeout)))
    }

    /// Sink readiness: writes first when much output is queued.
    pub(crate) fn poll_ready_to_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if let Some(t) = &self.termination {
            return Poll::Ready(Err(Error::Closed(t.clone())));
        }
        if self.driver.conn.output().len() >= WRITE_HIGH_WATER {
            ready!(self.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn queue(&mut self, message: &Message) -> Result<(), Error> {
        self.driver.conn.send(message).map_err(Error::from)
    }
}

thread_local! {
    /// One read buffer per thread, shared by every connection the thread
    /// polls (as uWebSockets keeps one per event loop): an idle connection
    /// holds no read buffer, only a partial frame when one is in flight.
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// Reads what the transport has into the thread's scratch buffer and hands
/// it to the connection, which keeps only an incomplete frame.
fn read_into_connection<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    conn: &mut Connection,
) -> Poll<std::io::Result<usize>> {
    let wanted = conn.frame_bytes_wanted();
    if wanted >= DIRECT_READ_MIN {
        // The rest of a large frame: straight into the connection's buffer.
        let buf = conn.read_buffer();
        buf.reserve(wanted.min(DIRECT_READ_MAX));
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, buf))?;
        if n > 0 {
            conn.process(now());
        }
        return Poll::Ready(Ok(n));
    }
    READ_SCRATCH.with(|scratch| {
        // A poll never re-enters another poll on the same thread, but be
        // safe: fall back to a temporary buffer if the scratch is in use.
        let mut fallback;
        let mut borrowed = scratch.try_borrow_mut();
        let buf: &mut [u8] = match &mut borrowed {
            Ok(b) => b,
            Err(_) => {
                fallback = vec![0u8; READ_CHUNK];
                &mut fallback
            }
        };
        let mut read_buf = ReadBuf::new(buf);
        ready!(Pin::new(io).poll_read(cx, &mut read_buf))?;
        let n = read_buf.filled().len();
        if n > 0 {
            conn.receive_data(read_buf.filled(), now());
        }
        Poll::Ready(Ok(n))
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_ready_to_send(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.get_mut().queue(&item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_write_out(cx)
    }

    /// Sends Close 1000 and drives the closing handshake to its end.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        this.start_close(CloseCode::NORMAL, "")?;
        loop {
            match ready!(this.poll_recv(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(Error::Closed(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Wakers of every task waiting for the transport to accept writes: the
/// read half writes Pongs and Close replies, the write half writes
/// messages, and a stream keeps only one write waker.
#[derive(Default)]
pub(crate) struct WakerSet {
    wakers: Mutex<Vec<Waker>>,
}

impl WakerSet {
    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }
}

impl Wake for WakerSet {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }
}
