//! `inflate`: a server [`Connection`] with permessage-deflate on, fed
//! compressed messages whose payload is the fuzz input.
//!
//! Input layout: 3 control bytes, then the compressed payload:
//! - byte 0, flags: bit 0 text (else binary); bit 1 the client's window is
//!   9 bits (else 15); bit 2 `client_no_context_takeover`; bit 3 feed the
//!   frames 1000 bytes at a time (else all at once); bit 4 the payload is
//!   plain data that miniz_oxide compresses first, at level 0/1/6/9 (bits
//!   6-7), bit 5 with sync flushes as a permessage-deflate peer does (else
//!   as whole streams ending in a final block);
//! - byte 1: fragment size, 0 = one frame per message, else that many
//!   payload bytes per frame;
//! - byte 2: 0 = one compressed message, else the payload is cut into two
//!   messages at `len * b / 256` (the second inflates with the first's
//!   context unless bit 2).
//!
//! Each message is sent masked, RSV1 on its first frame; then an
//! uncompressed text message `end`, then end of stream.
//!
//! Invariants, besides no panic (and libFuzzer's RSS and malloc limits,
//! which catch a compression bomb inflated past the limit):
//! - `buffered_input` ≤ header + the largest frame + the message limit
//!   (64 KiB) after every chunk;
//! - every message ≤ 64 KiB; text is valid UTF-8; `Closed` is last;
//! - the first message, when delivered and decodable by an independent
//!   inflater (miniz_oxide), is exactly what that inflater makes of its
//!   payload and the `00 00 ff ff` tail (the two disagree only on what is
//!   invalid: zlib refuses incomplete code sets that miniz_oxide accepts,
//!   and waits for more input where miniz_oxide already refuses);
//! - unless the connection failed, the closing `end` message arrives
//!   (compressed messages leave the connection usable);
//! - data compressed by miniz_oxide (bit 4, 15-bit window) arrives intact,
//!   every message, in either framing; only text that is not UTF-8 fails
//!   (1007).

use std::time::Instant;

use miniz_oxide::deflate::core::{create_comp_flags_from_zip_params, CompressorOxide};
use miniz_oxide::deflate::{compress_to_vec, stream::deflate};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::MZFlush;
use wsline_proto::frame::MAX_HEADER_LEN;
use wsline_proto::{
    Config, Connection, DeflateConfig, DeflateParams, Event, Message, Role, TerminationKind,
};

use crate::wire::{drain, frame_to, BINARY, CONT, TEXT};

/// The message size limit of the harness.
pub const LIMIT: usize = 64 * 1024;
/// Control bytes before the payload.
pub const CONTROL_LEN: usize = 3;
/// Flag: text messages.
pub const F_TEXT: u8 = 1;
/// Flag: the client's window is 9 bits.
pub const F_SMALL_WINDOW: u8 = 2;
/// Flag: client_no_context_takeover.
pub const F_NO_TAKEOVER: u8 = 4;
/// Flag: feed 1000 bytes at a time.
pub const F_CHUNKED: u8 = 8;
/// Flag: the payload is plain data, compressed here by miniz_oxide.
pub const F_RECOMPRESS: u8 = 16;
/// Flag (with `F_RECOMPRESS`): one compressor for all messages with sync
/// flushes and the tail stripped, as a permessage-deflate peer does
/// (context takeover unless `F_NO_TAKEOVER`); else each message is a whole
/// deflate stream ending in a final block.
pub const F_SYNC: u8 = 32;

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The frames of one compressed message.
fn message_frames(opcode: u8, payload: &[u8], frag: usize, out: &mut Vec<Vec<u8>>) {
    if frag == 0 || payload.len() <= frag {
        out.push(frame_to(Role::Server, true, 0b100, opcode, payload));
        return;
    }
    let mut parts = payload.chunks(frag).peekable();
    let mut first = true;
    while let Some(part) = parts.next() {
        let fin = parts.peek().is_none();
        let (rsv, op) = if first { (0b100, opcode) } else { (0, CONT) };
        out.push(frame_to(Role::Server, fin, rsv, op, part));
        first = false;
    }
}

/// What an independent inflater makes of one message: `Some(bytes)` when
/// it decodes all of it (to the end of the data or of the deflate
/// stream) within `LIMIT + 1` bytes, `None` when it finds the data invalid
/// or too big.
fn reference_inflate(payload: &[u8]) -> Option<Vec<u8>> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = vec![0u8; LIMIT + 1];
    let mut d = DecompressorOxide::new();
    let (status, _, n) = decompress(
        &mut d,
        &input,
        &mut out,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    match status {
        // The end of the deflate stream (a final block), or the end of the
        // data without one, as permessage-deflate's sync-flushed messages
        // end: either way everything before was decoded.
        TINFLStatus::Done | TINFLStatus::FailedCannotMakeProgress => {
            out.truncate(n);
            Some(out)
        }
        // Invalid, or more than LIMIT + 1 bytes.
        _ => None,
    }
}

/// Compresses `messages` with miniz_oxide at `level`, as a peer would.
fn peer_compress(messages: &[&[u8]], level: u8, sync: bool, takeover: bool) -> Vec<Vec<u8>> {
    let flags = create_comp_flags_from_zip_params(i32::from(level), -15, 0);
    let mut c = CompressorOxide::new(flags);
    messages
        .iter()
        .map(|m| {
            if !sync {
                return compress_to_vec(m, level);
            }
            if !takeover {
                c.reset();
            }
            let mut out = vec![0u8; 64 + m.len() * 2];
            let r = deflate(&mut c, m, &mut out, MZFlush::Sync);
            assert!(r.status.is_ok() && r.bytes_consumed == m.len(), "{r:?}");
            out.truncate(r.bytes_written);
            assert!(out.ends_with(&TAIL), "a sync flush ends with the tail");
            out.truncate(out.len() - TAIL.len());
            out
        })
        .collect()
}

/// The `inflate` target.
pub fn run(data: &[u8]) {
    if data.len() < CONTROL_LEN {
        return;
    }
    let (ctl, payload) = data.split_at(CONTROL_LEN);
    let flags = ctl[0];
    let text = flags & F_TEXT != 0;
    let opcode = if text { TEXT } else { BINARY };
    let params = DeflateParams {
        server_max_window_bits: 15,
        client_max_window_bits: if flags & F_SMALL_WINDOW != 0 { 9 } else { 15 },
        server_no_context_takeover: false,
        client_no_context_takeover: flags & F_NO_TAKEOVER != 0,
    };
    let messages: Vec<&[u8]> = match ctl[2] {
        0 => vec![payload],
        b => {
            let cut = payload.len() * usize::from(b) / 256;
            vec![&payload[..cut], &payload[cut..]]
        }
    };
    let recompress = flags & F_RECOMPRESS != 0;
    let peer = if recompress {
        let level = [0, 1, 6, 9][usize::from(flags >> 6)];
        peer_compress(
            &messages,
            level,
            flags & F_SYNC != 0,
            !params.client_no_context_takeover,
        )
    } else {
        Vec::new()
    };
    let mut frames = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let wire_payload = if recompress { &peer[i][..] } else { m };
        message_frames(opcode, wire_payload, usize::from(ctl[1]), &mut frames);
    }
    frames.push(frame_to(Role::Server, true, 0, TEXT, b"end"));
    let largest = frames.iter().map(Vec::len).max().unwrap_or(0);
    let wire: Vec<u8> = frames.concat();

    let now = Instant::now();
    let mut config = Config::default();
    config.max_message_size = LIMIT;
    config.ping_interval = None;
    let mut conn = Connection::new(Role::Server, config, now);
    conn.enable_deflate(&params, &DeflateConfig::server_default());
    let chunk = if flags & F_CHUNKED != 0 {
        1000
    } else {
        wire.len().max(1)
    };
    let mut events = Vec::new();
    for part in wire.chunks(chunk) {
        conn.receive_data(part, now);
        let bound = MAX_HEADER_LEN + largest + LIMIT;
        assert!(
            conn.buffered_input() <= bound,
            "buffered_input {} > {bound}",
            conn.buffered_input()
        );
        drain(&mut conn, &mut events);
    }
    conn.receive_eof(now);
    drain(&mut conn, &mut events);

    let Some(Event::Closed(t)) = events.last() else {
        panic!("the last event is not Closed: {events:?}");
    };
    let delivered: Vec<&Message> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    for m in &delivered {
        assert!(m.len() <= LIMIT, "a {}-byte message", m.len());
        if let Message::Text(t) = m {
            assert!(std::str::from_utf8(t.as_bytes()).is_ok());
        }
    }
    if t.kind != TerminationKind::Failed {
        assert_eq!(t.kind, TerminationKind::Abnormal);
        assert_eq!(delivered.len(), messages.len() + 1, "{t:?}");
        assert_eq!(delivered.last().map(|m| m.payload()), Some(&b"end"[..]));
    }

    if recompress {
        if params.client_max_window_bits != 15 {
            // miniz_oxide's 32 KiB window may reach past the 9 bits agreed.
            return;
        }
        // Valid data from another compressor: every message arrives as it
        // was, up to the first text that is not UTF-8 (which fails 1007).
        let valid = messages
            .iter()
            .take_while(|m| !text || std::str::from_utf8(m).is_ok())
            .count();
        let got: Vec<&[u8]> = delivered.iter().map(|m| m.payload()).collect();
        assert_eq!(
            &got[..valid.min(got.len())],
            &messages[..valid.min(got.len())]
        );
        if valid == messages.len() {
            assert_eq!(got.len(), messages.len() + 1, "{t:?}");
        } else {
            assert_eq!(got.len(), valid, "{t:?}");
            assert_eq!(t.sent.as_ref().map(|s| s.code.as_u16()), Some(1007));
        }
        return;
    }

    // A failure stops all delivery: a first message delivered is the first
    // compressed one.
    let first = delivered.first();
    let reference = reference_inflate(messages[0]);
    match (first, &reference) {
        (Some(m), Some(want)) => assert!(
            m.payload() == &want[..],
            "inflated differently: {} bytes, miniz_oxide {} bytes",
            m.len(),
            want.len()
        ),
        // zlib accepts what miniz_oxide already refuses when the data ends
        // inside a block header it is still reading (e.g. an empty
        // code-length code): it waits for more input, and the message ends
        // there with what was inflated so far.
        (Some(_), None) => {}
        // zlib also refuses what miniz_oxide accepts: incomplete Huffman
        // code sets ("invalid distances set"). That valid data is delivered
        // is checked with F_RECOMPRESS instead.
        (None, _) => {}
    }
}
