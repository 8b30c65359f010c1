//! Shared helpers for the protocol tests: frame builders, a client/server
//! pair driven over an in-memory "wire", and assertions.
#![allow(dead_code)]

use std::time::{Duration, Instant};
use wsline_proto::frame::{apply_mask, encode_header, FrameHeader, MAX_HEADER_LEN};
use wsline_proto::{CloseCode, Config, Connection, Event, Role, TerminationKind};

pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A raw frame as the peer of `role` would send it: masked when the peer
/// is a client (i.e. `to` is the server).
pub fn frame_to(to: Role, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = (to == Role::Server).then_some(KEY);
    raw_frame(fin, rsv, opcode, mask, payload)
}

pub fn raw_frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&h, &mut head);
    let mut out = head[..n].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        apply_mask(&mut out[start..], k, 0);
    }
    out
}

pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

pub fn conn(role: Role) -> (Connection, Instant) {
    let now = Instant::now();
    let mut config = Config::default();
    config.ping_interval = None;
    (Connection::new(role, config, now), now)
}

pub fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Decodes the frames a connection wrote (unmasking client frames).
pub fn sent_frames(c: &mut Connection) -> Vec<(u8, bool, Vec<u8>)> {
    let mut out = c.take_output().to_vec();
    let mut frames = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let (h, n) = wsline_proto::frame::parse_header(&out[at..])
            .unwrap()
            .expect("complete header");
        let start = at + n;
        let end = start + h.payload_len as usize;
        if let Some(k) = h.mask {
            apply_mask(&mut out[start..end], k, 0);
        }
        assert_eq!(
            h.mask.is_some(),
            c.role() == Role::Client,
            "masking by role"
        );
        frames.push((h.opcode, h.fin, out[start..end].to_vec()));
        at = end;
    }
    frames
}

/// Asserts the connection was failed with `code`: a Close with that code
/// was written and (for a server at once) the connection ended as Failed.
pub fn assert_failing(c: &mut Connection, code: CloseCode) {
    let mut evs = events(c);
    let frames = sent_frames(c);
    let close = frames
        .iter()
        .find(|f| f.0 == 0x8)
        .unwrap_or_else(|| panic!("no close frame sent; frames: {frames:?}"));
    assert_eq!(u16::from_be_bytes([close.2[0], close.2[1]]), code.as_u16());
    if c.role() == Role::Client {
        // A client waits for the server's TCP close.
        assert!(!c.wants_transport_close());
        c.receive_eof(Instant::now());
        evs.extend(events(c));
    }
    match evs.last() {
        Some(Event::Closed(t)) => {
            assert_eq!(t.kind, TerminationKind::Failed);
            assert_eq!(t.code(), code);
        }
        other => panic!("expected Closed, got {other:?} in {evs:?}"),
    }
    assert!(c.wants_transport_close());
}

/// Moves bytes both ways until neither side has output, optionally taking
/// events as an application would.
pub fn drive(a: &mut Connection, b: &mut Connection, now: Instant) -> (Vec<Event>, Vec<Event>) {
    let mut ea = Vec::new();
    let mut eb = Vec::new();
    for _ in 0..100 {
        let oa = a.take_output();
        let ob = b.take_output();
        if oa.is_empty() && ob.is_empty() {
            ea.extend(events(a));
            eb.extend(events(b));
            if a.output().is_empty() && b.output().is_empty() {
                break;
            }
            continue;
        }
        b.receive_data(&oa, now);
        a.receive_data(&ob, now);
        ea.extend(events(a));
        eb.extend(events(b));
    }
    (ea, eb)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
