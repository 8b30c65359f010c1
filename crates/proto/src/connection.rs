//! The connection state machine: one object per open WebSocket connection.
//!
//! Owns framing rules (masking, fragmentation, control frames, limits), UTF-8
//! validation of text, the closing handshake, automatic Pong and Close
//! replies, and the keepalive / close timers. It does not own the opening
//! handshake (see [`crate::handshake`]) nor any socket or clock.
//!
//! Data flow: the caller appends received bytes with
//! [`Connection::receive_data`] (or reads straight into
//! [`Connection::read_buffer`] and calls [`Connection::process`]), pulls
//! [`Event`]s with [`Connection::poll_event`], queues messages with
//! [`Connection::send_text`] and friends, writes [`Connection::output`] to
//! the transport, and closes the transport when
//! [`Connection::wants_transport_close`] says so. Timers: call
//! [`Connection::handle_timeout`] at [`Connection::poll_timeout`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame, MAX_CLOSE_REASON};
use crate::deflate::{DeflateConfig, DeflateParams, InflateError, PerMessageDeflate};
use crate::error::{ProtocolError, SendError};
use crate::frame::{
    apply_mask, encode_header, extend_masked, parse_header, FrameHeader, OpCode, MAX_HEADER_LEN,
};
use crate::message::{Message, Utf8Bytes};
use crate::utf8::Utf8Validator;

/// Which end of the connection this is. Clients mask their frames and wait
/// for the server to close TCP; servers require masked frames and close TCP
/// first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that accepted it.
    Server,
}

/// Limits and timers of a connection. The defaults suit a public server.
///
/// ```
/// use std::time::Duration;
/// let mut config = wsline_proto::Config::default();
/// config.max_message_size = 1 << 20;
/// config.ping_interval = None; // no keepalive
/// assert_eq!(config.close_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The largest frame payload accepted (default 16 MiB); larger → 1009.
    pub max_frame_size: usize,
    /// The largest message accepted, as the application would receive it
    /// (default 16 MiB); larger → 1009. Control frames do not count.
    pub max_message_size: usize,
    /// Send a Ping this often (default 20 s); `None` disables keepalive.
    pub ping_interval: Option<Duration>,
    /// Fail the connection (1011) when a Ping is not answered within this
    /// time (default 20 s); `None` never times out.
    pub ping_timeout: Option<Duration>,
    /// How long to wait for the peer to finish the closing handshake, and
    /// for a client how long to wait for the server to close TCP after it
    /// (default 10 s).
    pub close_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Some(Duration::from_secs(20)),
            close_timeout: Duration::from_secs(10),
        }
    }
}

/// The coarse state of a connection (RFC 6455 §4–§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// A Close frame was sent or received; the closing handshake is under way.
    Closing,
    /// The connection is over; [`Event::Closed`] says how.
    Closed,
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminationKind {
    /// The closing handshake completed.
    Clean,
    /// The transport ended without a closing handshake (reported as 1006).
    Abnormal,
    /// This end failed the connection: the peer broke the protocol or a
    /// limit (the code sent is in [`Termination::sent`]), or the application
    /// called [`Connection::fail`].
    Failed,
    /// The peer did not answer a keepalive Ping in time (1011 sent).
    KeepaliveTimeout,
    /// The peer did not finish the closing handshake in time (reported as 1006).
    CloseTimeout,
}

/// Everything known about how a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    /// How it ended.
    pub kind: TerminationKind,
    /// The peer's Close frame, if one arrived (an empty one is reported with
    /// code 1005).
    pub received: Option<CloseFrame>,
    /// The Close frame this end sent, if any.
    pub sent: Option<CloseFrame>,
    /// The peer's protocol violation, when that is why the connection failed.
    pub error: Option<ProtocolError>,
}

impl Termination {
    /// The close code that describes the end, as an application reports it:
    /// the peer's code after a clean close (1005 if it sent none), the code
    /// this end sent when it failed the connection, 1011 for a keepalive
    /// timeout, 1006 for an abnormal end or a close timeout.
    pub fn code(&self) -> CloseCode {
        match self.kind {
            TerminationKind::Clean => self
                .received
                .as_ref()
                .map_or(CloseCode::NO_STATUS, |f| f.code),
            TerminationKind::Failed => self.sent.as_ref().map_or(CloseCode::ABNORMAL, |f| f.code),
            TerminationKind::KeepaliveTimeout => CloseCode::INTERNAL_ERROR,
            TerminationKind::Abnormal | TerminationKind::CloseTimeout => CloseCode::ABNORMAL,
        }
    }

    /// The reason that goes with [`Termination::code`].
    pub fn reason(&self) -> &str {
        match self.kind {
            TerminationKind::Clean => self.received.as_ref().map_or("", |f| &f.reason),
            TerminationKind::Failed | TerminationKind::KeepaliveTimeout => {
                self.sent.as_ref().map_or("", |f| &f.reason)
            }
            TerminationKind::Abnormal => "connection closed without a close frame",
            TerminationKind::CloseTimeout => "closing handshake timed out",
        }
    }

    /// Whether this is a normal end: the closing handshake completed and
    /// the peer's Close said 1000 (normal), 1001 (going away) or nothing
    /// at all (an empty Close, reported as 1005).
    ///
    /// This is wsline's one definition of a normal end; every API uses it.
    /// An empty Close is a peer closing without stating a reason, which
    /// RFC 6455 §7.1.5 allows and browsers report as a clean close, so it
    /// counts as normal (as in Python `websockets`' `ConnectionClosedOK`):
    /// [`Termination::code`] still says 1005, `WebSocket`'s stream ends
    /// with `None`, the reactor's `on_close` gets this termination, and
    /// `wsline connect` prints `closed: 1005` and exits 0. Anything else
    /// is abnormal: another code (a peer's error, 1002–1015, 3000–4999),
    /// a connection this end failed, a keepalive or close timeout, a
    /// transport that ended without a closing handshake (1006).
    pub fn is_normal(&self) -> bool {
        self.kind == TerminationKind::Clean
            && matches!(
                self.code(),
                CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS
            )
    }
}

/// Something the peer did, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A Ping arrived (the Pong was already queued).
    Ping(Bytes),
    /// A Pong arrived.
    Pong(Bytes),
    /// The connection is over; the last event. Close the transport after
    /// writing [`Connection::output`]. (Boxed: it comes once, and keeps
    /// every other event small.)
    Closed(Box<Termination>),
}

/// An event, or the peer's Close frame whose reply waits until the
/// application has taken every message that arrived before it.
#[derive(Debug)]
enum Pending {
    Event(Event),
    /// With the time it arrived (a client's wait for the server's TCP
    /// close starts from it).
    PeerClose(CloseFrame, Instant),
    /// A violation found while parsing: the connection fails when the
    /// application reaches this point, after the messages before it.
    Fail(CloseFrame, Instant),
}

/// Events waiting for the application, in order. The first waits inline,
/// so a connection that gets one message at a time never allocates for
/// its queue; the others go to a boxed deque that exists only while it
/// holds events, so an idle connection holds no queue memory after a
/// burst and spends 8 bytes on it, not a deque's 32.
#[derive(Debug, Default)]
struct EventQueue {
    first: Option<Pending>,
    /// Never empty when present. Boxed on purpose: 8 bytes on every
    /// connection, the extra allocation only during a burst.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Pending>>>,
}

/// The deque's first allocation, in events.
const QUEUE_INITIAL: usize = 16;

impl EventQueue {
    fn push(&mut self, pending: Pending) {
        if self.first.is_none() && self.rest.is_none() {
            self.first = Some(pending);
        } else {
            // A burst: room for several at once instead of growing
            // through 4, 8, 16.
            self.rest
                .get_or_insert_with(|| Box::new(VecDeque::with_capacity(QUEUE_INITIAL)))
                .push_back(pending);
        }
    }

    fn pop(&mut self) -> Option<Pending> {
        if let Some(p) = self.first.take() {
            return Some(p);
        }
        let rest = self.rest.as_mut()?;
        let p = rest.pop_front();
        if rest.is_empty() {
            self.rest = None;
        }
        p
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_none()
    }
}

/// The frame whose payload is arriving.
#[derive(Debug)]
struct InFrame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    len: usize,
    /// Payload bytes at the front of the read buffer already unmasked and validated.
    done: usize,
    /// Payload bytes at the front of the read buffer already unmasked
    /// (copied in unmasked, ahead of `done`).
    unmasked: usize,
    validate_utf8: bool,
    /// RSV1 on the first frame of a message: the message is compressed.
    compressed: bool,
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct Fragmented {
    opcode: OpCode,
    /// The message so far (inflated, when compressed).
    data: Vec<u8>,
    compressed: bool,
}

/// One WebSocket connection's protocol state, without I/O.
///
/// ```
/// use std::time::Instant;
/// use wsline_proto::{Config, Connection, Event, Message, Role};
///
/// let now = Instant::now();
/// let mut server = Connection::new(Role::Server, Config::default(), now);
/// // A masked text frame "Hi" from a client.
/// let key = [1, 2, 3, 4];
/// let frame = [0x81, 0x82, 1, 2, 3, 4, b'H' ^ 1, b'i' ^ 2];
/// server.receive_data(&frame, now);
/// assert_eq!(server.poll_event(), Some(Event::Message(Message::text("Hi"))));
/// server.send_text("Hi").unwrap();
/// assert_eq!(server.output(), &[0x81, 0x02, b'H', b'i']);
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// Shared: a server's connections all have the same (8 bytes each,
    /// not 64).
    config: Arc<Config>,

    /// The buffers, the frame under way and the events: allocated when a
    /// call brings input or output, freed when it all drains (an idle
    /// connection spends 8 bytes on it, not ~136).
    active: Option<Box<Active>>,
    utf8: Utf8Validator,
    /// False once a Close arrived, the connection failed, or the transport ended.
    reading: bool,
    /// A peer Close or a failure waits in the event queue.
    peer_close_pending: bool,

    /// Boxed, with its scratch space: most connections never compress.
    deflate: Option<Box<Deflating>>,

    /// Close frames, the violation and the closing timers: allocated once
    /// the connection starts to close, so an open connection stays small.
    closing: Option<Box<Closing>>,
    eof: bool,
    finished: bool,

    /// The keepalive's one deadline: when to send the next Ping or, while
    /// `awaiting_pong`, when the latest Ping's Pong is due (it was sent at
    /// this deadline less the ping timeout). The two never run together.
    keepalive: Option<Instant>,
    /// The latest Ping waits for its Pong.
    awaiting_pong: bool,
    /// Pings sent; the latest one's payload is this count as 8 bytes
    /// (a `u64` on the wire; 4 bytes here: at one Ping a second it wraps
    /// after 136 years).
    ping_count: u32,
}

/// What a connection holds only while bytes or events are under way:
/// received bytes not yet parsed, the frame and the message being
/// assembled, the events the application has not taken, output not yet
/// written. [`Connection`] allocates it when a call brings some and frees
/// it when every part is empty again ([`Active::is_idle`]).
#[derive(Debug, Default)]
struct Active {
    in_buf: BytesMut,
    /// Boxed: only a frame split over reads has one.
    frame: Option<Box<InFrame>>,
    /// Boxed: only a message split over several frames, or a compressed
    /// one, needs it.
    fragmented: Option<Box<Fragmented>>,
    events: EventQueue,
    out: BytesMut,
    /// The Pong answering the latest Ping, held while output is backed up.
    deferred_pong: Option<Box<Bytes>>,
}

impl Active {
    /// Nothing under way: the connection can free it.
    fn is_idle(&self) -> bool {
        self.in_buf.is_empty()
            && self.out.is_empty()
            && self.events.is_empty()
            && self.frame.is_none()
            && self.fragmented.is_none()
            && self.deferred_pong.is_none()
    }
}

/// The active part of a connection, allocated on first use. A macro, not a
/// method, so that it borrows only the `active` field.
macro_rules! active {
    ($conn:expr) => {
        $conn.active.get_or_insert_with(Box::default)
    };
}

/// The output buffer's first allocation, in bytes (it is freed whenever
/// all output is written).
const OUTPUT_INITIAL: usize = 1024;

/// While this much output waits, a Ping's Pong is held back and only the
/// latest one is sent once the output drains below it.
const PONG_DEFER_OUTPUT: usize = 64 * 1024;

/// permessage-deflate's codec and the buffer one outgoing message is
/// compressed into.
#[derive(Debug)]
struct Deflating {
    codec: PerMessageDeflate,
    scratch: Vec<u8>,
}

/// The state of a connection that has started to close.
#[derive(Debug, Default)]
struct Closing {
    sent: Option<CloseFrame>,
    received: Option<CloseFrame>,
    error: Option<ProtocolError>,
    /// Set when the handshake finished (or this end failed) and a client
    /// waits for the server's TCP close: how the connection will be reported.
    awaiting_eof: Option<TerminationKind>,
    close_deadline: Option<Instant>,
    eof_deadline: Option<Instant>,
}

impl Connection {
    /// A connection whose opening handshake just completed at `now`.
    pub fn new(role: Role, config: Config, now: Instant) -> Self {
        Self::with_shared_config(role, Arc::new(config), now)
    }

    /// [`Connection::new`] with a configuration shared by many
    /// connections: a server that keeps one `Arc<Config>` for all of
    /// them spends 8 bytes per connection on it, and no allocation.
    pub fn with_shared_config(role: Role, config: Arc<Config>, now: Instant) -> Self {
        let keepalive = config.ping_interval.map(|i| now + i);
        Self {
            role,
            config,
            active: None,
            utf8: Utf8Validator::default(),
            reading: true,
            peer_close_pending: false,
            deflate: None,
            closing: None,
            eof: false,
            finished: false,
            keepalive,
            awaiting_pong: false,
            ping_count: 0,
        }
    }

    /// Frees the active part when nothing is under way.
    #[inline]
    fn release_if_idle(&mut self) {
        if self.active.as_deref().is_some_and(Active::is_idle) {
            self.active = None;
        }
    }

    /// Frees the read buffer's memory once it is empty, then the active
    /// part if nothing else is under way.
    #[inline]
    fn end_input(&mut self) {
        if let Some(a) = self.active.as_deref_mut() {
            if a.in_buf.is_empty() && a.in_buf.capacity() > 0 {
                // An idle connection holds no read buffer.
                a.in_buf = BytesMut::new();
            }
        }
        self.release_if_idle();
    }

    /// Drops input not yet parsed and any frame or message under way.
    fn drop_input(&mut self) {
        if let Some(a) = self.active.as_deref_mut() {
            a.in_buf.clear();
            a.frame = None;
            a.fragmented = None;
        }
    }

    fn push_event(&mut self, pending: Pending) {
        active!(self).events.push(pending);
    }

    fn fragmented(&self) -> Option<&Fragmented> {
        self.active.as_deref().and_then(|a| a.fragmented.as_deref())
    }

    /// When the next keepalive Ping is due, if one is scheduled.
    fn next_ping(&self) -> Option<Instant> {
        self.keepalive.filter(|_| !self.awaiting_pong)
    }

    /// When the latest Ping's Pong is due, if one is awaited.
    fn pong_deadline(&self) -> Option<Instant> {
        self.keepalive.filter(|_| self.awaiting_pong)
    }

    /// No more Pings, no Pong awaited.
    fn stop_keepalive(&mut self) {
        self.keepalive = None;
        self.awaiting_pong = false;
    }

    /// The latest Ping's payload: its count, as 8 bytes.
    fn ping_payload(&self) -> [u8; 8] {
        u64::from(self.ping_count).to_be_bytes()
    }

    fn closing(&self) -> Option<&Closing> {
        self.closing.as_deref()
    }

    fn closing_mut(&mut self) -> &mut Closing {
        self.closing.get_or_insert_with(Box::default)
    }

    fn awaiting_eof(&self) -> Option<TerminationKind> {
        self.closing().and_then(|c| c.awaiting_eof)
    }

    /// Turns on permessage-deflate with the parameters agreed in the
    /// opening handshake (see [`crate::deflate`]). Call before any data.
    pub fn enable_deflate(&mut self, params: &DeflateParams, config: &DeflateConfig) {
        self.deflate = Some(Box::new(Deflating {
            codec: PerMessageDeflate::new(self.role, params, config),
            scratch: Vec::new(),
        }));
    }

    /// Whether permessage-deflate is on.
    pub fn deflate_enabled(&self) -> bool {
        self.deflate.is_some()
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The coarse state.
    pub fn state(&self) -> State {
        if self.finished {
            State::Closed
        } else if self.closing().is_some_and(|c| c.sent.is_some())
            || self.closing().is_some_and(|c| c.received.is_some())
            || self.peer_close_pending
            || self.awaiting_eof().is_some()
        {
            State::Closing
        } else {
            State::Open
        }
    }

    /// Whether data messages may still be sent: no Close was sent yet and
    /// the connection is not over.
    pub fn can_send(&self) -> bool {
        !self.finished
            && self
                .closing()
                .is_none_or(|c| c.sent.is_none() && c.awaiting_eof.is_none())
    }

    // ---------------------------------------------------------------- input

    /// Bytes received from the transport. Parses as far as they go; the
    /// results come out of [`Connection::poll_event`]. Never fails: a peer's
    /// violation fails the connection with the right close code.
    pub fn receive_data(&mut self, data: &[u8], now: Instant) {
        self.receive(data, now, false);
    }

    /// Like [`Connection::receive_data`], but stops after the first frame
    /// that gives the application an event, and returns how many bytes of
    /// `data` it used; call it again with the rest after taking the event.
    /// A server answering each message as it comes (an echo) then frees
    /// each message before the next is made: the allocator reuses the same
    /// memory, and the event queue never grows. Once the connection stops
    /// reading (a Close or a violation), the rest counts as used; with
    /// events already waiting when it is called, it uses everything, as
    /// `receive_data` does.
    ///
    /// ```
    /// use std::time::Instant;
    /// use wsline_proto::{Config, Connection, Event, Message, Role};
    ///
    /// let now = Instant::now();
    /// let mut server = Connection::new(Role::Server, Config::default(), now);
    /// // Two masked text frames, "a" and "b", in one read.
    /// let data = [0x81, 0x81, 0, 0, 0, 0, b'a', 0x81, 0x81, 0, 0, 0, 0, b'b'];
    /// let used = server.receive_some(&data, now);
    /// assert_eq!(used, 7);
    /// assert_eq!(server.poll_event(), Some(Event::Message(Message::text("a"))));
    /// assert_eq!(server.receive_some(&data[used..], now), 7);
    /// assert_eq!(server.poll_event(), Some(Event::Message(Message::text("b"))));
    /// ```
    pub fn receive_some(&mut self, data: &[u8], now: Instant) -> usize {
        self.receive(data, now, true)
    }

    fn receive(&mut self, all: &[u8], now: Instant, one: bool) -> usize {
        let mut data = all;
        // With events already waiting, stopping would make no progress.
        let one = one && !self.has_events();
        while self.reading && !data.is_empty() {
            if one && self.has_events() {
                return all.len() - data.len();
            }
            if self
                .active
                .as_deref()
                .is_none_or(|a| a.in_buf.is_empty() && a.frame.is_none())
            {
                // Whole frames straight from the caller's bytes: nothing is
                // kept between calls but a partial frame.
                let used = self.parse_slice(data, one, now);
                data = &data[used..];
                if data.is_empty() || !self.reading {
                    break;
                }
                if one && self.has_events() {
                    return all.len() - data.len();
                }
            }
            // Complete the buffered partial frame (or header), then go back
            // to parsing from the caller's bytes.
            let a = active!(self);
            let mut take = match &a.frame {
                Some(f) => f.len.saturating_sub(a.in_buf.len()).min(data.len()),
                None => (MAX_HEADER_LEN - a.in_buf.len().min(MAX_HEADER_LEN)).min(data.len()),
            };
            if take == 0 {
                take = data.len();
            }
            if a.in_buf.capacity() - a.in_buf.len() < take {
                let frame_rest = a
                    .frame
                    .as_ref()
                    .map_or(0, |f| f.len.saturating_sub(a.in_buf.len()));
                a.in_buf.reserve(take.max(frame_rest.min(256 * 1024)));
            }
            match a.frame.as_mut() {
                Some(f)
                    if f.mask.is_some() && f.done == a.in_buf.len() && take <= f.len - f.done =>
                {
                    // Payload of the frame under way, all before it
                    // unmasked: unmasked as it is copied.
                    let key = f.mask.unwrap_or_default();
                    extend_masked(&mut a.in_buf, &data[..take], key, f.done);
                    f.unmasked = a.in_buf.len();
                }
                _ => a.in_buf.extend_from_slice(&data[..take]),
            }
            data = &data[take..];
            self.parse(now);
        }
        self.end_input();
        all.len()
    }

    /// Parses complete frames from `data` without buffering them; returns
    /// how many bytes were used. Stops before a partial header, or after
    /// the header of a partial frame (which becomes `self.frame`).
    fn parse_slice(&mut self, data: &[u8], one: bool, now: Instant) -> usize {
        let mut at = 0;
        while self.reading {
            let rest = &data[at..];
            let (header, header_len) = match parse_header(rest) {
                Ok(Some(h)) => h,
                Ok(None) => return at,
                Err(_) => {
                    self.fail_protocol(ProtocolError::InvalidLength, now);
                    break;
                }
            };
            let frame = match self.check_header(&header) {
                Ok(f) => f,
                Err(e) => {
                    self.fail_protocol(e, now);
                    break;
                }
            };
            if rest.len() - header_len < frame.len {
                active!(self).frame = Some(Box::new(frame));
                return at + header_len;
            }
            let mut payload = BytesMut::with_capacity(frame.len);
            let body = &rest[header_len..header_len + frame.len];
            match frame.mask {
                Some(key) => extend_masked(&mut payload, body, key, 0),
                None => payload.extend_from_slice(body),
            }
            if frame.validate_utf8 && self.utf8.feed(&payload).is_err() {
                self.fail_protocol(ProtocolError::InvalidUtf8, now);
                break;
            }
            at += header_len + frame.len;
            self.on_frame(frame, payload.freeze(), now);
            if one && self.has_events() {
                return at;
            }
        }
        data.len()
    }

    /// The buffer that received bytes go into, for a runtime that reads
    /// straight into it (then calls [`Connection::process`]). Holds at most
    /// one partial frame between calls.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut active!(self).in_buf
    }

    /// How many more payload bytes the frame being received needs (0 when
    /// no frame is under way): an I/O layer reading a large frame can read
    /// straight into [`Connection::read_buffer`] (then call
    /// [`Connection::process`]) instead of copying through
    /// [`Connection::receive_data`].
    pub fn frame_bytes_wanted(&self) -> usize {
        match self.active.as_deref() {
            Some(Active {
                frame: Some(f),
                in_buf,
                ..
            }) if self.reading => f.len.saturating_sub(in_buf.len()),
            _ => 0,
        }
    }

    /// Parses what [`Connection::read_buffer`] holds, as `receive_data` does.
    pub fn process(&mut self, now: Instant) {
        if self.reading {
            self.parse(now);
        } else if let Some(a) = self.active.as_deref_mut() {
            a.in_buf.clear();
        }
        self.end_input();
    }

    /// Whether the connection still wants to read from the transport:
    /// false once the connection is over. Reading continues during the
    /// closing handshake, to see the peer's Close and then its TCP close.
    pub fn wants_read(&self) -> bool {
        !self.finished && !self.eof
    }

    /// Bytes received but not yet parsed (a partial frame).
    pub fn buffered_input(&self) -> usize {
        self.active.as_deref().map_or(0, |a| {
            a.in_buf.len() + a.fragmented.as_ref().map_or(0, |f| f.data.len())
        })
    }

    /// The transport reached end of stream (TCP FIN or reset).
    ///
    /// Without a completed closing handshake this ends the connection as
    /// abnormal (1006). (`now` is unused today; every input takes the
    /// time, so that a timer here needs no change of the API.)
    pub fn receive_eof(&mut self, _now: Instant) {
        if self.finished || self.eof {
            return;
        }
        self.eof = true;
        self.reading = false;
        if let Some(a) = self.active.as_deref_mut() {
            a.in_buf.clear();
        }
        if self.peer_close_pending {
            // The reply cannot be sent; poll_event finishes after the
            // messages that came before the peer's Close.
            return;
        }
        match self.awaiting_eof() {
            Some(kind) => self.finish(kind),
            None => self.finish(TerminationKind::Abnormal),
        }
    }

    /// The next event, in arrival order; [`Event::Closed`] is the last one.
    ///
    /// Taking the event after the peer's Close frame is what queues the
    /// Close reply, so the application can still answer every message that
    /// arrived before it (an echo server echoes them, then closes).
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            let Some(pending) = self.active.as_deref_mut()?.events.pop() else {
                self.release_if_idle();
                return None;
            };
            match pending {
                Pending::Event(e) => return Some(e),
                Pending::PeerClose(frame, at) => self.on_peer_close(frame, at),
                Pending::Fail(frame, at) => {
                    self.peer_close_pending = false;
                    self.fail_with(frame, at);
                }
            }
        }
    }

    /// Whether [`Connection::poll_event`] has anything.
    pub fn has_events(&self) -> bool {
        self.active.as_deref().is_some_and(|a| !a.events.is_empty())
    }

    fn parse(&mut self, now: Instant) {
        while self.reading {
            let Some(a) = self.active.as_deref_mut() else {
                break;
            };
            if a.frame.is_none() {
                let (header, header_len) = match parse_header(&a.in_buf) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(_) => {
                        self.fail_protocol(ProtocolError::InvalidLength, now);
                        break;
                    }
                };
                match self.check_header(&header) {
                    Ok(frame) => {
                        let a = active!(self);
                        a.in_buf.advance(header_len);
                        a.frame = Some(Box::new(frame));
                    }
                    Err(e) => {
                        self.fail_protocol(e, now);
                        break;
                    }
                }
            }
            let Some(a) = self.active.as_deref_mut() else {
                break;
            };
            let Some(frame) = a.frame.as_mut() else {
                break;
            };
            let available = a.in_buf.len().min(frame.len);
            if available > frame.done {
                if let Some(key) = frame.mask {
                    let from = frame.unmasked.clamp(frame.done, available);
                    apply_mask(&mut a.in_buf[from..available], key, from);
                }
                let chunk = &a.in_buf[frame.done..available];
                if frame.validate_utf8 && self.utf8.feed(chunk).is_err() {
                    self.fail_protocol(ProtocolError::InvalidUtf8, now);
                    break;
                }
                frame.done = available;
            }
            if frame.done < frame.len {
                break;
            }
            let Some(frame) = a.frame.take() else {
                break;
            };
            let payload = a.in_buf.split_to(frame.len).freeze();
            self.on_frame(*frame, payload, now);
        }
        if !self.reading {
            if let Some(a) = self.active.as_deref_mut() {
                a.in_buf.clear();
            }
        }
    }

    fn check_header(&mut self, h: &FrameHeader) -> Result<InFrame, ProtocolError> {
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrameFromClient),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrameFromServer),
            _ => {}
        }
        let opcode = OpCode::from_u8(h.opcode).ok_or(ProtocolError::ReservedOpcode(h.opcode))?;
        // RSV1 means "compressed", on the first frame of a data message only.
        let allowed_rsv = match opcode {
            OpCode::Text | OpCode::Binary if self.deflate.is_some() => 0b100,
            _ => 0,
        };
        if h.rsv & !allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits(h.rsv));
        }
        let compressed = match opcode {
            OpCode::Text | OpCode::Binary => h.rsv & 0b100 != 0,
            OpCode::Continuation => self.fragmented().is_some_and(|f| f.compressed),
            _ => false,
        };
        let len = h.payload_len;
        if opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if len > 125 {
                return Err(ProtocolError::ControlFrameTooBig(len));
            }
        } else {
            match (opcode, self.fragmented()) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ProtocolError::ExpectedContinuation)
                }
                _ => {}
            }
            if len > self.config.max_frame_size as u64 {
                return Err(ProtocolError::FrameTooBig {
                    size: len,
                    limit: self.config.max_frame_size,
                });
            }
            let so_far = match self.fragmented() {
                Some(f) if opcode == OpCode::Continuation => f.data.len(),
                _ => 0,
            };
            // A compressed message is measured as it inflates.
            if !compressed && so_far as u64 + len > self.config.max_message_size as u64 {
                return Err(ProtocolError::MessageTooBig {
                    limit: self.config.max_message_size,
                });
            }
        }
        // Compressed text is validated after inflating, not on the wire.
        let validate_utf8 = !compressed
            && match opcode {
                OpCode::Text => true,
                OpCode::Continuation => self.fragmented().is_some_and(|f| f.opcode == OpCode::Text),
                _ => false,
            };
        if opcode == OpCode::Text {
            self.utf8.reset();
        }
        // Bounded by max_frame_size (data) or 125 (control), both usize.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        Ok(InFrame {
            opcode,
            fin: h.fin,
            mask: h.mask,
            len,
            done: 0,
            unmasked: 0,
            validate_utf8,
            compressed,
        })
    }

    fn on_frame(&mut self, frame: InFrame, payload: Bytes, now: Instant) {
        match frame.opcode {
            OpCode::Ping => {
                if self.can_send() && !self.peer_close_pending {
                    if self.output_len() >= PONG_DEFER_OUTPUT {
                        // Output is backed up (the peer reads slowly, or
                        // not at all while it pings): answer only the most
                        // recent Ping once it drains (RFC 6455 §5.5.3), so
                        // Pings cannot grow the output without bound.
                        active!(self).deferred_pong = Some(Box::new(payload.clone()));
                    } else {
                        self.encode_frame(OpCode::Pong, &payload, true);
                    }
                }
                self.push_event(Pending::Event(Event::Ping(payload)));
            }
            OpCode::Pong => {
                if let Some(deadline) = self.pong_deadline() {
                    if payload.as_ref() == self.ping_payload().as_slice() {
                        self.stop_keepalive();
                        if let (Some(timeout), Some(interval)) =
                            (self.config.ping_timeout, self.config.ping_interval)
                        {
                            let sent = deadline - timeout;
                            self.keepalive = Some(sent + interval);
                        }
                    }
                }
                self.push_event(Pending::Event(Event::Pong(payload)));
            }
            OpCode::Close => self.on_close_frame(&payload, now),
            OpCode::Text | OpCode::Binary if frame.fin && !frame.compressed => {
                // The common case: one frame, no copy.
                self.deliver(frame.opcode, payload, now);
            }
            OpCode::Text | OpCode::Binary => {
                let f = Box::new(Fragmented {
                    opcode: frame.opcode,
                    data: Vec::with_capacity(if frame.compressed { 0 } else { payload.len() }),
                    compressed: frame.compressed,
                });
                self.continue_message(f, &payload, frame.fin, now);
            }
            OpCode::Continuation => {
                if let Some(f) = self.active.as_deref_mut().and_then(|a| a.fragmented.take()) {
                    self.continue_message(f, &payload, frame.fin, now);
                }
            }
        }
    }

    /// Adds one frame's payload to a message (inflating it when
    /// compressed), and delivers the message after its last frame.
    fn continue_message(
        &mut self,
        mut f: Box<Fragmented>,
        payload: &[u8],
        fin: bool,
        now: Instant,
    ) {
        if f.compressed {
            let limit = self.config.max_message_size;
            let Some(deflate) = self.deflate.as_mut().map(|d| &mut d.codec) else {
                return;
            };
            let before = f.data.len();
            let mut r = deflate.decompress(payload, &mut f.data, limit);
            if r.is_ok() && fin {
                r = deflate.finish_message(&mut f.data, limit);
            }
            match r {
                Ok(()) => {}
                Err(InflateError::TooBig) => {
                    return self.fail_protocol(ProtocolError::MessageTooBig { limit }, now);
                }
                Err(InflateError::Invalid(why)) => {
                    return self.fail_protocol(ProtocolError::Compression(why.to_owned()), now);
                }
            }
            if f.opcode == OpCode::Text && self.utf8.feed(&f.data[before..]).is_err() {
                return self.fail_protocol(ProtocolError::InvalidUtf8, now);
            }
        } else {
            f.data.extend_from_slice(payload);
        }
        if fin {
            let Fragmented { opcode, data, .. } = *f;
            self.deliver(opcode, Bytes::from(data), now);
        } else {
            active!(self).fragmented = Some(f);
        }
    }

    fn deliver(&mut self, opcode: OpCode, payload: Bytes, now: Instant) {
        let message = if opcode == OpCode::Text {
            if self.utf8.finish().is_err() {
                self.fail_protocol(ProtocolError::InvalidUtf8, now);
                return;
            }
            Message::Text(Utf8Bytes::from_validated(payload))
        } else {
            Message::Binary(payload)
        };
        self.push_event(Pending::Event(Event::Message(message)));
    }

    fn on_close_frame(&mut self, payload: &[u8], now: Instant) {
        let frame = match payload.len() {
            0 => CloseFrame::new(CloseCode::NO_STATUS, ""),
            1 => return self.fail_protocol(ProtocolError::CloseFrameTooShort, now),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !CloseCode::is_valid_on_wire(code) {
                    return self.fail_protocol(ProtocolError::InvalidCloseCode(code), now);
                }
                let Ok(reason) = std::str::from_utf8(&payload[2..]) else {
                    return self.fail_protocol(ProtocolError::InvalidCloseReason, now);
                };
                let Ok(code) = CloseCode::new(code) else {
                    return self.fail_protocol(ProtocolError::InvalidCloseCode(code), now);
                };
                CloseFrame::new(code, reason)
            }
        };
        self.reading = false;
        self.peer_close_pending = true;
        self.stop_keepalive();
        self.push_event(Pending::PeerClose(frame, now));
    }

    /// The application has taken every message before the peer's Close:
    /// reply (unless this end already sent a Close) and finish or wait.
    fn on_peer_close(&mut self, frame: CloseFrame, now: Instant) {
        self.peer_close_pending = false;
        let has_code = frame.code != CloseCode::NO_STATUS;
        let echo = frame.code;
        let closing = self.closing_mut();
        closing.received = Some(frame);
        closing.close_deadline = None;
        if self.closing().is_none_or(|c| c.sent.is_none()) && !self.eof {
            if has_code {
                self.write_close(CloseFrame::new(echo, ""));
            } else {
                self.encode_frame(OpCode::Close, &[], true);
                self.closing_mut().sent = Some(CloseFrame::new(CloseCode::NO_STATUS, ""));
            }
        }
        self.handshake_done(TerminationKind::Clean, now);
    }

    /// The closing handshake is over (or this end failed the connection):
    /// a server closes TCP now, a client waits for the server to do so.
    fn handshake_done(&mut self, kind: TerminationKind, now: Instant) {
        if self.role == Role::Server || self.eof {
            self.finish(kind);
        } else {
            self.closing_mut().awaiting_eof = Some(kind);
            self.closing_mut().close_deadline = None;
            self.closing_mut().eof_deadline = Some(now + self.config.close_timeout);
        }
    }

    /// A violation found while parsing: stop reading now, fail once the
    /// application has taken the messages that arrived before it (so an
    /// echo server still answers them, as Autobahn's strict cases expect).
    fn fail_protocol(&mut self, error: ProtocolError, now: Instant) {
        let frame = CloseFrame::new(error.close_code(), truncate_reason(&error.to_string()));
        self.closing_mut().error = Some(error);
        self.reading = false;
        self.drop_input();
        self.peer_close_pending = true;
        self.stop_keepalive();
        self.push_event(Pending::Fail(frame, now));
    }

    fn fail_with(&mut self, frame: CloseFrame, now: Instant) {
        if self.finished || self.awaiting_eof().is_some() {
            return;
        }
        self.reading = false;
        self.drop_input();
        if self.closing().is_none_or(|c| c.sent.is_none()) && !self.eof {
            self.write_close(frame);
        }
        self.handshake_done(TerminationKind::Failed, now);
    }

    /// Fails the connection from the application's side: sends a Close
    /// with `code` (unless one was sent) and ends the connection without
    /// waiting for the peer's reply (a client still waits, up to the close
    /// timeout, for the server's TCP close). Reported as
    /// [`TerminationKind::Failed`].
    pub fn fail(&mut self, code: CloseCode, reason: &str, now: Instant) {
        let code = if code.is_sendable() {
            code
        } else {
            CloseCode::INTERNAL_ERROR
        };
        self.fail_with(CloseFrame::new(code, truncate_reason(reason)), now);
    }

    fn finish(&mut self, kind: TerminationKind) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.reading = false;
        self.drop_input();
        self.stop_keepalive();
        if let Some(c) = self.closing.as_mut() {
            c.close_deadline = None;
            c.eof_deadline = None;
        }
        let termination = Box::new(Termination {
            kind,
            received: self.closing().and_then(|c| c.received.clone()),
            sent: self.closing().and_then(|c| c.sent.clone()),
            error: self.closing().and_then(|c| c.error.clone()),
        });
        self.push_event(Pending::Event(Event::Closed(termination)));
    }

    // --------------------------------------------------------------- output

    /// Queues a text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_data(OpCode::Text, text.as_bytes())
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_data(OpCode::Binary, data)
    }

    /// Queues a message.
    pub fn send(&mut self, message: &Message) -> Result<(), SendError> {
        match message {
            Message::Text(t) => self.send_data(OpCode::Text, t.as_bytes()),
            Message::Binary(b) => self.send_data(OpCode::Binary, b),
        }
    }

    /// The header of the frame [`Connection::send`] would queue for
    /// `message`, when that frame is the message's bytes as they are: this
    /// end is a server (no mask), sending is allowed, and the message goes
    /// out uncompressed. Written into `head`; returns its length, or `None`
    /// when `send` must be used. An I/O layer can then write the header and
    /// the message's own bytes (a vectored write) instead of having `send`
    /// copy a large payload into the output; the bytes on the wire are the
    /// same. Only valid while [`Connection::output`] is empty (else the
    /// frame would overtake queued bytes).
    pub fn direct_frame_header(
        &self,
        message: &Message,
        head: &mut [u8; MAX_HEADER_LEN],
    ) -> Option<usize> {
        let (opcode, len) = match message {
            Message::Text(t) => (OpCode::Text, t.len()),
            Message::Binary(b) => (OpCode::Binary, b.len()),
        };
        if self.role != Role::Server || !self.can_send() || self.output_len() != 0 {
            return None;
        }
        if self
            .deflate
            .as_ref()
            .is_some_and(|d| d.codec.should_compress(len))
        {
            return None;
        }
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: opcode.as_u8(),
            mask: None,
            payload_len: len as u64,
        };
        Some(encode_header(&header, head))
    }

    /// Queues a data frame encoded once for many connections with
    /// [`crate::frame::encode_server_frame`]: fan-out serializes and frames
    /// a message once and every subscriber's connection copies the same
    /// bytes. Servers only (clients must mask each frame themselves); the
    /// frame goes out uncompressed, which permessage-deflate allows.
    pub fn send_encoded(&mut self, frame: &[u8]) -> Result<(), SendError> {
        if self.role == Role::Client {
            return Err(SendError::MaskRequired);
        }
        if !self.can_send() {
            return Err(self.closed_error());
        }
        self.reserve_output(frame.len()).extend_from_slice(frame);
        Ok(())
    }

    /// Makes room for `extra` more output bytes. The buffer starts at
    /// [`OUTPUT_INITIAL`]: replies to a burst of small messages follow,
    /// and one allocation beats growing by doubling from a few bytes.
    fn reserve_output(&mut self, extra: usize) -> &mut BytesMut {
        let out = &mut active!(self).out;
        if out.capacity() == 0 {
            out.reserve(extra.max(OUTPUT_INITIAL));
        } else {
            out.reserve(extra);
        }
        out
    }

    /// Bytes queued for the transport and not yet written.
    pub fn output_len(&self) -> usize {
        self.active.as_deref().map_or(0, |a| a.out.len())
    }

    /// Queues one frame of a fragmented message: `opcode` is `Text` or
    /// `Binary` for the first frame and `Continuation` after it; `fin` marks
    /// the last. The caller keeps the sequence and the UTF-8 of text valid.
    pub fn send_frame(&mut self, opcode: OpCode, data: &[u8], fin: bool) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(self.closed_error());
        }
        if opcode.is_control() {
            if data.len() > 125 {
                return Err(SendError::ControlFrameTooBig(data.len()));
            }
            if opcode == OpCode::Close {
                return Err(SendError::Closing);
            }
        }
        self.encode_frame(opcode, data, fin);
        Ok(())
    }

    fn send_data(&mut self, opcode: OpCode, data: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(self.closed_error());
        }
        match self.deflate.as_mut() {
            Some(deflate) if deflate.codec.should_compress(data.len()) => {
                let mut scratch = std::mem::take(&mut deflate.scratch);
                scratch.clear();
                deflate.codec.compress(data, &mut scratch);
                self.encode(opcode, &scratch, true, 0b100);
                if scratch.capacity() > 4 * 1024 {
                    scratch = Vec::new();
                }
                if let Some(deflate) = self.deflate.as_mut() {
                    deflate.scratch = scratch;
                }
            }
            _ => self.encode_frame(opcode, data, true),
        }
        Ok(())
    }

    fn closed_error(&self) -> SendError {
        if self.finished {
            SendError::Closed
        } else {
            SendError::Closing
        }
    }

    /// Queues a Ping (payload at most 125 bytes).
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Queues an unsolicited Pong (payload at most 125 bytes).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if payload.len() > 125 {
            return Err(SendError::ControlFrameTooBig(payload.len()));
        }
        if !self.can_send() {
            return Err(self.closed_error());
        }
        self.encode_frame(opcode, payload, true);
        Ok(())
    }

    /// Starts the closing handshake: queues a Close frame after everything
    /// already queued, and arms the close timeout. Does nothing if a Close
    /// was already sent.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Result<(), SendError> {
        if self.finished {
            return Err(SendError::Closed);
        }
        if self.closing().is_some_and(|c| c.sent.is_some()) || self.awaiting_eof().is_some() {
            return Ok(());
        }
        if !code.is_sendable() {
            return Err(SendError::UnsendableCode(code));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SendError::ReasonTooLong(reason.len()));
        }
        self.write_close(CloseFrame::new(code, reason));
        if !self.peer_close_pending {
            self.closing_mut().close_deadline = Some(now + self.config.close_timeout);
        }
        Ok(())
    }

    fn write_close(&mut self, frame: CloseFrame) {
        let mut payload = Vec::with_capacity(2 + frame.reason.len());
        frame.encode(&mut payload);
        self.encode_frame(OpCode::Close, &payload, true);
        self.closing_mut().sent = Some(frame);
        self.stop_keepalive();
    }

    fn encode_frame(&mut self, opcode: OpCode, payload: &[u8], fin: bool) {
        self.encode(opcode, payload, fin, 0);
    }

    fn encode(&mut self, opcode: OpCode, payload: &[u8], fin: bool, rsv: u8) {
        let mask = match self.role {
            Role::Client => Some(rand::random::<[u8; 4]>()),
            Role::Server => None,
        };
        let header = FrameHeader {
            fin,
            rsv,
            opcode: opcode.as_u8(),
            mask,
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&header, &mut head);
        let out = self.reserve_output(n + payload.len());
        out.extend_from_slice(&head[..n]);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key, 0);
        }
    }

    /// Bytes to write to the transport, in order.
    pub fn output(&self) -> &[u8] {
        self.active.as_deref().map_or(&[], |a| &a.out[..])
    }

    /// Marks the first `n` bytes of [`Connection::output`] as written.
    pub fn consume_output(&mut self, n: usize) {
        let Some(a) = self.active.as_deref_mut() else {
            return;
        };
        a.out.advance(n.min(a.out.len()));
        if a.out.len() < PONG_DEFER_OUTPUT {
            if let Some(payload) = a.deferred_pong.take() {
                if self.can_send() {
                    self.encode_frame(OpCode::Pong, &payload, true);
                }
            }
        }
        if let Some(a) = self.active.as_deref_mut() {
            if a.out.is_empty() {
                // An idle connection holds no write buffer.
                a.out = BytesMut::new();
            }
        }
        self.release_if_idle();
    }

    /// Takes all pending output at once.
    pub fn take_output(&mut self) -> Bytes {
        let Some(a) = self.active.as_deref_mut() else {
            return Bytes::new();
        };
        let taken = a.out.split().freeze();
        if let Some(payload) = a.deferred_pong.take() {
            if self.can_send() {
                self.encode_frame(OpCode::Pong, &payload, true);
            }
        }
        self.release_if_idle();
        taken
    }

    /// Whether the transport should be closed once [`Connection::output`]
    /// is written: the connection is over.
    pub fn wants_transport_close(&self) -> bool {
        self.finished
    }

    // --------------------------------------------------------------- timers

    /// When [`Connection::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        [
            self.keepalive,
            self.closing().and_then(|c| c.close_deadline),
            self.closing().and_then(|c| c.eof_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Acts on every timer due at `now`: sends keepalive Pings, fails a
    /// peer that did not answer one (1011), gives up on a closing handshake
    /// or a server that does not close TCP.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        if self
            .closing()
            .and_then(|c| c.eof_deadline)
            .is_some_and(|d| now >= d)
        {
            let kind = self.awaiting_eof().unwrap_or(TerminationKind::Clean);
            self.finish(kind);
            return;
        }
        if self
            .closing()
            .and_then(|c| c.close_deadline)
            .is_some_and(|d| now >= d)
        {
            self.finish(TerminationKind::CloseTimeout);
            return;
        }
        if self.pong_deadline().is_some_and(|d| now >= d) {
            if self.closing().is_none_or(|c| c.sent.is_none()) {
                self.write_close(CloseFrame::new(
                    CloseCode::INTERNAL_ERROR,
                    "keepalive ping timeout",
                ));
            }
            self.finish(TerminationKind::KeepaliveTimeout);
            return;
        }
        if self.next_ping().is_some_and(|t| now >= t) {
            if self.can_send() && !self.peer_close_pending {
                self.ping_count = self.ping_count.wrapping_add(1);
                let payload = self.ping_payload();
                self.encode_frame(OpCode::Ping, &payload, true);
                match self.config.ping_timeout {
                    Some(timeout) => {
                        self.keepalive = Some(now + timeout);
                        self.awaiting_pong = true;
                    }
                    None => self.keepalive = self.config.ping_interval.map(|i| now + i),
                }
            } else {
                self.stop_keepalive();
            }
        }
    }
}

/// Cuts a reason to at most 123 bytes on a character boundary.
fn truncate_reason(reason: &str) -> String {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use std::mem::size_of;

    /// An open connection's core, pinned (docs/performance.md, "Idle
    /// memory"): the configuration is shared, and the buffers, a partial
    /// frame, a fragmented message, the events (the `Active` part),
    /// deflate and closing state are boxed, allocated only while there is
    /// one.
    #[test]
    fn connection_size() {
        eprintln!(
            "Connection {} Active {}",
            size_of::<Connection>(),
            size_of::<Active>()
        );
        assert!(size_of::<Connection>() <= 64, "{}", size_of::<Connection>());
        assert_eq!(size_of::<EventQueue>(), 8 + size_of::<Option<Pending>>());
        assert!(size_of::<Utf8Validator>() <= 5);
    }
}

#[cfg(test)]
mod active_part_tests {
    //! The active part (buffers, frame under way, events) exists only
    //! while something is under way, and freeing it between turns changes
    //! nothing the application sees.
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= 125);
        let key = [9, 8, 7, 6];
        let mut f = vec![
            opcode | if fin { 0x80 } else { 0 },
            0x80 | payload.len() as u8,
        ];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// Echoes every message; returns what was echoed.
    fn echo_turn(c: &mut Connection, data: &[u8], now: Instant) -> Vec<Event> {
        c.receive_data(data, now);
        let mut seen = Vec::new();
        while let Some(e) = c.poll_event() {
            if let Event::Message(m) = &e {
                c.send(m).unwrap();
            }
            seen.push(e);
        }
        let n = c.output().len();
        c.consume_output(n);
        seen
    }

    #[test]
    fn an_echo_turn_frees_the_active_part() {
        let now = Instant::now();
        let mut c = Connection::new(Role::Server, Config::default(), now);
        assert!(c.active.is_none());
        for i in 0..5u8 {
            let seen = echo_turn(&mut c, &masked(0x2, true, &[i; 16]), now);
            assert_eq!(seen, [Event::Message(Message::binary(vec![i; 16]))]);
            assert!(c.active.is_none(), "turn {i}");
        }
        // A burst of several messages in one read.
        let mut burst = Vec::new();
        for i in 0..40u8 {
            burst.extend(masked(0x1, true, &[b'a' + i % 26; 3]));
        }
        assert_eq!(echo_turn(&mut c, &burst, now).len(), 40);
        assert!(c.active.is_none());
    }

    /// Output the transport has not taken keeps the active part; so do a
    /// partial frame and a fragmented message, until they complete.
    #[test]
    fn what_is_under_way_keeps_the_active_part() {
        let now = Instant::now();
        let mut c = Connection::new(Role::Server, Config::default(), now);
        c.send_text("hello").unwrap();
        c.consume_output(3);
        assert!(c.active.is_some());
        assert_eq!(c.output(), b"ello");
        c.consume_output(4);
        assert!(c.active.is_none());

        let frame = masked(0x1, true, b"split me");
        c.receive_data(&frame[..5], now);
        assert_eq!(c.poll_event(), None);
        assert!(c.active.is_some());
        c.receive_data(&frame[5..], now);
        assert_eq!(
            c.poll_event(),
            Some(Event::Message(Message::text("split me")))
        );
        assert_eq!(c.poll_event(), None);
        assert!(c.active.is_none());

        c.receive_data(&masked(0x1, false, b"frag"), now);
        assert_eq!(c.poll_event(), None);
        assert!(c.active.is_some());
        c.receive_data(&masked(0x0, true, b"ment"), now);
        assert_eq!(
            c.poll_event(),
            Some(Event::Message(Message::text("fragment")))
        );
        assert_eq!(c.poll_event(), None);
        assert!(c.active.is_none());
    }

    /// A keepalive Ping goes out from an idle connection and its Pong
    /// comes back: the active part lives only while each is under way.
    #[test]
    fn keepalive_on_an_idle_connection_frees_the_active_part() {
        let start = Instant::now();
        let config = Config {
            ping_interval: Some(Duration::from_secs(1)),
            ping_timeout: Some(Duration::from_secs(1)),
            ..Config::default()
        };
        let mut c = Connection::new(Role::Server, config, start);
        let at = start + Duration::from_secs(1);
        assert_eq!(c.poll_timeout(), Some(at));
        c.handle_timeout(at);
        assert_eq!(c.output(), [0x89, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        c.consume_output(10);
        assert!(c.active.is_none());
        let pong = masked(0xA, true, &1u64.to_be_bytes());
        let seen = echo_turn(&mut c, &pong, at);
        assert_eq!(
            seen,
            [Event::Pong(Bytes::from(1u64.to_be_bytes().to_vec()))]
        );
        assert!(c.active.is_none());
        assert_eq!(c.poll_timeout(), Some(at + Duration::from_secs(1)));
    }

    /// Reading straight into the read buffer (the tokio path for a large
    /// frame's rest) frees the active part once the frame is taken.
    #[test]
    fn reading_into_the_read_buffer_frees_the_active_part() {
        let now = Instant::now();
        let mut c = Connection::new(Role::Server, Config::default(), now);
        let frame = masked(0x2, true, &[5; 100]);
        c.receive_data(&frame[..10], now);
        assert_eq!(c.frame_bytes_wanted(), 96);
        c.read_buffer().extend_from_slice(&frame[10..]);
        c.process(now);
        assert_eq!(
            c.poll_event(),
            Some(Event::Message(Message::binary(vec![5; 100])))
        );
        assert_eq!(c.poll_event(), None);
        assert!(c.active.is_none());
    }
}

#[cfg(test)]
mod event_queue_tests {
    use super::*;

    fn ping(n: u8) -> Pending {
        Pending::Event(Event::Ping(Bytes::from(vec![n])))
    }

    fn n(p: Option<Pending>) -> Option<u8> {
        match p? {
            Pending::Event(Event::Ping(b)) => Some(b[0]),
            _ => None,
        }
    }

    /// The inline slot and the deque together behave as one FIFO (checked
    /// against a plain VecDeque), and a drained queue holds no heap memory.
    #[test]
    fn event_queue_is_fifo_and_frees_when_drained() {
        let mut q = EventQueue::default();
        let mut model = VecDeque::new();
        let mut next = 0u8;
        // Interleavings of pushes and pops: 1 push 1 pop, bursts, partial drains.
        for step in [1, 1, 3, 2, 5, 1, 4, 4, 2, 7, 7, 1] {
            for _ in 0..step {
                q.push(ping(next));
                model.push_back(next);
                next = next.wrapping_add(1);
            }
            for _ in 0..(step + 1) / 2 {
                assert_eq!(n(q.pop()), model.pop_front());
            }
        }
        while let Some(want) = model.pop_front() {
            assert_eq!(n(q.pop()), Some(want));
        }
        assert!(q.pop().is_none());
        assert!(q.is_empty());
        assert!(q.rest.is_none());
    }
}

#[cfg(test)]
mod direct_io_tests {
    use super::*;

    fn server() -> Connection {
        Connection::new(Role::Server, Config::default(), Instant::now())
    }

    /// The direct path's header followed by the message's own bytes is
    /// exactly what `send` queues.
    #[test]
    fn direct_frame_header_plus_payload_equals_send_output() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            for message in [
                Message::Binary(Bytes::from(vec![7u8; len])),
                Message::text("x".repeat(len)),
            ] {
                let direct = server();
                let mut head = [0u8; MAX_HEADER_LEN];
                let n = direct
                    .direct_frame_header(&message, &mut head)
                    .expect("a server sends uncompressed frames directly");
                let mut wire = head[..n].to_vec();
                wire.extend_from_slice(match &message {
                    Message::Binary(b) => b,
                    Message::Text(t) => t.as_bytes(),
                });
                let mut simple = server();
                simple.send(&message).unwrap();
                assert_eq!(wire, simple.output(), "len {len}");
            }
        }
    }

    #[test]
    fn no_direct_header_when_send_must_be_used() {
        let message = Message::Binary(Bytes::from(vec![1u8; 100_000]));
        let mut head = [0u8; MAX_HEADER_LEN];
        // A client masks every frame.
        let client = Connection::new(Role::Client, Config::default(), Instant::now());
        assert_eq!(client.direct_frame_header(&message, &mut head), None);
        // Queued output must go first.
        let mut queued = server();
        queued.send(&Message::text("first")).unwrap();
        assert_eq!(queued.direct_frame_header(&message, &mut head), None);
        // Closing: no more data frames.
        let mut closing = server();
        closing
            .close(CloseCode::NORMAL, "", Instant::now())
            .unwrap();
        assert_eq!(closing.direct_frame_header(&message, &mut head), None);
        // A message permessage-deflate would compress.
        let mut deflating = server();
        let (params, _answer) = crate::deflate::negotiate_server(
            &[crate::handshake::ExtensionOffer::new("permessage-deflate")],
            &DeflateConfig::server_default(),
        )
        .expect("offer accepted");
        deflating.enable_deflate(&params, &DeflateConfig::server_default());
        assert_eq!(deflating.direct_frame_header(&message, &mut head), None);
        // One under the compression threshold goes out as it is.
        let small = Message::Binary(Bytes::from_static(b"hi"));
        assert!(deflating.direct_frame_header(&small, &mut head).is_some());
    }

    /// Reading the rest of a large frame straight into the read buffer
    /// gives the same message as `receive_data`.
    #[test]
    fn reading_a_frame_rest_into_the_read_buffer_matches_receive_data() {
        let binary: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        read_rest_directly(Role::Server, 0x82, binary.clone());
        read_rest_directly(Role::Server, 0x81, "é".repeat(50_000).into_bytes());
        read_rest_directly(Role::Client, 0x82, binary);
        read_rest_directly(Role::Client, 0x81, "é".repeat(50_000).into_bytes());
    }

    fn read_rest_directly(role: Role, first_byte: u8, payload: Vec<u8>) {
        let key = [9, 8, 7, 6];
        let masked = role == Role::Server;
        let mut frame = vec![first_byte, if masked { 0xFF } else { 0x7F }];
        frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        if masked {
            frame.extend_from_slice(&key);
        }
        let start = frame.len();
        frame.extend_from_slice(&payload);
        if masked {
            crate::frame::apply_mask(&mut frame[start..], key, 0);
        }
        let server = || Connection::new(role, Config::default(), Instant::now());

        let now = Instant::now();
        let mut direct = server();
        direct.receive_data(&frame[..5_000], now);
        assert_eq!(direct.frame_bytes_wanted(), frame.len() - 5_000);
        let mut at = 5_000;
        while direct.frame_bytes_wanted() > 0 {
            let take = direct.frame_bytes_wanted().min(30_000);
            direct
                .read_buffer()
                .extend_from_slice(&frame[at..at + take]);
            at += take;
            direct.process(now);
        }
        assert_eq!(at, frame.len());
        let mut simple = server();
        simple.receive_data(&frame, now);
        let got = direct.poll_event();
        assert_eq!(got, simple.poll_event());
        let want = if first_byte == 0x81 {
            Message::Text(Utf8Bytes::try_from(payload).expect("UTF-8"))
        } else {
            Message::Binary(Bytes::from(payload))
        };
        assert_eq!(got, Some(Event::Message(want)));
        assert_eq!(direct.frame_bytes_wanted(), 0);
    }
}

#[cfg(test)]
mod deferred_pong_tests {
    use super::*;

    fn ping(n: u8) -> Vec<u8> {
        // A masked Ping from a client with a 1-byte payload.
        let key = [1, 2, 3, 4];
        vec![0x89, 0x81, key[0], key[1], key[2], key[3], n ^ key[0]]
    }

    /// A peer that pings while our output is backed up gets one Pong, for
    /// its latest Ping, once the output drains: Pings cannot grow the
    /// output without bound.
    #[test]
    fn pings_while_output_is_backed_up_get_one_pong_for_the_latest() {
        let now = Instant::now();
        let mut c = Connection::new(Role::Server, Config::default(), now);
        c.send(&Message::Binary(Bytes::from(vec![0u8; 100_000])))
            .unwrap();
        let backed_up = c.output_len();
        for n in 0..100 {
            c.receive_data(&ping(n), now);
        }
        assert_eq!(c.output_len(), backed_up, "no Pong queued while backed up");
        c.consume_output(backed_up);
        assert_eq!(c.output(), &[0x8A, 0x01, 99], "one Pong, latest payload");
        // Not backed up: every Ping is answered at once, as before.
        c.consume_output(3);
        c.receive_data(&ping(7), now);
        c.receive_data(&ping(8), now);
        assert_eq!(c.output(), &[0x8A, 0x01, 7, 0x8A, 0x01, 8]);
    }
}
