//! The life of a connection around the sans-IO core, with no I/O and no
//! clock: what every runtime (the tokio [`crate::WebSocket`], the
//! [`crate::reactor`]) pumps bytes and time through.
//!
//! Owns, for the server side, reading the request head (bounded in size
//! and time, 400/431 for a bad one), the decision on a complete request
//! (RFC 6455 §4.2 checks, the Origin policy, the application's answer,
//! subprotocol choice, permessage-deflate) and the 101 or the refusal; and,
//! for both roles once open, the transport timers around the core's own:
//! the write stall, the idle timeout and the finish deadline. It does not
//! own sockets, wakers, task spawning or the accept loop's admission (see
//! [`crate::Gate`]).
//!
//! # The driving order
//!
//! Every runtime follows it; `now` is the runtime's clock, passed in.
//!
//! 1. **Head.** Make a [`RequestHead`] at accept. Feed what the socket
//!    gives to [`RequestHead::receive`] until it says
//!    [`HeadProgress::Complete`] (go on) or [`HeadProgress::Refuse`] (write
//!    the response, close). Drop the connection at
//!    [`RequestHead::deadline`] (the handshake timeout).
//! 2. **Decision.** [`answer_request`] gives the 101 and the core, or a
//!    refusal to write before closing. Write the 101 first; bytes read past
//!    the head go to the core.
//! 3. **Open.** Wrap the core in a [`Driver`]. Each turn, in this order:
//!    take the core's events ([`Driver::poll_event`]) and answer them;
//!    write [`Driver::output`] and report it ([`Driver::wrote`] with what
//!    the socket took, [`Driver::write_blocked`] when it took nothing,
//!    [`Driver::fail_transport`] on an error); read only while
//!    [`Driver::wants_read`] and the output is below the runtime's
//!    high-water mark, handing bytes to [`Driver::receive`] or
//!    [`Driver::receive_eof`]; then arm one timer at
//!    [`Driver::poll_timeout`] and call [`Driver::handle_timeout`] when it
//!    is due.
//! 4. **Closing.** Once [`Driver::wants_transport_close`], write what is
//!    left until [`Driver::finish_deadline`], then close the socket. The
//!    last event was [`Event::Closed`].
//! 5. **Shutdown.** A server that stops closes every open connection with
//!    [`SHUTDOWN_CLOSE`] and waits [`shutdown_grace`] for their closing
//!    handshakes before dropping what is left.
// The reactor pumps the whole of the driver; the tokio pump a part of it
// (its own timers hold the deadlines). Without the `reactor` feature the
// rest is unused but stays: it is the one driver both pumps document.
#![cfg_attr(not(feature = "reactor"), allow(dead_code))]

use std::time::{Duration, Instant};

use wsline_proto::deflate::negotiate_server;
use wsline_proto::handshake::{
    check_origin, parse_request, select_subprotocol, validate_extended_connect, validate_request,
    HandshakeError, Request, Response,
};
use wsline_proto::{CloseCode, Connection, Event, Role};

use crate::{Acceptance, ServerConfig};

/// How a stopping server closes each open connection: 1001 (Going Away,
/// RFC 6455 §7.4.1) with this reason.
pub const SHUTDOWN_CLOSE: (CloseCode, &str) = (CloseCode::GOING_AWAY, "server shutting down");

/// How long a stopping server waits for its connections' closing
/// handshakes (each bounded by `close_timeout`), with a second's margin;
/// what is still open then is dropped.
pub fn shutdown_grace(close_timeout: Duration) -> Duration {
    close_timeout + Duration::from_secs(1)
}

/// A request head on its way in.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// A head that arrived in pieces (empty while it comes in one read).
    head: Vec<u8>,
    deadline: Instant,
    max_head: usize,
}

/// What a read brought to a [`RequestHead`].
#[derive(Debug)]
pub(crate) enum HeadProgress {
    /// The request, and the bytes that came after its head.
    Complete(Request, Vec<u8>),
    /// More is needed.
    Partial,
    /// Answer the error's response (400, 431) and close.
    Refuse(HandshakeError),
}

impl RequestHead {
    /// A connection accepted at `now`.
    pub(crate) fn new(config: &ServerConfig, now: Instant) -> Self {
        Self {
            head: Vec::new(),
            deadline: now + config.handshake_timeout,
            max_head: config.max_head_size,
        }
    }

    /// The handshake timeout: drop the connection then.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Ends the handshake at its next turn (shutdown).
    pub(crate) fn expire(&mut self, now: Instant) {
        self.deadline = now;
    }

    /// Takes `data`, the next bytes from the socket. A head that comes in
    /// one read is parsed where it lies, without a copy.
    pub(crate) fn receive(&mut self, data: &[u8]) -> HeadProgress {
        let whole: &[u8] = if self.head.is_empty() {
            data
        } else {
            self.head.extend_from_slice(data);
            &self.head
        };
        match parse_request(whole, self.max_head) {
            Ok(Some((request, used))) => HeadProgress::Complete(request, whole[used..].to_vec()),
            Ok(None) if whole.len() > self.max_head => {
                HeadProgress::Refuse(HandshakeError::HeadTooLarge {
                    limit: self.max_head,
                })
            }
            Ok(None) => {
                if self.head.is_empty() {
                    self.head.extend_from_slice(data);
                }
                HeadProgress::Partial
            }
            Err(e) => HeadProgress::Refuse(e),
        }
    }
}

/// An accepted request: send `response` (101), then speak WebSocket
/// through `conn`.
pub(crate) struct Accepted {
    pub(crate) response: Response,
    pub(crate) conn: Connection,
    pub(crate) protocol: Option<String>,
}

/// A refused request: send `response` and close (the request failed a
/// check, or `decide` refused it with this answer).
pub(crate) struct Refused {
    pub(crate) response: Response,
    pub(crate) error: HandshakeError,
}

/// The server's answer to a complete request, decided without I/O: the
/// RFC checks, the Origin policy, `decide`, subprotocol choice and
/// extension negotiation.
// Decided once per handshake and taken apart at once by the pump: boxing
// either side would only add an allocation.
#[allow(clippy::result_large_err)]
pub(crate) fn answer_request<F>(
    request: &Request,
    config: &ServerConfig,
    decide: F,
    now: Instant,
) -> Result<Accepted, Refused>
where
    F: FnOnce(&Request) -> Result<Acceptance, Response>,
{
    answer_with(request, HandshakeRules::Http1, config, decide, now)
}

/// Which opening handshake a request is checked and answered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandshakeRules<'a> {
    /// RFC 6455 §4.2 over HTTP/1.1: the 101 with Sec-WebSocket-Accept.
    Http1,
    /// RFC 8441 over HTTP/2: an extended CONNECT with this `:protocol`
    /// (None for a request without one), answered with 200 and no key.
    #[cfg_attr(not(all(feature = "hyper", feature = "http2")), allow(dead_code))]
    ExtendedConnect { protocol: Option<&'a str> },
}

/// [`answer_request`] under either handshake's rules: only the
/// transport's own checks and the shape of the answer differ; Origin,
/// `decide`, subprotocol choice and permessage-deflate are the same.
#[allow(clippy::result_large_err)]
pub(crate) fn answer_with<F>(
    request: &Request,
    rules: HandshakeRules<'_>,
    config: &ServerConfig,
    decide: F,
    now: Instant,
) -> Result<Accepted, Refused>
where
    F: FnOnce(&Request) -> Result<Acceptance, Response>,
{
    let checked = match rules {
        HandshakeRules::Http1 => validate_request(request),
        HandshakeRules::ExtendedConnect { protocol } => {
            validate_extended_connect(request, protocol)
        }
    }
    .and_then(|()| check_origin(request, &config.allowed_origins));
    if let Err(error) = checked {
        let response = match rules {
            HandshakeRules::Http1 => Response::from_error(&error),
            HandshakeRules::ExtendedConnect { .. } => Response::reject_extended_connect(&error),
        };
        return Err(Refused { response, error });
    }
    let acceptance = match decide(request) {
        Ok(a) => a,
        Err(response) => {
            let error = HandshakeError::Rejected {
                status: response.status,
                reason: response.reason.clone(),
                headers: response.headers.clone(),
                body: response.body.clone(),
            };
            return Err(Refused { response, error });
        }
    };
    let protocol = match acceptance.protocol {
        Some(p) if request.offers_protocol(&p) => Some(p),
        Some(_) | None => select_subprotocol(request, &config.subprotocols),
    };
    // A malformed extension header only means no extension.
    let deflate = config.deflate.as_ref().and_then(|cfg| {
        let offers = request.extensions().ok()?;
        negotiate_server(&offers, cfg).map(|(params, answer)| (params, answer, cfg))
    });
    let extensions = deflate.as_ref().map(|d| d.1.as_str());
    let response = match rules {
        HandshakeRules::Http1 => Response::accept(
            request,
            protocol.as_deref(),
            extensions,
            &acceptance.headers,
        ),
        HandshakeRules::ExtendedConnect { .. } => {
            Response::accept_extended_connect(protocol.as_deref(), extensions, &acceptance.headers)
        }
    };
    let mut conn = Connection::with_shared_config(Role::Server, config.shared_protocol(), now);
    if let Some((params, _, cfg)) = &deflate {
        conn.enable_deflate(params, cfg);
    }
    Ok(Accepted {
        response,
        conn,
        protocol,
    })
}

/// The transport timeouts of an open connection (the core's own, keepalive
/// and the closing handshake, live in its [`wsline_proto::Config`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// Output waiting and no byte of it taken for this long: the transport
    /// is given up ([`Expired::WriteStall`]).
    pub(crate) write: Option<Duration>,
    /// No message for this long: Close 1001 "idle timeout".
    pub(crate) idle: Option<Duration>,
}

impl Timeouts {
    pub(crate) fn of(config: &ServerConfig) -> Self {
        Self {
            write: config.write_timeout,
            idle: config.idle_timeout,
        }
    }
}

/// What [`Driver::handle_timeout`] found due, besides the core's timers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Expired {
    /// The peer took no output for the write timeout: the transport is
    /// given up (the core reports 1006).
    pub(crate) write_stall: bool,
    /// The last output did not go by the finish deadline: given up too.
    pub(crate) finish: bool,
}

/// An open connection: the core plus the transport timers. Both roles.
#[derive(Debug)]
pub(crate) struct Driver {
    pub(crate) conn: Connection,
    /// The last message's arrival, kept only with an idle timeout.
    last_message: Option<Instant>,
    /// The write stall, the finish deadline and the end's flags:
    /// allocated the first time output stalls or the connection ends, so
    /// an idle connection spends 8 bytes on them, not 40.
    rare: Option<Box<Rare>>,
}

/// What few connections ever need of the transport timers, and the flags
/// of a connection's end.
#[derive(Debug, Default)]
struct Rare {
    /// Output has waited on a full transport since then.
    stalled_since: Option<Instant>,
    /// The connection is over and its last output must be gone by then.
    finish: Option<Instant>,
    /// The transport failed or stalled: nothing more is read or written.
    failed: bool,
    /// It was the write stall.
    write_timed_out: bool,
    /// The runtime told the application how the connection ended (the
    /// reactor's `on_close`).
    end_reported: bool,
}

impl Driver {
    /// Wraps a core that opened at `now`.
    pub(crate) fn new(conn: Connection, timeouts: Timeouts, now: Instant) -> Self {
        Self {
            conn,
            last_message: timeouts.idle.map(|_| now),
            rare: None,
        }
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Whether the runtime already told the application how the
    /// connection ended.
    pub(crate) fn end_reported(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.end_reported)
    }

    /// The runtime told the application how the connection ended.
    pub(crate) fn set_end_reported(&mut self) {
        self.rare_mut().end_reported = true;
    }

    fn stalled_since(&self) -> Option<Instant> {
        self.rare.as_ref().and_then(|r| r.stalled_since)
    }

    fn finish(&self) -> Option<Instant> {
        self.rare.as_ref().and_then(|r| r.finish)
    }

    /// Output went: no stall.
    #[inline]
    fn unstall(&mut self) {
        if let Some(rare) = &mut self.rare {
            rare.stalled_since = None;
        }
    }

    /// The idle timeout changed (at `now`).
    pub(crate) fn set_idle(&mut self, timeouts: Timeouts, now: Instant) {
        self.last_message = timeouts.idle.map(|_| now);
    }

    /// The next event; a message counts as activity for the idle timeout
    /// (`now` is asked for only then, and only with an idle timeout).
    #[inline]
    pub(crate) fn poll_event(&mut self, now: impl FnOnce() -> Instant) -> Option<Event> {
        let event = self.conn.poll_event()?;
        if matches!(event, Event::Message(_)) && self.last_message.is_some() {
            self.last_message = Some(now());
        }
        Some(event)
    }

    /// Bytes to write.
    #[inline]
    pub(crate) fn output(&self) -> &[u8] {
        self.conn.output()
    }

    /// The transport took `n` bytes of [`Driver::output`]: a stall, if
    /// any, is over.
    #[inline]
    pub(crate) fn wrote(&mut self, n: usize) {
        self.conn.consume_output(n);
        self.unstall();
    }

    /// The transport took bytes written around the output (direct writes).
    #[inline]
    pub(crate) fn progressed(&mut self) {
        self.unstall();
    }

    /// The transport would take no byte while output waits: the write
    /// stall's clock starts, if it is not running.
    #[inline]
    pub(crate) fn write_blocked(&mut self, now: Instant) {
        if !self.is_failed() {
            self.rare_mut().stalled_since.get_or_insert(now);
        }
    }

    /// The transport is unusable (an error, a stall, end of its time):
    /// the core ends the connection (1006) and nothing more is written.
    pub(crate) fn fail_transport(&mut self, now: Instant) {
        self.rare_mut().failed = true;
        self.conn.receive_eof(now);
    }

    /// Whether the transport was given up.
    #[inline]
    pub(crate) fn is_failed(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.failed)
    }

    /// Whether that was the write stall.
    pub(crate) fn write_timed_out(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.write_timed_out)
    }

    /// Whether to read: the core wants input and the transport works.
    #[inline]
    pub(crate) fn wants_read(&self) -> bool {
        !self.is_failed() && self.conn.wants_read()
    }

    /// Bytes from the transport.
    #[inline]
    pub(crate) fn receive(&mut self, data: &[u8], now: Instant) {
        self.conn.receive_data(data, now);
    }

    /// The transport's end of stream.
    pub(crate) fn receive_eof(&mut self, now: Instant) {
        self.conn.receive_eof(now);
    }

    /// The connection is over: close the transport once the output is
    /// gone (or the transport failed, or the finish deadline passed).
    #[inline]
    pub(crate) fn wants_transport_close(&self) -> bool {
        self.conn.wants_transport_close()
    }

    /// When the last output must be gone (set at the first call, a close
    /// timeout from `now`).
    pub(crate) fn finish_deadline(&mut self, now: Instant) -> Instant {
        let close_timeout = self.conn.config().close_timeout;
        *self
            .rare
            .get_or_insert_with(Box::default)
            .finish
            .get_or_insert(now + close_timeout)
    }

    /// When the write stall runs out, if output is stalled.
    pub(crate) fn stall_deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        self.stalled_since().zip(timeouts.write).map(|(s, t)| s + t)
    }

    /// Gives the transport up if the write stall ran out by `now`; true
    /// then.
    pub(crate) fn check_stall(&mut self, now: Instant, timeouts: Timeouts) -> bool {
        if self.is_failed() || self.stall_deadline(timeouts).is_none_or(|d| d > now) {
            return false;
        }
        self.rare_mut().write_timed_out = true;
        self.fail_transport(now);
        true
    }

    /// The next deadline other than the write stall's: the core's, the
    /// idle timeout's, the finish deadline.
    pub(crate) fn poll_timeout_except_stall(&self, timeouts: Timeouts) -> Option<Instant> {
        [
            self.conn.poll_timeout(),
            self.last_message.zip(timeouts.idle).map(|(l, t)| l + t),
            self.finish(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next deadline of all.
    pub(crate) fn poll_timeout(&self, timeouts: Timeouts) -> Option<Instant> {
        [
            self.poll_timeout_except_stall(timeouts),
            self.stall_deadline(timeouts),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires whatever is due at `now`: the core's timers (keepalive, the
    /// closing handshake), the idle timeout (Close 1001), the write stall
    /// and the finish deadline (the transport is given up).
    pub(crate) fn handle_timeout(&mut self, now: Instant, timeouts: Timeouts) -> Expired {
        let mut expired = Expired::default();
        if self.conn.poll_timeout().is_some_and(|d| d <= now) {
            self.conn.handle_timeout(now);
        }
        expired.write_stall = self.check_stall(now, timeouts);
        if let (Some(last), Some(limit)) = (self.last_message, timeouts.idle) {
            if now >= last + limit {
                self.last_message = None;
                let _ = self.conn.close(CloseCode::GOING_AWAY, "idle timeout", now);
            }
        }
        if self.finish().is_some_and(|d| now >= d) && !self.is_failed() {
            expired.finish = true;
            self.fail_transport(now);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsline_proto::Config;

    fn server(now: Instant) -> Connection {
        let mut config = Config::default();
        config.ping_interval = None;
        Connection::new(Role::Server, config, now)
    }

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn a_head_in_one_piece_or_many_is_the_same_request() {
        let config = ServerConfig::default();
        let now = Instant::now();
        let mut whole = RequestHead::new(&config, now);
        let HeadProgress::Complete(a, rest) = whole.receive(&[REQUEST, b"\x81"].concat()) else {
            panic!("complete in one read")
        };
        assert_eq!(rest, b"\x81");
        let mut pieces = RequestHead::new(&config, now);
        let mut got = None;
        for chunk in REQUEST.chunks(7) {
            match pieces.receive(chunk) {
                HeadProgress::Partial => {}
                HeadProgress::Complete(r, rest) => {
                    assert!(rest.is_empty());
                    got = Some(r);
                }
                HeadProgress::Refuse(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.expect("complete").path(), a.path());
        assert_eq!(pieces.deadline(), now + config.handshake_timeout);
    }

    #[test]
    fn a_head_past_the_limit_or_malformed_is_refused() {
        let config = ServerConfig {
            max_head_size: 64,
            ..ServerConfig::default()
        };
        let mut head = RequestHead::new(&config, Instant::now());
        assert!(matches!(head.receive(&[b'a'; 40]), HeadProgress::Partial));
        assert!(matches!(
            head.receive(&[b'a'; 40]),
            HeadProgress::Refuse(HandshakeError::HeadTooLarge { limit: 64 })
        ));
        let mut head = RequestHead::new(&ServerConfig::default(), Instant::now());
        assert!(matches!(
            head.receive(b"\x00\x01 nonsense\r\n\r\n"),
            HeadProgress::Refuse(_)
        ));
    }

    #[test]
    fn the_write_stall_runs_from_the_first_blocked_write_and_resets_on_progress() {
        let t0 = Instant::now();
        let timeouts = Timeouts {
            write: Some(Duration::from_secs(30)),
            idle: None,
        };
        let mut d = Driver::new(server(t0), timeouts, t0);
        assert_eq!(d.poll_timeout(timeouts), None);
        d.write_blocked(t0);
        d.write_blocked(t0 + Duration::from_secs(10));
        assert_eq!(
            d.stall_deadline(timeouts),
            Some(t0 + Duration::from_secs(30))
        );
        d.progressed();
        assert_eq!(d.poll_timeout(timeouts), None);
        d.write_blocked(t0 + Duration::from_secs(20));
        let due = t0 + Duration::from_secs(50);
        assert_eq!(d.poll_timeout(timeouts), Some(due));
        assert_eq!(
            d.handle_timeout(due - Duration::from_millis(1), timeouts),
            Expired::default()
        );
        let expired = d.handle_timeout(due, timeouts);
        assert!(expired.write_stall && d.is_failed() && d.write_timed_out());
        assert!(!d.wants_read());
        match d.poll_event(|| unreachable!("no idle timeout")) {
            Some(Event::Closed(t)) => assert_eq!(t.code(), CloseCode::ABNORMAL),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_idle_timeout_counts_messages_only_and_closes_with_1001() {
        let t0 = Instant::now();
        let timeouts = Timeouts {
            write: None,
            idle: Some(Duration::from_secs(5)),
        };
        let mut d = Driver::new(server(t0), timeouts, t0);
        assert_eq!(d.poll_timeout(timeouts), Some(t0 + Duration::from_secs(5)));
        // A masked text frame "hi" at t0 + 3 s moves the deadline.
        let t3 = t0 + Duration::from_secs(3);
        d.receive(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i'], t3);
        assert!(matches!(d.poll_event(|| t3), Some(Event::Message(_))));
        assert_eq!(d.poll_timeout(timeouts), Some(t3 + Duration::from_secs(5)));
        // A Ping does not.
        d.receive(&[0x89, 0x80, 0, 0, 0, 0], t0 + Duration::from_secs(4));
        assert!(matches!(
            d.poll_event(|| unreachable!()),
            Some(Event::Ping(_))
        ));
        let due = t3 + Duration::from_secs(5);
        assert_eq!(d.poll_timeout(timeouts), Some(due));
        d.handle_timeout(due, timeouts);
        let out = d.output().to_vec();
        let close = [&[0x88u8, 14, 0x03, 0xe9][..], b"idle timeout"].concat();
        assert!(out.ends_with(&close), "{out:?}");
    }

    #[test]
    fn the_finish_deadline_is_set_once_and_gives_the_transport_up() {
        let t0 = Instant::now();
        let timeouts = Timeouts::default();
        let mut d = Driver::new(server(t0), timeouts, t0);
        let _ = d.conn.close(CloseCode::NORMAL, "", t0);
        let deadline = d.finish_deadline(t0);
        assert_eq!(d.finish_deadline(t0 + Duration::from_secs(1)), deadline);
        assert!(d.poll_timeout(timeouts).is_some_and(|t| t <= deadline));
        let expired = d.handle_timeout(deadline, timeouts);
        assert!(expired.finish && d.is_failed() && !d.write_timed_out());
    }
}
