//! `frame_server` / `frame_client`: a [`Connection`] fed arbitrary bytes
//! as received data, in chunks, then end of stream.
//!
//! Input layout: 4 control bytes, then the bytes "received":
//! - byte 0, flags: bit 0 drain events after every chunk (as the runtime
//!   does) instead of only at the end; bit 1 append chunks to
//!   [`Connection::read_buffer`] and call [`Connection::process`] instead of
//!   [`Connection::receive_data`]; bit 2 the application starts the closing
//!   handshake (1000) after the first chunk; bit 3 permessage-deflate is on
//!   ([`DEFLATE_PARAMS`]); bit 4 an hour passes (`handle_timeout`) before
//!   the end of stream.
//! - bytes 1..4: chunk sizes, used in turn: 0 = everything left, 1..=127 =
//!   that many bytes, 128..=255 = (b - 127) * 64 bytes.
//!
//! Invariants, besides no panic:
//! - after every chunk, [`Connection::buffered_input`] ≤ header (14) +
//!   max frame + max message + the chunk;
//! - every message ≤ max message size, text is valid UTF-8, Ping and Pong
//!   payloads ≤ 125 bytes;
//! - after end of stream: exactly one `Closed`, the last event; the state is
//!   `Closed` with no timer left;
//! - the termination is `Clean` (with the peer's Close), `Abnormal`,
//!   `Failed` (with the protocol error, and the Close sent carrying that
//!   error's code; see [`check_termination`] for the one case where nothing
//!   could be sent) or, only after our own Close and an hour, `CloseTimeout`;
//! - the output is a well-formed frame sequence for the role (see
//!   [`decode_output`]), its Close matches `Termination::sent`, a reply to
//!   the peer's Close echoes its code, and every Pong echoes a Ping received,
//!   in order;
//! - unless the application closed: the messages, pings, pongs and the way
//!   the connection ended do not depend on the chunking, the input path or
//!   when events are taken, nor on an hour passing (compared against one
//!   `receive_data` of the whole input).

use std::time::{Duration, Instant};

use wsline_proto::frame::MAX_HEADER_LEN;
use wsline_proto::{
    CloseCode, Config, Connection, DeflateConfig, DeflateParams, Event, Message, Role, State,
    Termination, TerminationKind,
};

use crate::wire::{decode_output, drain, CLOSE, PING, PONG};

/// The frame size limit of the harness.
pub const MAX_FRAME: usize = 4096;
/// The message size limit of the harness.
pub const MAX_MESSAGE: usize = 8192;
/// Control bytes before the data.
pub const CONTROL_LEN: usize = 4;

/// Flag: take events after every chunk.
pub const DRAIN_EACH: u8 = 1;
/// Flag: use `read_buffer` + `process`.
pub const READ_BUFFER: u8 = 2;
/// Flag: the application calls `close(1000)` after the first chunk.
pub const APP_CLOSE: u8 = 4;
/// Flag: permessage-deflate is on (15-bit windows, context takeover).
pub const DEFLATE: u8 = 8;
/// Flag: an hour passes (`handle_timeout`) before the end of stream.
pub const TIMEOUT: u8 = 16;

/// The permessage-deflate parameters of the `DEFLATE` flag.
pub const DEFLATE_PARAMS: DeflateParams = DeflateParams {
    server_max_window_bits: 15,
    client_max_window_bits: 15,
    server_no_context_takeover: false,
    client_no_context_takeover: false,
};

/// The connection configuration of the harness.
pub fn config() -> Config {
    let mut c = Config::default();
    c.max_frame_size = MAX_FRAME;
    c.max_message_size = MAX_MESSAGE;
    c.ping_interval = None;
    c.ping_timeout = None;
    c
}

fn chunk_size(b: u8) -> usize {
    match b {
        0 => usize::MAX,
        1..=127 => usize::from(b),
        _ => (usize::from(b) - 127) * 64,
    }
}

/// What one run produced.
struct Run {
    events: Vec<Event>,
    output: Vec<u8>,
    /// The transport ended while a failure or the peer's Close still waited
    /// in the event queue (possible only when events are not taken after
    /// every chunk).
    eof_before_drain: bool,
}

fn drive(role: Role, wire: &[u8], flags: u8, sizes: &[u8]) -> Run {
    let now = Instant::now();
    let mut conn = Connection::new(role, config(), now);
    if flags & DEFLATE != 0 {
        let deflate = match role {
            Role::Server => DeflateConfig::server_default(),
            Role::Client => DeflateConfig::client_default(),
        };
        conn.enable_deflate(&DEFLATE_PARAMS, &deflate);
    }
    let mut events = Vec::new();
    let mut output = Vec::new();
    let mut rest = wire;
    let mut i = 0;
    while !rest.is_empty() {
        let n = chunk_size(sizes[i % sizes.len()]).min(rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if flags & READ_BUFFER != 0 {
            conn.read_buffer().extend_from_slice(chunk);
            conn.process(now);
        } else {
            conn.receive_data(chunk, now);
        }
        let bound = MAX_HEADER_LEN + MAX_FRAME + MAX_MESSAGE + n;
        assert!(
            conn.buffered_input() <= bound,
            "buffered_input {} > {bound} after a {n}-byte chunk",
            conn.buffered_input()
        );
        if flags & DRAIN_EACH != 0 {
            drain(&mut conn, &mut events);
        }
        if flags & APP_CLOSE != 0 && i == 1 {
            let _ = conn.close(CloseCode::NORMAL, "bye", now);
        }
        output.extend_from_slice(&conn.take_output());
    }
    let mut end = now;
    if flags & TIMEOUT != 0 {
        end = now + Duration::from_secs(3600);
        conn.handle_timeout(end);
        drain(&mut conn, &mut events);
        output.extend_from_slice(&conn.take_output());
    }
    let eof_before_drain = conn.has_events();
    conn.receive_eof(end);
    drain(&mut conn, &mut events);
    output.extend_from_slice(&conn.take_output());
    assert_eq!(conn.poll_event(), None, "an event after Closed");
    assert_eq!(
        conn.state(),
        State::Closed,
        "not Closed after end of stream"
    );
    assert!(conn.wants_transport_close());
    assert!(!conn.wants_read());
    assert_eq!(conn.poll_timeout(), None, "a timer left after Closed");
    assert_eq!(conn.buffered_input(), 0, "input kept after Closed");
    Run {
        events,
        output,
        eof_before_drain,
    }
}

/// Runs one input through a `role` connection and checks every invariant.
pub fn run(role: Role, data: &[u8]) {
    if data.len() < CONTROL_LEN {
        return;
    }
    let (ctl, wire) = data.split_at(CONTROL_LEN);
    let flags = ctl[0];
    let run = drive(role, wire, flags, &ctl[1..]);
    let termination = check_events(&run.events);
    check_termination(&termination, run.eof_before_drain, flags & APP_CLOSE != 0);
    check_output(role, &run, &termination, flags & APP_CLOSE != 0);
    let same_as_reference =
        flags & (DRAIN_EACH | READ_BUFFER | TIMEOUT) == DRAIN_EACH && ctl[1] == 0;
    if flags & APP_CLOSE == 0 && !same_as_reference {
        // The reference: everything in one receive_data call, events
        // taken before the end of stream.
        let reference = drive(role, wire, DRAIN_EACH | (flags & DEFLATE), &[0]);
        let reference_termination = check_events(&reference.events);
        let data_events = |r: &Run| -> Vec<Event> {
            r.events
                .iter()
                .filter(|e| !matches!(e, Event::Closed(_)))
                .cloned()
                .collect()
        };
        assert_eq!(
            data_events(&run),
            data_events(&reference),
            "events depend on chunking/input path (flags {flags:#x}, sizes {:?})",
            &ctl[1..]
        );
        assert_eq!(termination.kind, reference_termination.kind);
        assert_eq!(termination.received, reference_termination.received);
        assert_eq!(termination.error, reference_termination.error);
        if !run.eof_before_drain {
            assert_eq!(termination.sent, reference_termination.sent);
        }
    }
}

/// Checks the event sequence and returns the termination.
fn check_events(events: &[Event]) -> Termination {
    let closed = events
        .iter()
        .filter(|e| matches!(e, Event::Closed(_)))
        .count();
    assert_eq!(closed, 1, "exactly one Closed event: {events:?}");
    let Some(Event::Closed(t)) = events.last() else {
        panic!("the last event is not Closed: {:?}", events.last());
    };
    for e in events {
        match e {
            Event::Message(m) => {
                assert!(m.len() <= MAX_MESSAGE, "message of {} bytes", m.len());
                if let Message::Text(t) = m {
                    assert!(
                        std::str::from_utf8(t.as_bytes()).is_ok(),
                        "text message is not UTF-8"
                    );
                }
            }
            Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
            Event::Closed(_) => {}
        }
    }
    (**t).clone()
}

/// The termination is consistent with itself.
///
/// A `Failed` termination carries the Close this end sent, whose code is
/// the protocol error's. The one exception: the transport ended while the
/// failure still waited in the event queue (the application had not taken
/// the events before it), so no Close could be sent; then `sent` is `None`
/// and `code()` reports 1006. When the application had closed first,
/// `sent` is its Close.
fn check_termination(t: &Termination, eof_before_drain: bool, app_closed: bool) {
    match t.kind {
        TerminationKind::Clean => {
            assert!(
                t.received.is_some(),
                "Clean without the peer's Close: {t:?}"
            );
            assert!(t.error.is_none(), "Clean with an error: {t:?}");
            if !eof_before_drain {
                assert!(t.sent.is_some(), "Clean without our Close: {t:?}");
            }
        }
        TerminationKind::Abnormal => {
            assert!(
                t.received.is_none(),
                "Abnormal after the peer's Close: {t:?}"
            );
            assert!(t.error.is_none(), "Abnormal with an error: {t:?}");
            assert_eq!(t.code(), CloseCode::ABNORMAL);
        }
        TerminationKind::Failed => {
            // The application never calls fail(): only the peer fails it.
            let error = t.error.as_ref().expect("Failed without the peer's error");
            match &t.sent {
                Some(sent) if app_closed && sent.code == CloseCode::NORMAL => {
                    // The application's Close went first: nothing more is sent.
                    assert_eq!(sent.reason, "bye");
                }
                Some(sent) => {
                    assert_eq!(sent.code, error.close_code(), "{t:?}");
                    assert_eq!(t.code(), error.close_code());
                }
                None => {
                    assert!(
                        eof_before_drain,
                        "Failed without a Close sent, though the transport was open: {t:?}"
                    );
                    assert_eq!(t.code(), CloseCode::ABNORMAL);
                }
            }
        }
        TerminationKind::CloseTimeout => {
            // Only our own closing handshake can time out (no keepalive).
            assert!(app_closed, "a close timeout without our Close: {t:?}");
            assert!(t.received.is_none(), "{t:?}");
            assert_eq!(t.sent.as_ref().map(|s| s.code), Some(CloseCode::NORMAL));
        }
        TerminationKind::KeepaliveTimeout => panic!("a keepalive timeout without keepalive: {t:?}"),
    }
}

fn check_output(role: Role, run: &Run, t: &Termination, app_closed: bool) {
    let frames = decode_output(role, &run.output);
    let close = frames.iter().find(|f| f.opcode == CLOSE);
    match (&t.sent, close) {
        (None, None) => {}
        (Some(sent), Some(f)) => {
            if sent.code == CloseCode::NO_STATUS {
                assert!(f.payload.is_empty(), "1005 is sent as an empty Close");
            } else {
                assert_eq!(&f.payload[..2], &sent.code.as_u16().to_be_bytes());
                assert_eq!(&f.payload[2..], sent.reason.as_bytes());
            }
        }
        (sent, close) => panic!("Termination::sent {sent:?} but the wire has {close:?}"),
    }
    // Our Close replied to the peer's: the same code (1005 = empty).
    if let (Some(received), Some(sent), false) = (&t.received, &t.sent, app_closed) {
        if t.kind == TerminationKind::Clean {
            assert_eq!(received.code, sent.code, "the Close reply echoes the code");
        }
    }
    // Pongs answer Pings, in order, with the same payload.
    let pings = run.events.iter().filter_map(|e| match e {
        Event::Ping(p) => Some(&p[..]),
        _ => None,
    });
    let mut pings = pings.peekable();
    for pong in frames.iter().filter(|f| f.opcode == PONG) {
        loop {
            match pings.next() {
                Some(p) if p == &pong.payload[..] => break,
                Some(_) => {}
                None => panic!("a Pong that answers no Ping: {:?}", pong.payload),
            }
        }
    }
    assert!(
        !frames.iter().any(|f| f.opcode == PING),
        "a Ping without keepalive"
    );
}
