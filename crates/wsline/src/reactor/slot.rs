//! One connection of the reactor: its socket, its readiness and its phase
//! (handshake, then open), and the turn that moves it along when it is
//! ready or one of its deadlines is due.
//!
//! Owns the per-connection I/O: reading into the loop's shared buffer (the
//! core keeps only a partial frame), writing the core's output straight to
//! the socket, backpressure (no reading while much output waits), and
//! closing the socket. The rules (the head, the decision, the transport
//! timers) are the [`crate::driver`]'s: this is its pump for mio, in the
//! driving order documented there.

use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use wsline_proto::frame::MAX_HEADER_LEN;
use wsline_proto::handshake::{Request, Response};
use wsline_proto::{CloseCode, Event, Message};

use super::timers::{Tick, NOT_SCHEDULED};
use super::{ConnId, Handler};
use crate::driver::{
    answer_request, Accepted, Driver, HeadProgress, Refused, RequestHead, Timeouts,
};
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
    /// The deadline this slot has in the loop's heap
    /// ([`NOT_SCHEDULED`] if none).
    pub(super) scheduled: Tick,
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
    head: RequestHead,
}

/// After the 101.
struct Open {
    /// The core and the transport timers.
    driver: Driver,
    _permit: Connected,
    /// Boxed on purpose: 8 bytes when there is none (most servers), not
    /// an `Option<String>`'s 24.
    #[allow(clippy::box_collection)]
    protocol: Option<Box<String>>,
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
        self.open.protocol.as_deref().map(String::as_str)
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn buffered_output(&self) -> usize {
        self.open.driver.conn.output_len()
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
        if payload.len() >= DIRECT_WRITE_MIN && *self.writable && !self.open.driver.is_failed() {
            let mut head = [0u8; MAX_HEADER_LEN];
            if let Some(n) = self
                .open
                .driver
                .conn
                .direct_frame_header(&message, &mut head)
            {
                self.write_direct(&head[..n], payload);
                return Ok(());
            }
        }
        self.open.driver.conn.send(&message).map_err(Error::from)
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
                    self.open.driver.fail_transport(self.now);
                    return;
                }
            }
        };
        if written > 0 {
            self.open.driver.progressed();
        }
        let conn = &mut self.open.driver.conn;
        if written < total {
            if written < head.len() {
                let _ = conn.send_encoded(&head[written..]);
                let _ = conn.send_encoded(payload);
            } else {
                let _ = conn.send_encoded(&payload[written - head.len()..]);
            }
        }
    }

    /// Starts the closing handshake with `code` and `reason`.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.open
            .driver
            .conn
            .close(code, reason, self.now)
            .map_err(Error::from)
    }
}

/// How a handshake turn ended.
enum HandshakeStep {
    Wait(Instant),
    Done,
    Opened,
}

impl Slot {
    /// A connection just accepted, waiting for its request `head`.
    pub(super) fn handshake(
        stream: TcpStream,
        gen: u32,
        permit: Handshake,
        head: RequestHead,
    ) -> Self {
        Self {
            stream,
            gen,
            readable: false,
            writable: false,
            scheduled: NOT_SCHEDULED,
            phase: Phase::Handshake(Box::new(Handshaking { permit, head })),
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

    /// The first bytes of a connection the loop adopted
    /// ([`super::ReactorHandle::adopt`]), read from it elsewhere: taken as
    /// if this slot had read them, then the slot's turn.
    pub(super) fn receive_head<H: Handler>(
        &mut self,
        id: ConnId,
        bytes: &[u8],
        now: Instant,
        lp: &mut Loop<H>,
    ) -> Step {
        let Phase::Handshake(hs) = &mut self.phase else {
            return Step::Remove;
        };
        if !bytes.is_empty() {
            match hs.head.receive(bytes) {
                HeadProgress::Complete(request, leftover) => {
                    match self.open(id, &request, &leftover, now, lp) {
                        HandshakeStep::Opened => {}
                        HandshakeStep::Done => return Step::Remove,
                        HandshakeStep::Wait(deadline) => return Step::Keep(Some(deadline)),
                    }
                }
                HeadProgress::Partial => {}
                HeadProgress::Refuse(e) => {
                    tracing::debug!("bad request: {e}");
                    self.refuse(&Response::from_error(&e));
                    return Step::Remove;
                }
            }
        }
        self.drive(id, now, lp)
    }

    /// A wake from another thread: the handler's [`Handler::on_wake`]
    /// while the connection is open, then the slot's turn.
    pub(super) fn wake<H: Handler>(&mut self, id: ConnId, now: Instant, lp: &mut Loop<H>) -> Step {
        if let Phase::Open(open) = &mut self.phase {
            if !open.driver.is_failed() && !open.driver.wants_transport_close() {
                let mut conn = Conn {
                    id,
                    open,
                    stream: &mut self.stream,
                    writable: &mut self.writable,
                    now,
                };
                lp.handler.on_wake(&mut conn);
            }
        }
        self.drive(id, now, lp)
    }

    /// Starts closing: an open connection sends Close, one in its
    /// handshake is dropped at its next turn.
    pub(super) fn start_close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        match &mut self.phase {
            Phase::Handshake(hs) => hs.head.expire(now),
            Phase::Open(open) => {
                let _ = open.driver.conn.close(code, reason, now);
            }
            Phase::Gone => {}
        }
    }

    /// The slot is dropped without finishing: reports the end if it was
    /// not reported yet.
    pub(super) fn abandon<H: Handler>(&mut self, id: ConnId, now: Instant, lp: &mut Loop<H>) {
        if let Phase::Open(open) = &mut self.phase {
            open.driver.fail_transport(now);
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
        if now >= hs.head.deadline() {
            tracing::debug!("handshake timed out");
            return HandshakeStep::Done;
        }
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
            match hs.head.receive(&lp.buf[..n]) {
                HeadProgress::Complete(request, leftover) => {
                    return self.open(id, &request, &leftover, now, lp);
                }
                HeadProgress::Partial => {}
                HeadProgress::Refuse(e) => {
                    tracing::debug!("bad request: {e}");
                    self.refuse(&Response::from_error(&e));
                    return HandshakeStep::Done;
                }
            }
        }
        HandshakeStep::Wait(hs.head.deadline())
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
        let answer = answer_request(request, &lp.config, |r| handler.on_request(r), now);
        let Accepted {
            response,
            mut conn,
            protocol,
        } = match answer {
            Ok(accepted) => accepted,
            Err(Refused { response, error }) => {
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
        let mut driver = Driver::new(conn, Timeouts::of(&lp.config), now);
        if !leftover.is_empty() {
            driver.receive(leftover, now);
        }
        let mut open = Box::new(Open {
            driver,
            _permit: permit,
            protocol: protocol.map(Box::new),
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
        let timeouts = Timeouts::of(&lp.config);
        if open.driver.poll_timeout(timeouts).is_some_and(|d| d <= now) {
            let expired = open.driver.handle_timeout(now, timeouts);
            if expired.write_stall {
                tracing::debug!(
                    "dropped: the client took no output for {:?}",
                    timeouts.write
                );
            }
        }
        let mut reads = 0;
        loop {
            if open.driver.conn.has_events() {
                dispatch(id, open, &mut self.stream, &mut self.writable, now, lp);
            }
            if !open.driver.is_failed() && self.writable && !open.driver.output().is_empty() {
                write_out(&mut self.stream, &mut self.writable, open, now);
            }
            if open.driver.conn.has_events() {
                // A failed write ended the connection: report it first.
                continue;
            }
            if !open.driver.output().is_empty() {
                open.driver.write_blocked(now);
            }
            if open.driver.wants_transport_close() {
                if open.driver.is_failed() || open.driver.output().is_empty() {
                    report_end(id, open, lp);
                    return Step::Remove;
                }
                return Step::Keep(Some(open.driver.finish_deadline(now)));
            }
            if self.readable && open.driver.wants_read() {
                if open.driver.output().len() >= PAUSE_READING {
                    // Backpressure: read again once the socket took some.
                    break;
                }
                if reads == READ_BUDGET {
                    lp.ready.push(id);
                    break;
                }
                reads += 1;
                match self.stream.read(&mut lp.buf) {
                    Ok(0) => open.driver.receive_eof(now),
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
                            at += open.driver.conn.receive_some(&lp.buf[at..n], now);
                            if open.driver.conn.has_events() {
                                dispatch(id, open, &mut self.stream, &mut self.writable, now, lp);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => open.driver.fail_transport(now),
                }
                continue;
            }
            break;
        }
        Step::Keep(open.driver.poll_timeout(timeouts))
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
    while let Some(event) = open.driver.poll_event(|| now) {
        match event {
            Event::Message(message) => {
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
                if !open.driver.end_reported() {
                    open.driver.set_end_reported();
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
        match stream.write(open.driver.output()) {
            Ok(0) => {
                open.driver.fail_transport(now);
                return;
            }
            Ok(n) => {
                open.driver.wrote(n);
                if open.driver.output().is_empty() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                open.driver.fail_transport(now);
                return;
            }
        }
    }
}

/// Calls `on_close` once, with the core's account of the end.
fn report_end<H: Handler>(id: ConnId, open: &mut Open, lp: &mut Loop<H>) {
    while let Some(event) = open.driver.conn.poll_event() {
        if let Event::Closed(termination) = event {
            if !open.driver.end_reported() {
                open.driver.set_end_reported();
                lp.handler.on_close(id, &termination);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// What an idle open connection costs in the loop, pinned: its slot
    /// in the loop's `Vec` and its boxed open state (see
    /// docs/performance.md, "Idle memory").
    #[test]
    fn idle_connection_size() {
        eprintln!(
            "Option<Slot> {} Slot {} Phase {} Open {} Driver {} Connection {} Handshaking {}",
            size_of::<Option<Slot>>(),
            size_of::<Slot>(),
            size_of::<Phase>(),
            size_of::<Open>(),
            size_of::<Driver>(),
            size_of::<wsline_proto::Connection>(),
            size_of::<Handshaking>(),
        );
        // mio's socket carries a selector id in debug builds (8 bytes
        // more); the figure that counts is the release one.
        let mio_debug = if cfg!(debug_assertions) { 8 } else { 0 };
        assert!(size_of::<Option<Slot>>() <= 40 + mio_debug);
        // The box malloc gives it: 112 bytes with glibc (104 + 8, in
        // steps of 16); one byte more costs 16. The core alone is pinned
        // in wsline-proto (its buffers and events are boxed apart, freed
        // between turns).
        assert!(size_of::<Open>() <= 104);
        assert!(size_of::<Driver>() <= 88);
        assert!(size_of::<wsline_proto::Connection>() <= 64);
    }
}
