//! One connection of the reactor: its socket, its readiness and its phase
//! (handshake, then open), and the turn that moves it along when it is
//! ready or one of its deadlines is due.
//!
//! Owns the per-connection I/O: reading into the loop's shared buffer (the
//! core keeps only a partial frame), writing the core's output straight to
//! the socket, backpressure (no reading while much output waits), the
//! write stall, idle and closing deadlines, and closing the socket.

use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use wsline_proto::frame::MAX_HEADER_LEN;
use wsline_proto::handshake::{parse_request, HandshakeError, Request, Response};
use wsline_proto::{CloseCode, Connection, Event, Message};

use super::{ConnId, Handler};
use crate::server::{answer_request, Answer};
use crate::{Connected, Error, Gate, Handshake, ServerConfig};

/// Output above this many bytes stops reading from that connection until
/// the socket takes some: a client that sends without reading cannot
/// make the server buffer without bound.
const PAUSE_READING: usize = 128 * 1024;
/// Reads one connection gets per turn before the others get theirs.
const READ_BUDGET: usize = 16;
/// A message at least this big is written straight from its own bytes
/// when nothing else is queued (below, copying it costs less than the
/// extra write call).
const DIRECT_WRITE_MIN: usize = 16 * 1024;

/// What every slot of a loop shares: settings, the gate, the
/// application and the receive buffer.
pub(super) struct Loop<H> {
    pub(super) config: ServerConfig,
    pub(super) gate: Gate,
    pub(super) handler: H,
    /// The loop's receive buffer: every read lands here first.
    pub(super) buf: Box<[u8]>,
    /// Connections that ran out of read budget with input left.
    pub(super) ready: Vec<ConnId>,
}

/// What the loop does with a slot after its turn.
pub(super) enum Step {
    /// Keep it; look at it again at this deadline (or when ready).
    Keep(Option<Instant>),
    /// It is over: close the socket and free the slot.
    Remove,
}

/// One connection.
pub(super) struct Slot {
    stream: TcpStream,
    pub(super) gen: u32,
    /// The socket may have input (edge-triggered: until a read says no).
    pub(super) readable: bool,
    /// The socket may take output (until a write says no).
    pub(super) writable: bool,
    /// The deadline this slot has in the loop's heap, if any.
    pub(super) scheduled: Option<Instant>,
    phase: Phase,
}

enum Phase {
    Handshake(Box<Handshaking>),
    Open(Box<Open>),
    Gone,
}

/// Waiting for the request head.
struct Handshaking {
    permit: Handshake,
    /// A head that arrived in pieces (empty when it comes in one read).
    head: Vec<u8>,
    deadline: Instant,
}

/// After the 101.
struct Open {
    conn: Connection,
    _permit: Connected,
    protocol: Option<String>,
    /// The last message's arrival, kept only with an idle timeout.
    last_message: Option<Instant>,
    /// Output has waited on a full socket since then.
    stalled_since: Option<Instant>,
    /// The connection is over and its last output must be gone by then.
    finish_deadline: Option<Instant>,
    /// The socket failed or stalled: nothing more is read or written.
    failed: bool,
    /// `on_close` was called.
    reported: bool,
}

impl Open {
    /// The socket is unusable: the core ends the connection (1006).
    fn fail(&mut self, now: Instant) {
        self.failed = true;
        self.conn.receive_eof(now);
    }

    fn next_deadline(&self, config: &ServerConfig) -> Option<Instant> {
        [
            self.conn.poll_timeout(),
            self.stalled_since
                .zip(config.write_timeout)
                .map(|(s, t)| s + t),
            self.last_message
                .zip(config.idle_timeout)
                .map(|(l, t)| l + t),
            self.finish_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The connection a [`Handler`] callback is about: send to it, close it.
pub struct Conn<'a> {
    id: ConnId,
    open: &'a mut Open,
    stream: &'a mut TcpStream,
    writable: &'a mut bool,
    now: Instant,
}

impl Conn<'_> {
    /// This connection's id (the one [`Handler::on_close`] gets).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.open.protocol.as_deref()
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn buffered_output(&self) -> usize {
        self.open.conn.output_len()
    }

    /// Queues `message`; it is written when the callback returns, together
    /// with the answers to other messages that arrived in the same read. A
    /// large message with nothing queued before it goes to the socket at
    /// once, straight from its own bytes (the same bytes on the wire).
    /// Fails once the connection is closing.
    pub fn send(&mut self, message: Message) -> Result<(), Error> {
        let payload: &[u8] = match &message {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        };
        if payload.len() >= DIRECT_WRITE_MIN && *self.writable && !self.open.failed {
            let mut head = [0u8; MAX_HEADER_LEN];
            if let Some(n) = self.open.conn.direct_frame_header(&message, &mut head) {
                self.write_direct(&head[..n], payload);
                return Ok(());
            }
        }
        self.open.conn.send(&message).map_err(Error::from)
    }

    /// Header and payload in one vectored write; what the socket does not
    /// take is queued (after `direct_frame_header` said sending is allowed
    /// and nothing is queued, so this cannot fail or overtake).
    fn write_direct(&mut self, head: &[u8], payload: &[u8]) {
        let total = head.len() + payload.len();
        let written = loop {
            match self
                .stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(payload)])
            {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    *self.writable = false;
                    break 0;
                }
                Err(_) => {
                    self.open.fail(self.now);
                    return;
                }
            }
        };
        if written < total {
            if written < head.len() {
                let _ = self.open.conn.send_encoded(&head[written..]);
                let _ = self.open.conn.send_encoded(payload);
            } else {
                let _ = self
                    .open
                    .conn
                    .send_encoded(&payload[written - head.len()..]);
            }
        }
    }

    /// Starts the closing handshake with `code` and `reason`.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.open
            .conn
            .close(code, reason, self.now)
            .map_err(Error::from)
    }
}

/// The request head, as far as it has arrived.
enum Head {
    Complete(Request, Vec<u8>),
    Partial,
    TooLarge,
    Bad(HandshakeError),
}

/// How a handshake turn ended.
enum HandshakeStep {
    Wait(Instant),
    Done,
    Opened,
}

impl Slot {
    /// A connection just accepted, waiting for its request until `deadline`.
    pub(super) fn handshake(
        stream: TcpStream,
        gen: u32,
        permit: Handshake,
        deadline: Instant,
    ) -> Self {
        Self {
            stream,
            gen,
            readable: false,
            writable: false,
            scheduled: None,
            phase: Phase::Handshake(Box::new(Handshaking {
                permit,
                head: Vec::new(),
                deadline,
            })),
        }
    }

    /// This slot's turn.
    pub(super) fn drive<H: Handler>(&mut self, id: ConnId, now: Instant, lp: &mut Loop<H>) -> Step {
        if let Phase::Handshake(_) = self.phase {
            match self.drive_handshake(id, now, lp) {
                HandshakeStep::Wait(deadline) => return Step::Keep(Some(deadline)),
                HandshakeStep::Done => return Step::Remove,
                HandshakeStep::Opened => {}
            }
        }
        self.drive_open(id, now, lp)
    }

    /// Starts closing: an open connection sends Close, one in its
    /// handshake is dropped at its next turn.
    pub(super) fn start_close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        match &mut self.phase {
            Phase::Handshake(hs) => hs.deadline = now,
            Phase::Open(open) => {
                let _ = open.conn.close(code, reason, now);
            }
            Phase::Gone => {}
        }
    }

    /// The slot is dropped without finishing: reports the end if it was
    /// not reported yet.
    pub(super) fn abandon<H: Handler>(&mut self, id: ConnId, now: Instant, lp: &mut Loop<H>) {
        if let Phase::Open(open) = &mut self.phase {
            open.fail(now);
            report_end(id, open, lp);
        }
    }

    fn drive_handshake<H: Handler>(
        &mut self,
        id: ConnId,
        now: Instant,
        lp: &mut Loop<H>,
    ) -> HandshakeStep {
        let Phase::Handshake(hs) = &mut self.phase else {
            return HandshakeStep::Done;
        };
        if now >= hs.deadline {
            tracing::debug!("handshake timed out");
            return HandshakeStep::Done;
        }
        let max_head = lp.config.max_head_size;
        while self.readable {
            let n = match self.stream.read(&mut lp.buf) {
                Ok(0) => return HandshakeStep::Done,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return HandshakeStep::Done,
            };
            if n < lp.buf.len() {
                self.readable = false;
            }
            let head = {
                let data: &[u8] = if hs.head.is_empty() {
                    &lp.buf[..n]
                } else {
                    hs.head.extend_from_slice(&lp.buf[..n]);
                    &hs.head
                };
                match parse_request(data, max_head) {
                    Ok(Some((request, used))) => Head::Complete(request, data[used..].to_vec()),
                    Ok(None) if data.len() > max_head => Head::TooLarge,
                    Ok(None) => Head::Partial,
                    Err(e) => Head::Bad(e),
                }
            };
            match head {
                Head::Complete(request, leftover) => {
                    return self.open(id, &request, &leftover, now, lp);
                }
                Head::Partial => {
                    if hs.head.is_empty() {
                        hs.head.extend_from_slice(&lp.buf[..n]);
                    }
                }
                Head::TooLarge => {
                    let e = HandshakeError::HeadTooLarge { limit: max_head };
                    self.refuse(&Response::from_error(&e));
                    return HandshakeStep::Done;
                }
                Head::Bad(e) => {
                    tracing::debug!("bad request: {e}");
                    self.refuse(&Response::from_error(&e));
                    return HandshakeStep::Done;
                }
            }
        }
        HandshakeStep::Wait(hs.deadline)
    }

    /// The request is complete: the gate, the checks, the application,
    /// then 101 and the open phase (or a refusal).
    fn open<H: Handler>(
        &mut self,
        id: ConnId,
        request: &Request,
        leftover: &[u8],
        now: Instant,
        lp: &mut Loop<H>,
    ) -> HandshakeStep {
        let Phase::Handshake(hs) = std::mem::replace(&mut self.phase, Phase::Gone) else {
            return HandshakeStep::Done;
        };
        let permit = match hs.permit.open() {
            Ok(p) => p,
            Err(refusal) => {
                tracing::debug!("refused: {refusal}");
                self.refuse(&refusal.response());
                return HandshakeStep::Done;
            }
        };
        let handler = &mut lp.handler;
        let (response, mut conn, protocol) =
            match answer_request(request, &lp.config, |r| handler.on_request(r), now) {
                Answer::Accept {
                    response,
                    conn,
                    protocol,
                } => (response, conn, protocol),
                Answer::Refuse { response, error } => {
                    tracing::debug!("handshake refused: {error}");
                    self.refuse(&response);
                    return HandshakeStep::Done;
                }
            };
        // A fresh socket takes the 101 whole; whatever it does not goes
        // ahead of the first frame through the connection's output.
        let bytes = response.to_bytes();
        self.writable = true;
        let written = loop {
            match self.stream.write(&bytes) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break 0;
                }
                Err(_) => return HandshakeStep::Done,
            }
        };
        if written < bytes.len() {
            let _ = conn.send_encoded(&bytes[written..]);
        }
        if !leftover.is_empty() {
            conn.receive_data(leftover, now);
        }
        let mut open = Box::new(Open {
            conn,
            _permit: permit,
            protocol,
            last_message: lp.config.idle_timeout.map(|_| now),
            stalled_since: None,
            finish_deadline: None,
            failed: false,
            reported: false,
        });
        lp.handler.on_open(&mut Conn {
            id,
            open: &mut open,
            stream: &mut self.stream,
            writable: &mut self.writable,
            now,
        });
        self.phase = Phase::Open(open);
        HandshakeStep::Opened
    }

    /// Writes an HTTP refusal once, best effort (the socket is fresh and
    /// takes it); the slot is removed after.
    fn refuse(&mut self, response: &Response) {
        let _ = self.stream.write(&response.to_bytes());
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    fn drive_open<H: Handler>(&mut self, id: ConnId, now: Instant, lp: &mut Loop<H>) -> Step {
        let Phase::Open(open) = &mut self.phase else {
            return Step::Remove;
        };
        let open = &mut **open;
        if open.conn.poll_timeout().is_some_and(|d| d <= now) {
            open.conn.handle_timeout(now);
        }
        if let (Some(since), Some(limit)) = (open.stalled_since, lp.config.write_timeout) {
            if now >= since + limit && !open.failed {
                tracing::debug!("dropped: the client took no output for {limit:?}");
                open.fail(now);
            }
        }
        if let (Some(last), Some(limit)) = (open.last_message, lp.config.idle_timeout) {
            if now >= last + limit {
                open.last_message = None;
                let _ = open.conn.close(CloseCode::GOING_AWAY, "idle timeout", now);
            }
        }
        if open.finish_deadline.is_some_and(|d| now >= d) && !open.failed {
            // The last output did not go in time: give up on it.
            open.fail(now);
        }
        let mut reads = 0;
        loop {
            if open.conn.has_events() {
                dispatch(id, open, &mut self.stream, &mut self.writable, now, lp);
            }
            if !open.failed && self.writable && open.conn.output_len() > 0 {
                write_out(&mut self.stream, &mut self.writable, open, now);
            }
            if open.conn.has_events() {
                // A failed write ended the connection: report it first.
                continue;
            }
            if open.conn.output_len() > 0 && !open.failed {
                open.stalled_since.get_or_insert(now);
            }
            if open.conn.wants_transport_close() {
                if open.failed || open.conn.output_len() == 0 {
                    report_end(id, open, lp);
                    return Step::Remove;
                }
                let deadline = *open
                    .finish_deadline
                    .get_or_insert(now + lp.config.protocol.close_timeout);
                return Step::Keep(Some(deadline));
            }
            if self.readable && open.conn.wants_read() && !open.failed {
                if open.conn.output_len() >= PAUSE_READING {
                    // Backpressure: read again once the socket took some.
                    break;
                }
                if reads == READ_BUDGET {
                    lp.ready.push(id);
                    break;
                }
                reads += 1;
                match self.stream.read(&mut lp.buf) {
                    Ok(0) => open.conn.receive_eof(now),
                    Ok(n) => {
                        if n < lp.buf.len() {
                            // Edge-triggered: a short read drained the socket.
                            self.readable = false;
                        }
                        // A message at a time, each answered before the
                        // next is made (see `receive_some`); the answers
                        // still go out in one write below.
                        let mut at = 0;
                        while at < n {
                            at += open.conn.receive_some(&lp.buf[at..n], now);
                            if open.conn.has_events() {
                                dispatch(id, open, &mut self.stream, &mut self.writable, now, lp);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => open.fail(now),
                }
                continue;
            }
            break;
        }
        Step::Keep(open.next_deadline(&lp.config))
    }
}

/// Hands the core's events to the application, in order.
#[inline]
fn dispatch<H: Handler>(
    id: ConnId,
    open: &mut Open,
    stream: &mut TcpStream,
    writable: &mut bool,
    now: Instant,
    lp: &mut Loop<H>,
) {
    while let Some(event) = open.conn.poll_event() {
        match event {
            Event::Message(message) => {
                if open.last_message.is_some() {
                    open.last_message = Some(now);
                }
                let mut conn = Conn {
                    id,
                    open,
                    stream,
                    writable,
                    now,
                };
                lp.handler.on_message(&mut conn, message);
            }
            Event::Closed(termination) => {
                if !open.reported {
                    open.reported = true;
                    lp.handler.on_close(id, &termination);
                }
            }
            Event::Ping(_) | Event::Pong(_) => {}
        }
    }
}

/// Writes the core's output until it is gone or the socket is full.
fn write_out(stream: &mut TcpStream, writable: &mut bool, open: &mut Open, now: Instant) {
    loop {
        match stream.write(open.conn.output()) {
            Ok(0) => {
                open.fail(now);
                return;
            }
            Ok(n) => {
                open.conn.consume_output(n);
                open.stalled_since = None;
                if open.conn.output_len() == 0 {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                open.fail(now);
                return;
            }
        }
    }
}

/// Calls `on_close` once, with the core's account of the end.
fn report_end<H: Handler>(id: ConnId, open: &mut Open, lp: &mut Loop<H>) {
    while let Some(event) = open.conn.poll_event() {
        if let Event::Closed(termination) = event {
            if !open.reported {
                open.reported = true;
                lp.handler.on_close(id, &termination);
            }
        }
    }
}
